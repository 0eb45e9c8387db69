package ipam

// The store on disk: a directory per network under the state directory.
// A lease is a file named for its (first) address, so taking an address is
// one stat and one write whatever the number of leases, and an index file
// named for the container id makes release by id two reads instead of a
// scan. A dual-stack lease's IPv6 address is reserved by a symlink named
// for it in leases6/, so that taking one is a stat too.

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/gofrs/flock"
	"golang.org/x/sys/unix"
)

// Disk is the lease store of one network in a directory of its own.
type Disk struct {
	dir    string
	bridge string
	// ranges[0] names the lease files; ranges[1], if any, is the IPv6
	// range of a dual-stack network.
	ranges []Range
	lock   *flock.Flock

	// held is the lease file this process allocated last and still holds
	// a lock on (see Pending), until Close. A hook allocates one lease;
	// holding only the last keeps a process that allocates many (gc) to
	// one open file.
	held map[netip.Addr]*os.File
}

const (
	dirMode  = 0o700
	fileMode = 0o600
)

// Open prepares the store of the network bridge/subnets under stateDir,
// creating its directories if needed. It takes no lock.
func Open(stateDir, bridge string, subnets ...netip.Prefix) (*Disk, error) {
	rs, err := rangesOf(subnets)
	if err != nil {
		return nil, err
	}
	if err := checkStateDir(stateDir); err != nil {
		return nil, err
	}
	dir := dirOf(stateDir, bridge, subnets)
	subs := []string{dir, filepath.Join(dir, "leases"), filepath.Join(dir, "ids"), filepath.Join(dir, "draining")}
	if len(rs) > 1 {
		subs = append(subs, filepath.Join(dir, "leases6"))
	}
	for i, d := range subs {
		err := os.Mkdir(d, dirMode)
		if err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("lease store in %s: %w", stateDir, err)
		}
		if i == 0 && err == nil {
			markIndexed(dir) // new: no lease to index
		}
	}
	return &Disk{dir: dir, bridge: bridge, ranges: rs, lock: flock.New(filepath.Join(dir, "lock"))}, nil
}

// Exists reports whether stateDir has a store for network bridge/subnets.
func Exists(stateDir, bridge string, subnets ...netip.Prefix) bool {
	_, err := os.Stat(dirOf(stateDir, bridge, subnets))
	return err == nil
}

// checkStateDir creates the state directory, or checks the one there: a
// symlink could point the store anywhere, and a directory others can write
// to lets them forge leases.
func checkStateDir(dir string) error {
	if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symlink", ErrUnsafe, dir)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is not a directory", ErrUnsafe, dir)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%w: %s is writable by group or others (mode %v)", ErrUnsafe, dir, fi.Mode().Perm())
	}
	return nil
}

// dirOf is the directory of the store of network bridge/subnets:
// BRIDGE_ADDR_BITS for one subnet, as stores have always been named, and
// BRIDGE_ADDR4_BITS4_ADDR6_BITS6 for a dual-stack network.
func dirOf(stateDir, bridge string, subnets []netip.Prefix) string {
	name := bridge
	for _, p := range subnets {
		name += "_" + strings.ReplaceAll(p.String(), "/", "_")
	}
	return filepath.Join(stateDir, name)
}

// parseDir reads a store directory's name back into its network. A
// bridge may hold '_' itself, so the subnets are read from the right, a
// dual-stack pair first.
func parseDir(name string) (bridge string, subnets []netip.Prefix, ok bool) {
	f := strings.Split(name, "_")
	prefixAt := func(i int) (netip.Prefix, bool) {
		p, err := netip.ParsePrefix(f[i] + "/" + f[i+1])
		return p, err == nil
	}
	n := len(f)
	if n >= 5 {
		p6, ok6 := prefixAt(n - 2)
		p4, ok4 := prefixAt(n - 4)
		if ok6 && ok4 && p6.Addr().Is6() && p4.Addr().Is4() {
			return strings.Join(f[:n-4], "_"), []netip.Prefix{p4, p6}, true
		}
	}
	if n >= 3 {
		if p, ok := prefixAt(n - 2); ok {
			return strings.Join(f[:n-2], "_"), []netip.Prefix{p}, true
		}
	}
	return "", nil, false
}

