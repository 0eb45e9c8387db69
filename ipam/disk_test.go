package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func open(t testing.TB, dir, subnet string) *Disk {
	t.Helper()
	s, err := Open(dir, "br0", netip.MustParsePrefix(subnet))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func alloc(t testing.TB, s Store, id string) netip.Addr {
	t.Helper()
	var l Lease
	err := s.Do(func(tx Tx) (err error) {
		l, err = tx.Allocate(Lease{ID: id})
		return err
	})
	if err != nil {
		t.Fatalf("allocate %s: %v", id, err)
	}
	return l.IP
}

func release(t testing.TB, s Store, id string) bool {
	t.Helper()
	var ok bool
	err := s.Do(func(tx Tx) (err error) {
		_, ok, err = tx.Release(id)
		return err
	})
	if err != nil {
		t.Fatalf("release %s: %v", id, err)
	}
	return ok
}

// both runs test against the store on disk and the one in memory: they
// keep the same rules.
func both(t *testing.T, subnet string, test func(t *testing.T, s Store)) {
	t.Run("disk", func(t *testing.T) { test(t, open(t, t.TempDir(), subnet)) })
	t.Run("memory", func(t *testing.T) {
		m, err := NewMemory("br0", netip.MustParsePrefix(subnet))
		if err != nil {
			t.Fatal(err)
		}
		test(t, m)
	})
}

func TestAllocateOrderSkipsReservedAndWraps(t *testing.T) {
	// .0 network, .1 gateway, .7 broadcast
	both(t, "10.1.0.0/29", testAllocateOrder)
}

func testAllocateOrder(t *testing.T, s Store) {
	var got []string
	for i := range 5 {
		got = append(got, alloc(t, s, fmt.Sprint("c", i)).String())
	}
	want := "10.1.0.2 10.1.0.3 10.1.0.4 10.1.0.5 10.1.0.6"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	err := s.Do(func(tx Tx) error { _, err := tx.Allocate(Lease{ID: "c5"}); return err })
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.1.0.0/29: 5 of 5 addresses leased") {
		t.Fatalf("full subnet: got %v", err)
	}
	// Round-robin: a freed address is not handed out again while others
	// are free.
	release(t, s, "c1") // 10.1.0.3
	release(t, s, "c3") // 10.1.0.5
	if ip := alloc(t, s, "d0"); ip.String() != "10.1.0.3" {
		t.Errorf("after wrap got %s, want 10.1.0.3 (first free after the last handed out, .6)", ip)
	}
	if ip := alloc(t, s, "d1"); ip.String() != "10.1.0.5" {
		t.Errorf("got %s, want 10.1.0.5", ip)
	}
}

func TestReleasedAddressNotReusedAtOnce(t *testing.T) {
	both(t, "10.1.0.0/24", testReleasedNotReused)
}

func testReleasedNotReused(t *testing.T, s Store) {
	a := alloc(t, s, "a")
	release(t, s, "a")
	if b := alloc(t, s, "b"); b == a {
		t.Errorf("released %s was handed out again at once", a)
	}
}

func TestLookupReleaseAndUnknownIDs(t *testing.T) {
	both(t, "10.1.0.0/24", testLookupRelease)
}

