package ipam

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bridgehook/bridgehook/port"
)

func claimedBy(t *testing.T, stateDir, proto string, p uint16) []string {
	t.Helper()
	cs, err := Claims(stateDir, proto, p)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cs {
		m := c.Mapping
		got = append(got, fmt.Sprintf("%s %s %v:%d-%d/%s", c.Bridge, c.IP, m.HostIP, m.HostPort, m.HostEnd, m.Proto))
	}
	slices.Sort(got)
	return got
}

func TestClaimsFollowTheLeases(t *testing.T) {
	stateDir := t.TempDir()
	s, err := Open(stateDir, "br0", netip.MustParsePrefix("10.0.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	var web Lease
	s.Do(func(tx Tx) error {
		web, err = tx.Allocate(Lease{ID: "web", Ports: port.MustParse("8080-8081:80-81, 127.0.0.1:53:53/udp")})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := claimedBy(t, stateDir, "tcp", 8081); !slices.Equal(got, []string{"br0 10.0.0.2 invalid IP:8081-8081/tcp"}) {
		t.Errorf("tcp 8081: %v", got)
	}
	if got := claimedBy(t, stateDir, "udp", 53); !slices.Equal(got, []string{"br0 10.0.0.2 127.0.0.1:53-53/udp"}) {
		t.Errorf("udp 53: %v", got)
	}
	if got := claimedBy(t, stateDir, "tcp", 53); got != nil {
		t.Errorf("tcp 53: %v", got)
	}

	// gc's Tidy brings back a lost entry and drops a stale one.
	lost := claimEntries(s.Dir(), web)[0]
	os.Remove(lost)
	stale := filepath.Join(portDir(stateDir, "tcp", 9999), "any@"+filepath.Base(s.Dir())+"@10.0.0.9")
	os.MkdirAll(filepath.Dir(stale), 0o700)
	os.Symlink("10.0.0.9", stale)
	var report []string
	s.Do(func(tx Tx) error { report, err = tx.Tidy(); return err })
	if _, err := os.Lstat(lost); err != nil {
		t.Errorf("Tidy did not write the lost claim back: %v", err)
	}
	if _, err := os.Lstat(stale); err == nil || !slices.Contains(report, "removed 1 stale host port claims") {
		t.Errorf("Tidy kept a stale claim: %v", report)
	}

	// Released, the claims go.
	s.Do(func(tx Tx) error { _, _, err := tx.Release("web"); return err })
	if got := claimedBy(t, stateDir, "tcp", 8080); got != nil {
		t.Errorf("after release: %v", got)
	}
}

// A store from before the index has its claims indexed at the first
// look at the claims.
func TestClaimsOfAStoreOlderThanTheIndex(t *testing.T) {
	stateDir := t.TempDir()
	s, _ := Open(stateDir, "old0", netip.MustParsePrefix("10.1.0.0/24"))
	var l Lease
	s.Do(func(tx Tx) error { l, _ = tx.Allocate(Lease{ID: "a", Ports: port.MustParse("7000:70")}); return nil })
	os.RemoveAll(claimsDir(stateDir))
	os.Remove(filepath.Join(s.Dir(), indexedFile))
	if got := claimedBy(t, stateDir, "tcp", 7000); !slices.Equal(got, []string{"old0 " + l.IP.String() + " invalid IP:7000-7000/tcp"}) {
		t.Errorf("an older store's claim: %v", got)
	}
}