// Stores lists the networks that have a store under stateDir.
func Stores(stateDir string) ([]Store, error) {
	ents, err := os.ReadDir(stateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lease stores: %w", err)
	}
	var stores []Store
	for _, e := range ents {
		bridge, subnets, ok := parseDir(e.Name())
		if !e.IsDir() || !ok || bridge == "" {
			continue
		}
		s, err := Open(stateDir, bridge, subnets...)
		if err != nil {
			continue
		}
		stores = append(stores, s)
	}
	return stores, nil
}

// Peek returns the store's leases without taking its lock. Each lease file
// is replaced atomically, so every lease read is whole; the set may be a
// moment old. For looking across networks, where taking another store's
// lock could deadlock with a hook doing the same the other way.
func (s *Disk) Peek() ([]Lease, error) {
	ls, _, err := (&diskTx{s: s}).List()
	return ls, err
}

// Recorded reports whether the network has a record. The record is
// replaced atomically, so a look without the lock is safe.
func (s *Disk) Recorded() bool {
	_, err := os.Stat((&diskTx{s: s}).recordPath())
	return err == nil
}

// Destroy removes the store's files. The caller makes sure no lease is
// left that anyone cares about.
// It holds the store's lock while it does: a process that waited on the
// lock then finds the store gone (Do), rather than working in a
// directory being removed.
func (s *Disk) Destroy() error {
	if err := s.lock.Lock(); err != nil {
		return fmt.Errorf("lock lease store %s: %w", s.dir, err)
	}
	defer s.lock.Unlock()
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("remove lease store: %w", err)
	}
	return nil
}

// Close lets go of the leases this process allocated: from then on, a
// lease whose container has no interface may be reclaimed (see Pending).
// The kernel does the same when the process dies.
func (s *Disk) Close() {
	for _, f := range s.held {
		f.Close()
	}
	s.held = nil
}

// letGo closes the lease file of ip if this process holds it.
func (s *Disk) letGo(ip netip.Addr) {
	if f, ok := s.held[ip]; ok {
		f.Close()
		delete(s.held, ip)
	}
}

// Bridge is the bridge of the store's network.
func (s *Disk) Bridge() string { return s.bridge }

// Dir is where the store keeps its files.
func (s *Disk) Dir() string { return s.dir }

// Subnets are the prefixes the store hands addresses out of.
func (s *Disk) Subnets() []netip.Prefix { return subnetsOf(s.ranges) }

// Do runs fn with the store locked. Every read and write of the store goes
// through a Tx, so no caller can touch the files without holding the lock.
func (s *Disk) Do(fn func(Tx) error) error {
	if err := s.lock.Lock(); err != nil {
		return fmt.Errorf("lock lease store %s: %w", s.dir, err)
	}
	defer s.lock.Unlock()
	// The lock may have been the last of a store another process
	// removed (network rm) while this one waited.
	if _, err := os.Stat(s.dir); err != nil {
		return fmt.Errorf("lease store %s: %w", s.dir, err)
	}
	return fn(&diskTx{s: s})
}

// diskTx is the store as seen while its lock is held.
type diskTx struct{ s *Disk }

func (t *diskTx) leasePath(ip netip.Addr) string {
	return filepath.Join(t.s.dir, "leases", ip.String())
}

func (t *diskTx) drainPath(ip netip.Addr) string {
	return filepath.Join(t.s.dir, "draining", ip.String())
}

// v6Path is the symlink that reserves a dual-stack lease's IPv6 address;
// it points at the lease's first address.
func (t *diskTx) v6Path(ip netip.Addr) string {
	return filepath.Join(t.s.dir, "leases6", ip.String())
}

