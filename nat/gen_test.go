package nat

import (
	"os"
	"runtime"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// TestGenerationCountsTransactions reads the generation in a namespace of
// its own: it moves with a transaction, and only then.
func TestGenerationCountsTransactions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	inNewNetns(t, func() {
		g0, err := Generation()
		if err != nil {
			t.Fatal(err)
		}
		if g, err := Generation(); err != nil || g != g0 {
			t.Errorf("no change: %d, then %d (%v)", g0, g, err)
		}
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		c.AddTable(&nftables.Table{Name: "bh-gen-test", Family: nftables.TableFamilyINet})
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		if g, err := Generation(); err != nil || g != g0+1 {
			t.Errorf("after one transaction: %d, want %d (%v)", g, g0+1, err)
		}
	})
}

// inNewNetns runs fn on a thread in a new network namespace, removed when
// fn returns: the host's rules are never touched.
func inNewNetns(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.New()
		if err != nil {
			t.Errorf("new netns: %v", err)
			return
		}
		defer ns.Close()
		fn()
	}()
	<-done
}