func testLookupRelease(t *testing.T, s Store) {
	ip := alloc(t, s, "web")
	err := s.Do(func(tx Tx) error {
		l, ok, err := tx.Lookup("web")
		if err != nil || !ok || l.IP != ip || l.ID != "web" || l.Created.IsZero() {
			return fmt.Errorf("lookup web = %+v, %v, %v", l, ok, err)
		}
		if _, ok, _ := tx.Lookup("other"); ok {
			return errors.New("lookup of an unknown id found a lease")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !release(t, s, "web") {
		t.Error("release of a held lease found nothing")
	}
	if release(t, s, "web") {
		t.Error("second release found a lease")
	}
	if release(t, s, "never") {
		t.Error("release of an unknown id found a lease")
	}
	err = s.Do(func(tx Tx) error {
		ls, bad, err := tx.List()
		if err != nil || len(ls)+len(bad) != 0 {
			return fmt.Errorf("after release: leases %v, bad %v, %v", ls, bad, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStaticAddress(t *testing.T) {
	both(t, "10.1.0.0/24", testStatic)
}

func testStatic(t *testing.T, s Store) {
	want := netip.MustParseAddr("10.1.0.77")
	err := s.Do(func(tx Tx) error {
		l, err := tx.Allocate(Lease{ID: "a", IP: want})
		if err != nil || l.IP != want {
			return fmt.Errorf("static: %v, %v", l.IP, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]struct {
		err error
		msg string
	}{
		"10.1.0.77": {ErrTaken, "leased"}, "10.1.0.0": {ErrUnusable, "network address"}, "10.1.0.1": {ErrUnusable, "gateway"},
		"10.1.0.255": {ErrUnusable, "broadcast"}, "10.2.0.5": {ErrUnusable, "outside"},
	} {
		err := s.Do(func(tx Tx) error { _, err := tx.Allocate(Lease{ID: "b", IP: netip.MustParseAddr(ip)}); return err })
		if !errors.Is(err, want.err) || !strings.Contains(err.Error(), want.msg) {
			t.Errorf("allocate %s: %v, want %v saying %q", ip, err, want.err, want.msg)
		}
	}
}

func TestStaleIndexDoesNotFindAnotherContainersLease(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, "10.1.0.0/30") // one usable address: .2
	alloc(t, s, "old")
	// A crash between removing a lease and its index leaves the index.
	err := s.Do(func(tx Tx) error {
		if err := os.Remove(tx.(*diskTx).leasePath(netip.MustParseAddr("10.1.0.2"))); err != nil {
			return err
		}
		_, err := tx.Allocate(Lease{ID: "new"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if release(t, s, "old") {
		t.Fatal("release of the stale id freed the new container's lease")
	}
	err = s.Do(func(tx Tx) error {
		l, ok, err := tx.Lookup("new")
		if !ok || err != nil || l.IP.String() != "10.1.0.2" {
			return fmt.Errorf("new lost its lease: %+v %v %v", l, ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCorruptLeaseNamedAndNeverReused(t *testing.T) {
	s := open(t, t.TempDir(), "10.1.0.0/29")
	alloc(t, s, "a") // .2
	path := filepath.Join(s.Dir(), "leases", "10.1.0.2")
	if err := os.WriteFile(path, []byte("garbage\x00"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := s.Do(func(tx Tx) error { _, _, err := tx.Lookup("a"); return err })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Errorf("lookup of a corrupt lease: %v", err)
	}
	for i := range 4 {
		if ip := alloc(t, s, fmt.Sprint("b", i)); ip.String() == "10.1.0.2" {
			t.Fatal("the address of an unreadable lease was handed out")
		}
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := open(t, dir, "10.1.0.0/24")
	alloc(t, s, "a")
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if fi.Mode()&os.ModeSymlink != 0 {
			return nil // a symlink's mode means nothing; its directory's does
		}
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			return fmt.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func TestOpenRejectsBadSubnets(t *testing.T) {
	for _, p := range []string{"10.0.0.0/31", "10.0.0.1/24", "fd00::/127"} {
		if _, err := Open(t.TempDir(), "br0", netip.MustParsePrefix(p)); err == nil {
			t.Errorf("Open(%s) accepted it", p)
		}
	}
}

func TestConcurrentGoroutinesGetDistinctAddresses(t *testing.T) {
	dir := t.TempDir()
	const n = 50
	ips := make([]netip.Addr, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Each goroutine opens the store as a separate hook would.
			ips[i] = alloc(t, open(t, dir, "10.1.0.0/24"), fmt.Sprint("c", i))
		})
	}
	wg.Wait()
	checkDistinct(t, ips)
}

// TestConcurrentProcessesGetDistinctAddresses races real processes, as
// hooks started at once by the runtime are: flock locks are per open file,
// and only separate processes prove the lock file is shared right.
func TestConcurrentProcessesGetDistinctAddresses(t *testing.T) {
	dir := t.TempDir()
	const n = 24
	cmds := make([]*exec.Cmd, n)
	outs := make([]strings.Builder, n)
	for i := range n {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestHelperAllocate$")
		cmds[i].Env = append(os.Environ(), "IPAM_HELPER_DIR="+dir, "IPAM_HELPER_ID="+strconv.Itoa(i))
		cmds[i].Stdout = &outs[i]
		cmds[i].Stderr = os.Stderr
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	var ips []netip.Addr
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper %d: %v", i, err)
		}
		for _, line := range strings.Fields(outs[i].String()) {
			if ip, err := netip.ParseAddr(line); err == nil {
				ips = append(ips, ip)
			}
		}
	}
	if len(ips) != n*5 {
		t.Fatalf("got %d addresses from %d helpers, want %d", len(ips), n, n*5)
	}
	checkDistinct(t, ips)
}

func TestHelperAllocate(t *testing.T) {
	dir := os.Getenv("IPAM_HELPER_DIR")
	if dir == "" {
		t.Skip("helper for TestConcurrentProcessesGetDistinctAddresses")
	}
	s := open(t, dir, "10.1.0.0/24")
	for j := range 5 {
		fmt.Println(alloc(t, s, os.Getenv("IPAM_HELPER_ID")+"-"+strconv.Itoa(j)))
	}
}

func checkDistinct(t *testing.T, ips []netip.Addr) {
	t.Helper()
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if !ip.IsValid() || seen[ip] {
			t.Fatalf("address %v handed out twice (or invalid) in %v", ip, ips)
		}
		seen[ip] = true
	}
}

// A drained address is out of use until Settle: its id is released at
// once, but neither the allocator nor a request by address takes it.
func TestDrainedAddressWaitsForSettle(t *testing.T) {
	both(t, "10.1.0.0/29", testDrain) // five usable addresses
}

func testDrain(t *testing.T, s Store) {
	var ips []netip.Addr
	for i := range 5 {
		ips = append(ips, alloc(t, s, fmt.Sprint("c", i)))
	}
	var drained Lease
	err := s.Do(func(tx Tx) error {
		l, ok, err := tx.Lookup("c2")
		if err != nil || !ok {
			return fmt.Errorf("lookup c2: %v %v", ok, err)
		}
		drained = l
		return tx.Drain(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Do(func(tx Tx) error {
		if _, ok, _ := tx.Lookup("c2"); ok {
			t.Error("a drained lease is still found by its id")
		}
		if ls, _, _ := tx.List(); len(ls) != 4 {
			t.Errorf("List has %d leases, want the 4 not drained", len(ls))
		}
		if d, _ := tx.Draining(); len(d) != 1 || d[0].ID != "c2" || d[0].IP != ips[2] {
			t.Errorf("Draining = %+v, want c2's lease", d)
		}
		if _, err := tx.Allocate(Lease{ID: "new"}); !errors.Is(err, ErrExhausted) {
			t.Errorf("allocate while the only free address drains: %v, want ErrExhausted", err)
		}
		if _, err := tx.Allocate(Lease{ID: "static", IP: ips[2]}); !errors.Is(err, ErrTaken) {
			t.Errorf("a drained address was leased by request: %v", err)
		}
		return tx.Settle(drained)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := alloc(t, s, "new"); got != ips[2] {
		t.Fatalf("after Settle, allocated %s, want %s", got, ips[2])
	}
	s.Do(func(tx Tx) error {
		if d, _ := tx.Draining(); len(d) != 0 {
			t.Errorf("Draining = %+v after the address was settled", d)
		}
		return nil
	})
}

// Tidy puts back the index entry a lease lacks, so that the
// lease is found by its id again (a store written by a version that named
// entries by another hash has none the current one can find).
func TestPruneIndexRewritesMissingEntries(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, "10.1.0.0/24")
	ip := alloc(t, s, "a")
	entries, _ := filepath.Glob(filepath.Join(s.Dir(), "ids", "*"))
	if len(entries) != 1 {
		t.Fatalf("index entries %v", entries)
	}
	os.Rename(entries[0], filepath.Join(s.Dir(), "ids", "0123456789abcdef"))
	err := s.Do(func(tx Tx) error {
		if _, ok, _ := tx.Lookup("a"); ok {
			t.Fatal("lease found with its index entry misnamed")
		}
		report, err := tx.Tidy()
		if len(report) != 1 || report[0] != "fixed 2 lease index entries" {
			t.Errorf("Tidy said %q, want 2 entries fixed (one removed, one written)", report)
		}
		if l, ok, _ := tx.Lookup("a"); !ok || l.IP != ip {
			t.Errorf("after Tidy, lookup a = %+v, %v", l, ok)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A lease is pending while the process that allocated it holds its store
// open, and no longer once it lets go, releases it, or dies (the kernel
// drops the lock then, as Close does).
func TestPendingUntilTheAllocatorLetsGo(t *testing.T) {
	dir := t.TempDir()
	setup := open(t, dir, "10.1.0.0/24")
	other := open(t, dir, "10.1.0.0/24") // gc, in another process
	pending := func(id string) bool {
		t.Helper()
		var p bool
		err := other.Do(func(tx Tx) error {
			l, ok, err := tx.Lookup(id)
			if !ok || err != nil {
				t.Fatalf("lookup %s: %v %v", id, ok, err)
			}
			p = tx.Pending(l)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	alloc(t, setup, "a")
	if !pending("a") {
		t.Fatal("the lease of a store still open is not pending")
	}
	// A process holds the lease it allocated last: a hook allocates one.
	alloc(t, setup, "b")
	if pending("a") || !pending("b") {
		t.Fatal("want the last lease alone pending")
	}
	release(t, setup, "b")
	alloc(t, setup, "b") // a new lease of b: held again
	if !pending("b") {
		t.Error("a lease allocated again is not pending")
	}
	setup.Close()
	if pending("a") || pending("b") {
		t.Error("leases still pending after Close")
	}
	if len(setup.held) != 0 {
		t.Errorf("%d lease files still open", len(setup.held))
	}
}

// A process that allocates many leases (gc, a benchmark) keeps one file
// open, and none once it has released them.
func TestHeldFilesStayFew(t *testing.T) {
	s := open(t, t.TempDir(), "10.1.0.0/24")
	for i := range 50 {
		alloc(t, s, fmt.Sprint("c", i))
	}
	if len(s.held) != 1 {
		t.Errorf("%d lease files open after 50 allocations, want 1", len(s.held))
	}
	release(t, s, "c49")
	if len(s.held) != 0 {
		t.Errorf("%d lease files open after releasing the last lease", len(s.held))
	}
}

// A store another process removed while this one waited for its lock is
// gone, not worked in: Do says so.
func TestDoOnADestroyedStore(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, "br0", netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Destroy(); err != nil {
		t.Fatal(err)
	}
	if err := s.Do(func(Tx) error { return nil }); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Do on a destroyed store: %v", err)
	}
}

// The stamp is kept beside the record, and goes with it: a new record
// or none clears it.
func TestStampGoesWithTheRecord(t *testing.T) {
	both(t, "10.0.0.0/24", func(t *testing.T, s Store) {
		stamp := func() (st string) {
			s.Do(func(tx Tx) error { st = tx.Stamp(); return nil })
			return st
		}
		set := func() {
			if err := s.Do(func(tx Tx) error { return tx.SetStamp("4000000001 iptables k") }); err != nil {
				t.Fatal(err)
			}
		}
		if st := stamp(); st != "" {
			t.Errorf("a new store's stamp: %q", st)
		}
		if err := s.Do(func(tx Tx) error { return tx.SetRecord(map[string]int{"mtu": 1500}) }); err != nil {
			t.Fatal(err)
		}
		set()
		if st := stamp(); st != "4000000001 iptables k" {
			t.Errorf("stamp %q, want what was set", st)
		}
		if err := s.Do(func(tx Tx) error { return tx.SetRecord(map[string]int{"mtu": 9000}) }); err != nil {
			t.Fatal(err)
		}
		if st := stamp(); st != "" {
			t.Errorf("stamp %q after a new record", st)
		}
		set()
		s.Do(func(tx Tx) error { return tx.ClearRecord() })
		if st := stamp(); st != "" {
			t.Errorf("stamp %q after the record was cleared", st)
		}
	})
}
