package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
)

var (
	v4 = netip.MustParsePrefix("10.1.0.0/24")
	v6 = netip.MustParsePrefix("fd19::/64")
)

// eachStore runs test against the store on disk and the one in memory for
// a network of subnets.
func eachStore(t *testing.T, subnets []netip.Prefix, test func(t *testing.T, s Store)) {
	t.Run("disk", func(t *testing.T) {
		s, err := Open(t.TempDir(), "br0", subnets...)
		if err != nil {
			t.Fatal(err)
		}
		test(t, s)
	})
	t.Run("memory", func(t *testing.T) {
		m, err := NewMemory("br0", subnets...)
		if err != nil {
			t.Fatal(err)
		}
		test(t, m)
	})
}

func allocLease(s Store, want Lease) (Lease, error) {
	var l Lease
	err := s.Do(func(tx Tx) (err error) {
		l, err = tx.Allocate(want)
		return err
	})
	return l, err
}

func TestDualStackLeaseHoldsBothAddresses(t *testing.T) {
	eachStore(t, []netip.Prefix{v4, v6}, func(t *testing.T, s Store) {
		if got := s.Subnets(); !slices.Equal(got, []netip.Prefix{v4, v6}) {
			t.Fatalf("Subnets() = %v", got)
		}
		a, err := allocLease(s, Lease{ID: "a"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := allocLease(s, Lease{ID: "b"})
		if err != nil {
			t.Fatal(err)
		}
		if a.IP.String() != "10.1.0.2" || a.IP6.String() != "fd19::2" || b.IP.String() != "10.1.0.3" || b.IP6.String() != "fd19::3" {
			t.Fatalf("leases %v %v and %v %v, want 10.1.0.2 fd19::2 and 10.1.0.3 fd19::3", a.IP, a.IP6, b.IP, b.IP6)
		}
		// The lease is found again whole by its id.
		s.Do(func(tx Tx) error {
			l, ok, err := tx.Lookup("b")
			if err != nil || !ok || l.IP6 != b.IP6 {
				t.Errorf("Lookup(b) = %v %v %v", l, ok, err)
			}
			return nil
		})
		// A static IPv6 address, and one that is taken.
		c, err := allocLease(s, Lease{ID: "c", IP6: netip.MustParseAddr("fd19::1:0:0:9")})
		if err != nil || c.IP6.String() != "fd19::1:0:0:9" || !c.IP.Is4() {
			t.Fatalf("static IPv6: %v %v", c, err)
		}
		if _, err := allocLease(s, Lease{ID: "d", IP6: b.IP6}); !errors.Is(err, ErrTaken) {
			t.Fatalf("taken IPv6 %s: got %v", b.IP6, err)
		}
		for _, bad := range []string{"fd19::1", "fd20::5", "fd19::"} {
			if _, err := allocLease(s, Lease{ID: "d", IP6: netip.MustParseAddr(bad)}); !errors.Is(err, ErrUnusable) {
				t.Errorf("IPv6 %s: got %v, want ErrUnusable", bad, err)
			}
		}
		// Both addresses are freed together: asked for by name again,
		// each is granted.
		release(t, s, "b")
		if d, err := allocLease(s, Lease{ID: "d", IP: b.IP, IP6: b.IP6}); err != nil || d.IP != b.IP || d.IP6 != b.IP6 {
			t.Fatalf("re-leasing %s %s after release: %v %v", b.IP, b.IP6, d, err)
		}
	})
}

func TestDrainedIPv6WaitsForSettle(t *testing.T) {
	eachStore(t, []netip.Prefix{v4, v6}, func(t *testing.T, s Store) {
		a, err := allocLease(s, Lease{ID: "a"})
		if err != nil {
			t.Fatal(err)
		}
		s.Do(func(tx Tx) error { return tx.Drain(a) })
		if _, err := allocLease(s, Lease{ID: "b", IP6: a.IP6}); !errors.Is(err, ErrTaken) {
			t.Fatalf("draining %s granted: %v", a.IP6, err)
		}
		s.Do(func(tx Tx) error { return tx.Settle(a) })
		if _, err := allocLease(s, Lease{ID: "b", IP6: a.IP6}); err != nil {
			t.Fatalf("settled %s refused: %v", a.IP6, err)
		}
	})
}

func TestIPv6OnlyStore(t *testing.T) {
	eachStore(t, []netip.Prefix{netip.MustParsePrefix("fd19::/120")}, func(t *testing.T, s Store) {
		a, err := allocLease(s, Lease{ID: "a"})
		if err != nil || a.IP.String() != "fd19::2" || a.IP6.IsValid() {
			t.Fatalf("first lease %v %v, want fd19::2 alone", a, err)
		}
		b, err := allocLease(s, Lease{ID: "b", IP6: netip.MustParseAddr("fd19::ff")})
		if err != nil || b.IP.String() != "fd19::ff" {
			t.Fatalf("static lease %v %v, want fd19::ff (no broadcast in IPv6)", b, err)
		}
		if _, err := allocLease(s, Lease{ID: "c", IP: netip.MustParseAddr("10.0.0.5")}); !errors.Is(err, ErrUnusable) {
			t.Fatalf("IPv4 address on an IPv6-only network: got %v", err)
		}
	})
}

// Past the first 2^32 addresses of a /64: the allocator's arithmetic is
// as wide as the address.
func TestIPv6AllocationPastThirtyTwoBits(t *testing.T) {
	s, err := NewMemory("br0", v6)
	if err != nil {
		t.Fatal(err)
	}
	s.last[0] = netip.MustParseAddr("fd19::1:ffff:fffe")
	if l, err := allocLease(s, Lease{ID: "a"}); err != nil || l.IP.String() != "fd19::1:ffff:ffff" {
		t.Fatalf("got %v %v", l.IP, err)
	}
	if l, err := allocLease(s, Lease{ID: "b"}); err != nil || l.IP.String() != "fd19::2:0:0" {
		t.Fatalf("got %v %v", l.IP, err)
	}
}

func TestRangesOfRefusesBadSets(t *testing.T) {
	p := netip.MustParsePrefix
	for _, set := range [][]netip.Prefix{
		nil,
		{v6, v4},
		{v4, p("10.2.0.0/24")},
		{v4, v6, p("fd20::/64")},
	} {
		if _, err := rangesOf(set); err == nil {
			t.Errorf("rangesOf(%v) accepted it", set)
		}
	}
}

func TestStoreDirNames(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		bridge  string
		subnets []netip.Prefix
	}{
		{"netns0", []netip.Prefix{p("172.19.0.0/16")}},
		{"my_br", []netip.Prefix{p("172.19.0.0/16")}},
		{"br6", []netip.Prefix{p("fd19::/64")}},
		{"b_1", []netip.Prefix{p("10.0.0.0/8"), p("fd19:0:0:1::/64")}},
	} {
		name := dirOf("", tc.bridge, tc.subnets)
		br, subnets, ok := parseDir(name)
		if !ok || br != tc.bridge || !slices.Equal(subnets, tc.subnets) {
			t.Errorf("parseDir(%q) = %q %v %v, want %q %v", name, br, subnets, ok, tc.bridge, tc.subnets)
		}
	}
	// An IPv4 store keeps the name it always had: no migration.
	if got := dirOf("/run/bridgehook", "netns0", []netip.Prefix{p("172.19.0.0/16")}); got != "/run/bridgehook/netns0_172.19.0.0_16" {
		t.Errorf("IPv4 store dir %s", got)
	}
	dir := t.TempDir()
	for _, subnets := range [][]netip.Prefix{{v4}, {v4, v6}, {v6}} {
		if _, err := Open(dir, fmt.Sprint("br", len(subnets), subnets[0].Addr().Is6()), subnets...); err != nil {
			t.Fatal(err)
		}
	}
	stores, err := Stores(dir)
	if err != nil || len(stores) != 3 {
		t.Fatalf("Stores: %d, %v", len(stores), err)
	}
	for _, s := range stores {
		if !Exists(dir, s.Bridge(), s.Subnets()...) {
			t.Errorf("store %s %v listed but not found again", s.Bridge(), s.Subnets())
		}
	}
}

func TestTidyMendsIPv6Reservations(t *testing.T) {
	s, err := Open(t.TempDir(), "br0", v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	a, err := allocLease(s, Lease{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	tx := &diskTx{s: s}
	// A crash after the reservation, before the lease: an orphan. And a
	// lease whose reservation is missing.
	orphan := netip.MustParseAddr("fd19::77")
	if err := os.Symlink("10.1.0.77", tx.v6Path(orphan)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tx.v6Path(a.IP6)); err != nil {
		t.Fatal(err)
	}
	var report []string
	s.Do(func(tx Tx) (err error) { report, err = tx.Tidy(); return err })
	if !slices.Contains(report, "fixed 2 IPv6 address reservations") {
		t.Fatalf("Tidy said %q", report)
	}
	if tx.taken6(orphan) || !tx.taken6(a.IP6) {
		t.Fatalf("after Tidy: orphan %s taken %v, leased %s taken %v", orphan, tx.taken6(orphan), a.IP6, tx.taken6(a.IP6))
	}
}