// idPath names the index file of a container id. Ids may be up to 1024
// bytes, longer than a file name may be, so the file is named by a hash.
// FNV, not SHA-256: importing crypto costs every hook process over a
// millisecond of start-up, and Lookup checks the id in the lease anyway, so
// a collision can only hide a lease, never hand out the wrong one.
func (t *diskTx) idPath(id string) string {
	h := fnv.New128a()
	h.Write([]byte(id))
	return filepath.Join(t.s.dir, "ids", hex.EncodeToString(h.Sum(nil)))
}

// Lookup returns the lease held by container id.
func (t *diskTx) Lookup(id string) (Lease, bool, error) {
	target, err := os.Readlink(t.idPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return Lease{}, false, nil
	}
	if err != nil {
		return Lease{}, false, fmt.Errorf("lease index of %q: %w", id, err)
	}
	ip, err := netip.ParseAddr(target)
	if err != nil {
		// An index entry that names no address reserves nothing: the lease
		// files are what reserve addresses.
		return Lease{}, false, nil
	}
	l, ok, err := t.read(ip)
	if err != nil || !ok || l.ID != id {
		// The index may outlive its lease after a crash; the lease file is
		// the truth.
		return Lease{}, false, err
	}
	return l, true, nil
}

func (t *diskTx) read(ip netip.Addr) (Lease, bool, error) {
	p := t.leasePath(ip)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return Lease{}, false, nil
	}
	if err != nil {
		return Lease{}, false, fmt.Errorf("read lease: %w", err)
	}
	var l Lease
	if err := json.Unmarshal(b, &l); err != nil || l.IP != ip {
		return Lease{}, false, fmt.Errorf("%w: %s is unreadable", ErrCorrupt, p)
	}
	return l, true, nil
}

// reservedIn is where each range's addresses are reserved.
var reservedIn = [2]string{"leases", "leases6"}

// The symlink "last" names the addresses handed out last, one per range,
// separated by a space: one write for both families.
func (t *diskTx) Allocate(want Lease) (Lease, error) {
	hints := make([]netip.Addr, len(t.s.ranges))
	if target, err := os.Readlink(filepath.Join(t.s.dir, "last")); err == nil {
		for i, f := range strings.Fields(target) {
			if i < len(hints) {
				hints[i], _ = netip.ParseAddr(f)
			}
		}
	}
	taken := func(i int, ip netip.Addr) bool {
		if i == 1 {
			return t.taken6(ip)
		}
		return t.taken(ip)
	}
	count := func(i int) int {
		ents, _ := os.ReadDir(filepath.Join(t.s.dir, reservedIn[i]))
		return len(ents)
	}
	ips, err := choose(t.s.ranges, want, hints, taken, count)
	if err != nil {
		return Lease{}, err
	}
	l := leased(want, ips)
	if err := t.write(l); err != nil {
		return Lease{}, err
	}
	last := l.IP.String()
	if l.IP6.IsValid() {
		last += " " + l.IP6.String()
	}
	if err := symlinkAtomic(last, filepath.Join(t.s.dir, "last")); err != nil {
		return Lease{}, fmt.Errorf("record last address: %w", err)
	}
	return l, nil
}

// write reserves the IPv6 address of a dual-stack lease first, then
// stores the lease file, then its index: a crash in between leaves an
// address reserved that Tidy frees, or a lease that reserves its
// addresses and that gc can find, never an index pointing at an address
// someone else may take.
func (t *diskTx) write(l Lease) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	// The claims first: one a crash leaves names a lease that is not
	// there, which readers see through.
	if err := writeClaims(t.s.dir, l); err != nil {
		return err
	}
	if l.IP6.IsValid() {
		// A plain symlink: the address was found free under the lock,
		// and creating it is atomic.
		if err := os.Symlink(l.IP.String(), t.v6Path(l.IP6)); err != nil {
			return fmt.Errorf("reserve %s in %s: %w", l.IP6, t.s.dir, err)
		}
	}
	f, err := writeAtomic(t.leasePath(l.IP), b, true)
	if err != nil {
		t.unreserve6(l)
		removeClaims(t.s.dir, l)
		return fmt.Errorf("write lease %s in %s: %w", l.IP, t.s.dir, err)
	}
	if err := symlinkAtomic(l.IP.String(), t.idPath(l.ID)); err != nil {
		f.Close()
		os.Remove(t.leasePath(l.IP))
		t.unreserve6(l)
		return fmt.Errorf("write lease index %s: %w", l.IP, err)
	}
	t.s.Close()
	t.s.held = map[netip.Addr]*os.File{l.IP: f}
	return nil
}

