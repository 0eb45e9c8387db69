package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// fill writes n leases directly, without fsync, as a quick stand-in for n
// allocations: the benchmarks measure what comes after.
func fill(b *testing.B, s *Disk, n int) {
	tx := &diskTx{s: s}
	ip := s.ranges[0].First
	var ip6 netip.Addr
	if len(s.ranges) > 1 {
		ip6 = s.ranges[1].First
	}
	for i := range n {
		l := Lease{ID: fmt.Sprint("held", i), IP: ip, IP6: ip6}
		data, _ := json.Marshal(l)
		if err := os.WriteFile(tx.leasePath(ip), data, 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Symlink(ip.String(), tx.idPath(l.ID)); err != nil {
			b.Fatal(err)
		}
		if ip6.IsValid() {
			if err := os.Symlink(ip.String(), tx.v6Path(ip6)); err != nil {
				b.Fatal(err)
			}
			ip6 = ip6.Next()
		}
		ip = ip.Next()
	}
	last := ip.Prev().String()
	if ip6.IsValid() {
		last += " " + ip6.Prev().String()
	}
	if err := symlinkAtomic(last, filepath.Join(s.dir, "last")); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAllocateRelease shows that the cost of the common path does not
// grow with the number of leases held, for an IPv4 /16, a dual-stack
// network with an IPv6 /64 (2^64 addresses), and an IPv6-only /64.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, net := range []struct {
		name    string
		subnets []netip.Prefix
	}{
		{"ipv4", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}},
		{"dual", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("fd19::/64")}},
		{"ipv6", []netip.Prefix{netip.MustParsePrefix("fd19::/64")}},
	} {
		for _, held := range []int{0, 10_000, 60_000} {
			benchAllocateRelease(b, net.name, net.subnets, held)
		}
	}
}

func benchAllocateRelease(b *testing.B, name string, subnets []netip.Prefix, held int) {
	b.Run(fmt.Sprintf("%s/held=%d", name, held), func(b *testing.B) {
		s, err := Open(b.TempDir(), "br0", subnets...)
		if err != nil {
			b.Fatal(err)
		}
		fill(b, s, held)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			id := fmt.Sprint("c", i)
			err := s.Do(func(tx Tx) error {
				if _, err := tx.Allocate(Lease{ID: id}); err != nil {
					return err
				}
				_, _, err := tx.Release(id)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
