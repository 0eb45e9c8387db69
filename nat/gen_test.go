package nat

import (
	"os"
	"runtime"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
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

// TestRuleCount counts, in a namespace of its own, the rules of chains of
// one name in tables of one name in both families: each family's own,
// and none for a chain or a table that does not exist.
func TestRuleCount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	inNewNetns(t, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		add := func(fam nftables.TableFamily, table string, rules int) {
			tb := c.AddTable(&nftables.Table{Name: table, Family: fam})
			ch := c.AddChain(&nftables.Chain{Name: "BH-T", Table: tb})
			for range rules {
				c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}})
			}
		}
		add(nftables.TableFamilyIPv4, "filter", 2)
		add(nftables.TableFamilyIPv6, "filter", 3)
		add(nftables.TableFamilyINet, "filter", 1) // neither iptables' nor ip6tables'
		add(nftables.TableFamilyIPv4, "nat", 4)
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			fam          Family
			table, chain string
			want         int
		}{
			{IPv4, "filter", "BH-T", 2},
			{IPv6, "filter", "BH-T", 3},
			{IPv4, "nat", "BH-T", 4},
			{IPv6, "nat", "BH-T", 0},
			{IPv4, "filter", "BH-NONE", 0},
		} {
			if got, err := ruleCount(tc.fam, tc.table, tc.chain); err != nil || got != tc.want {
				t.Errorf("ruleCount(%v, %s, %s) = %d, %v; want %d", tc.fam, tc.table, tc.chain, got, err, tc.want)
			}
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