// Pending reports whether the process that allocated lease l still runs
// and has not closed its store: its setup may be between the lease and the
// container's interface, so a lease without an interface is not yet a
// lease to reclaim. The allocating process holds a lock on the lease file
// from before the file appears until it closes the store or dies, so the
// answer needs no pid, which could be reused.
func (t *diskTx) Pending(l Lease) bool {
	f, err := os.Open(t.leasePath(l.IP))
	if err != nil {
		return false
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	return errors.Is(err, unix.EWOULDBLOCK)
}

// Release frees the lease of container id and returns it. An unknown id is
// not an error: teardown may run twice, or after a setup that never leased.
func (t *diskTx) Release(id string) (Lease, bool, error) {
	l, ok, err := t.Lookup(id)
	if err != nil || !ok {
		os.Remove(t.idPath(id))
		return Lease{}, false, err
	}
	if err := t.remove(l); err != nil {
		return Lease{}, false, err
	}
	return l, true, nil
}

func (t *diskTx) Drain(l Lease) error {
	t.s.letGo(l.IP)
	if err := os.Rename(t.leasePath(l.IP), t.drainPath(l.IP)); err != nil {
		return fmt.Errorf("release %s: %w", l.IP, err)
	}
	if err := os.Remove(t.idPath(l.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release index of %s: %w", l.IP, err)
	}
	// A draining lease publishes nothing: its ports were unpublished.
	return removeClaims(t.s.dir, l)
}

func (t *diskTx) Draining() ([]Lease, error) {
	ents, err := os.ReadDir(filepath.Join(t.s.dir, "draining"))
	if err != nil {
		return nil, fmt.Errorf("list draining leases: %w", err)
	}
	var ls []Lease
	for _, e := range ents {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue
		}
		var l Lease
		if b, err := os.ReadFile(t.drainPath(ip)); err == nil && json.Unmarshal(b, &l) == nil && l.IP == ip {
			ls = append(ls, l)
		} else {
			// Nothing to wait for that can be named: free the address.
			os.Remove(t.drainPath(ip))
		}
	}
	return ls, nil
}

func (t *diskTx) Settle(l Lease) error {
	if err := os.Remove(t.drainPath(l.IP)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("free %s: %w", l.IP, err)
	}
	return t.unreserve6(l)
}

// unreserve6 frees a dual-stack lease's IPv6 address, once its lease
// file is gone: a crash before leaves an address reserved that Tidy
// frees, never one taken twice.
func (t *diskTx) unreserve6(l Lease) error {
	if !l.IP6.IsValid() {
		return nil
	}
	if err := os.Remove(t.v6Path(l.IP6)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("free %s: %w", l.IP6, err)
	}
	return nil
}

// taken reports whether ip has a lease, or is draining.
func (t *diskTx) taken(ip netip.Addr) bool {
	if _, err := os.Lstat(t.leasePath(ip)); !errors.Is(err, os.ErrNotExist) {
		return true
	}
	_, err := os.Lstat(t.drainPath(ip))
	return !errors.Is(err, os.ErrNotExist)
}

// taken6 reports whether the IPv6 address ip of a dual-stack network is
// reserved: leased, or draining.
func (t *diskTx) taken6(ip netip.Addr) bool {
	_, err := os.Lstat(t.v6Path(ip))
	return !errors.Is(err, os.ErrNotExist)
}

func (t *diskTx) Remove(l Lease) error { return t.remove(l) }

func (t *diskTx) remove(l Lease) error {
	t.s.letGo(l.IP)
	if err := os.Remove(t.leasePath(l.IP)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release %s: %w", l.IP, err)
	}
	if err := os.Remove(t.idPath(l.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release index of %s: %w", l.IP, err)
	}
	if err := removeClaims(t.s.dir, l); err != nil {
		return err
	}
	return t.unreserve6(l)
}

func (t *diskTx) Lease(ip netip.Addr) (Lease, bool, error) { return t.read(ip) }

func (t *diskTx) recordPath() string { return filepath.Join(t.s.dir, "network.json") }

func (t *diskTx) Record(v any) (bool, error) {
	b, err := os.ReadFile(t.recordPath())
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read network record: %w", err)
	}
	// A record is a cache of what the kernel holds: an unreadable one
	// means "verify again", not "fail".
	return json.Unmarshal(b, v) == nil, nil
}

func (t *diskTx) SetRecord(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.Remove(t.stampPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clear network stamp: %w", err)
	}
	if _, err := writeAtomic(t.recordPath(), b, false); err != nil {
		return fmt.Errorf("write network record: %w", err)
	}
	return nil
}

func (t *diskTx) ClearRecord() error {
	for _, p := range []string{t.recordPath(), t.stampPath()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("clear network record: %w", err)
		}
	}
	return nil
}

