package ipam

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// fill writes n leases directly, without fsync, as a quick stand-in for n
// allocations: the benchmarks measure what comes after.
func fill(b *testing.B, s *Disk, n int) {
	ip := s.r.First
	for i := range n {
		id := fmt.Sprint("held", i)
		if err := os.WriteFile(filepath.Join(s.dir, "leases", ip.String()),
			[]byte(fmt.Sprintf(`{"id":%q,"ip":%q}`, id, ip)), 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Symlink(ip.String(), (&diskTx{s: s}).idPath(id)); err != nil {
			b.Fatal(err)
		}
		ip = ip.Next()
	}
	if err := symlinkAtomic(ip.Prev().String(), filepath.Join(s.dir, "last")); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAllocateRelease shows that the cost of the common path does not
// grow with the number of leases held.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, held := range []int{0, 10_000, 60_000} {
		b.Run(fmt.Sprint("held=", held), func(b *testing.B) {
			s, err := Open(b.TempDir(), "br0", netip.MustParsePrefix("10.0.0.0/16"))
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
}