func (t *diskTx) stampPath() string { return filepath.Join(t.s.dir, "stamp") }

func (t *diskTx) Stamp() string {
	b, err := os.ReadFile(t.stampPath())
	if err != nil {
		return ""
	}
	return string(b)
}

func (t *diskTx) SetStamp(s string) error {
	if _, err := writeAtomic(t.stampPath(), []byte(s), false); err != nil {
		return fmt.Errorf("write network stamp: %w", err)
	}
	return nil
}

// List returns every lease, and the names of lease files it could not read.
func (t *diskTx) List() ([]Lease, []string, error) {
	ents, err := os.ReadDir(filepath.Join(t.s.dir, "leases"))
	if err != nil {
		return nil, nil, fmt.Errorf("list leases: %w", err)
	}
	var ls []Lease
	var bad []string
	for _, e := range ents {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue // a temp file of an interrupted write
		}
		l, ok, err := t.read(ip)
		if err != nil {
			bad = append(bad, filepath.Join(t.s.dir, "leases", e.Name()))
			continue
		}
		if ok {
			ls = append(ls, l)
		}
	}
	return ls, bad, nil
}

// Tidy removes unreadable lease files, the temp files of interrupted
// writes (writes happen under the lock, so none is in progress), and
// index entries without a lease, and writes those leases lack.
func (t *diskTx) Tidy() ([]string, error) {
	var report []string
	_, bad, err := t.List()
	if err != nil {
		return nil, err
	}
	for _, p := range bad {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return report, fmt.Errorf("discard %s: %w", p, err)
		}
		report = append(report, "discarded unreadable lease file "+p)
	}
	if n, err := t.sweep(); err != nil {
		return report, err
	} else if n > 0 {
		report = append(report, fmt.Sprintf("removed %d files of interrupted writes", n))
	}
	if n, err := t.pruneIndex(); err != nil {
		return report, err
	} else if n > 0 {
		report = append(report, fmt.Sprintf("fixed %d lease index entries", n))
	}
	if n, err := t.prune6(); err != nil {
		return report, err
	} else if n > 0 {
		report = append(report, fmt.Sprintf("fixed %d IPv6 address reservations", n))
	}
	ls, _, err := t.List()
	if err != nil {
		return report, err
	}
	if n, err := t.tidyClaims(ls); err != nil {
		return report, err
	} else if n > 0 {
		report = append(report, fmt.Sprintf("removed %d stale host port claims", n))
	}
	return report, nil
}

// prune6 frees the IPv6 reservations of a dual-stack store that no lease
// or draining lease holds, as a crash between writing or removing a lease
// and its reservation leaves, and writes those leases lack. It returns
// the number changed.
func (t *diskTx) prune6() (int, error) {
	if len(t.s.ranges) < 2 {
		return 0, nil
	}
	ents, err := os.ReadDir(filepath.Join(t.s.dir, "leases6"))
	if err != nil {
		return 0, fmt.Errorf("IPv6 reservations: %w", err)
	}
	holds := map[netip.Addr]bool{}
	leases, _, err := t.List()
	if err != nil {
		return 0, err
	}
	draining, err := t.Draining()
	if err != nil {
		return 0, err
	}
	for _, l := range append(leases, draining...) {
		holds[l.IP6] = true
	}
	n := 0
	for _, e := range ents {
		if ip, err := netip.ParseAddr(e.Name()); err == nil && holds[ip] {
			delete(holds, ip)
			continue
		}
		if os.Remove(filepath.Join(t.s.dir, "leases6", e.Name())) == nil {
			n++
		}
	}
	for _, l := range append(leases, draining...) {
		if l.IP6.IsValid() && holds[l.IP6] {
			if err := symlinkAtomic(l.IP.String(), t.v6Path(l.IP6)); err != nil {
				return n, fmt.Errorf("reserve %s: %w", l.IP6, err)
			}
			n++
		}
	}
	return n, nil
}

// sweep removes the temporary files of writes that a killed process left
// half done.
func (t *diskTx) sweep() (int, error) {
	n := 0
	for _, sub := range []string{"", "leases", "ids", "leases6"} {
		tmps, err := filepath.Glob(filepath.Join(t.s.dir, sub, ".tmp-*"))
		if err != nil {
			return n, err
		}
		for _, p := range tmps {
			if os.Remove(p) == nil {
				n++
			}
		}
	}
	return n, nil
}

// pruneIndex removes index entries whose lease is gone or held by another
// id, as a crash between writing a lease and its index can leave, and
// writes the entries that leases lack (a store from a version that named
// them by another hash). It returns the number of entries changed.
func (t *diskTx) pruneIndex() (int, error) {
	dir := filepath.Join(t.s.dir, "ids")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("lease index: %w", err)
	}
	n := 0
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		target, err := os.Readlink(p)
		keep := false
		if ip, perr := netip.ParseAddr(target); err == nil && perr == nil {
			if l, ok, _ := t.read(ip); ok && t.idPath(l.ID) == p {
				keep = true
			}
		}
		if !keep {
			if err := os.Remove(p); err == nil {
				n++
			}
		}
	}
	leases, _, err := t.List()
	if err != nil {
		return n, err
	}
	for _, l := range leases {
		if target, err := os.Readlink(t.idPath(l.ID)); err == nil && target == l.IP.String() {
			continue
		}
		if err := symlinkAtomic(l.IP.String(), t.idPath(l.ID)); err != nil {
			return n, fmt.Errorf("write lease index %s: %w", l.IP, err)
		}
		n++
	}
	return n, nil
}

// symlinkAtomic makes path a symlink to target, replacing what was there.
// The index and the last-address hint are symlinks: one small value each,
// written and read in one system call, atomically, with no file to sync.
// Both can be rebuilt from the lease files, so they need no fsync.
func symlinkAtomic(target, path string) error {
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	os.Remove(tmp) // left by a hook killed between the two calls below
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeAtomic replaces path with data so that a reader, or the next hook
// after a crash, sees either the old file or the new one, never a torn one.
// With hold, the file is returned open and exclusively flocked, the lock
// taken before the file appears under its name; else it is closed.
//
// There is no fsync. Rename is atomic against a killed process: the data
// is in the page cache, whoever dies. An fsync would only guard against a
// power loss or a kernel crash, after which the store is gone anyway (it
// lives under /run, cleared at boot) and so are the containers it
// describes. It cost about 0.8 ms per allocation on an ext4 /run.
func writeAtomic(path string, data []byte, hold bool) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-") // mode 0600
	if err != nil {
		return nil, err
	}
	if _, err = f.Write(data); err == nil && hold {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil || !hold {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	if hold {
		return f, nil
	}
	return nil, nil
}

var (
	_ Store = (*Disk)(nil)
	_ Tx    = (*diskTx)(nil)
)

// DamageLease overwrites the lease record of ip with data, or with nil
// deletes it, behind the store's back: as a crash, a full disk or a
// careless hand would. It exists for tests of recovery.
func (s *Disk) DamageLease(ip netip.Addr, data []byte) error {
	p := (&diskTx{s: s}).leasePath(ip)
	if data == nil {
		return os.Remove(p)
	}
	return os.WriteFile(p, data, fileMode)
}

// OnDisk is the Opener of stores on disk.
type OnDisk struct{}

func (OnDisk) Open(stateDir, bridge string, subnets ...netip.Prefix) (Store, error) {
	return Open(stateDir, bridge, subnets...)
}

func (OnDisk) Claims(stateDir, proto string, p uint16) ([]Claim, error) {
	return Claims(stateDir, proto, p)
}

func (OnDisk) Exists(stateDir, bridge string, subnets ...netip.Prefix) bool {
	return Exists(stateDir, bridge, subnets...)
}

func (OnDisk) All(stateDir string) ([]Store, error) { return Stores(stateDir) }

// Watching stores from outside. The name server follows the leases of
// the networks it serves as they change, with inotify, and reads them
// without the lock; these are what it may rely on of the layout.

// StoreDir is the directory of the store of network bridge/subnets under
// stateDir.
func StoreDir(stateDir, bridge string, subnets ...netip.Prefix) string {
	return dirOf(stateDir, bridge, subnets)
}

// IsStoreDir reports whether name, an entry of a state directory, names
// a store.
func IsStoreDir(name string) bool {
	bridge, _, ok := parseDir(name)
	return ok && bridge != ""
}

// RecordFile is the name of the record's file in a store's directory; it
// is replaced by a rename, and removed when the network is taken down.
const RecordFile = "network.json"

// LeasesDir is the directory, in store dir, of the leases: one file per
// lease, named for its address, that appears by a rename and leaves by a
// rename or an unlink.
func LeasesDir(dir string) string { return filepath.Join(dir, "leases") }

// ReadRecord reads the record of the store in dir into v, without the
// lock.
func ReadRecord(dir string, v any) (bool, error) {
	return (&diskTx{s: &Disk{dir: dir}}).Record(v)
}

// ReadLease reads the lease of the file name in dir's leases, without the
// lock. A name that is no address (a temp file) is no lease.
func ReadLease(dir, name string) (Lease, bool, error) {
	ip, err := netip.ParseAddr(name)
	if err != nil {
		return Lease{}, false, nil
	}
	return (&diskTx{s: &Disk{dir: dir}}).read(ip)
}

// TryDo is Do if the lock is free, and else reports false at once.
func (s *Disk) TryDo(fn func(Tx) error) (bool, error) {
	ok, err := s.lock.TryLock()
	if err != nil || !ok {
		return false, err
	}
	defer s.lock.Unlock()
	if _, err := os.Stat(s.dir); err != nil {
		return true, fmt.Errorf("lease store %s: %w", s.dir, err)
	}
	return true, fn(&diskTx{s: s})
}

// OpenDir opens the store in dir, as StoreDir names it.
func OpenDir(dir string) (*Disk, error) {
	bridge, subnets, ok := parseDir(filepath.Base(dir))
	if !ok || bridge == "" {
		return nil, fmt.Errorf("%s is no lease store", dir)
	}
	return Open(filepath.Dir(dir), bridge, subnets...)
}
