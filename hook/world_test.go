package hook

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/bridgehook/bridgehook/internal/fake"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/port"
)

// fakes is a network over the fakes of package fake and stores in
// memory, with them at hand.
type fakes struct {
	t      *testing.T
	n      *Network
	store  *ipam.Memory
	stores *ipam.Memories
	host   *fake.Host
	fw     *fake.Firewall
	guard  *fake.Guard
	tenant *fake.Tenant
	sys    *fake.System
	fail   fake.Fails
	// served are the stores the name server was asked to serve, in turn.
	served []string
	// gen is the nftables generation, which fw and guard move on.
	gen *fake.Gen
}

// namer stands for names.Ensure; fail "names" makes it fail.
func (w *fakes) namer(stateDir, store string) error {
	if err := w.fail.Check("names"); err != nil {
		return err
	}
	w.served = append(w.served, store)
	return nil
}

func newWorld(t *testing.T, subnets ...string) *fakes {
	t.Helper()
	c := Defaults()
	c.Subnets = nil
	for _, s := range subnets {
		c.Subnets = append(c.Subnets, netip.MustParsePrefix(s))
	}
	c.StateDir = t.TempDir()
	f := fake.Fails{}
	sys := fake.NewSystem()
	w := &fakes{
		t: t, fail: f, sys: sys, stores: &ipam.Memories{Fail: f.Check},
		host: fake.NewHost(sys, f), fw: fake.NewFirewall(f), guard: fake.NewGuard(f), tenant: fake.NewTenant(f),
		gen: &fake.Gen{N: 100},
	}
	w.fw.Gen, w.guard.Gen = w.gen, w.gen
	n, err := Open(c, w.options()...)
	if err != nil {
		t.Fatal(err)
	}
	w.n = n
	w.store, _ = w.stores.Memory(c.Bridge, c.Subnets...)
	return w
}

// options put the entry points on w's fakes.
func (w *fakes) options() []Option {
	return []Option{WithHost(w.host), WithFirewall(w.fw), WithGuard(w.guard), WithTenant(w.tenant), WithStores(w.stores), WithSystem(w.sys), WithNamer(w.namer), WithGeneration(w.gen.Get)}
}

// other adds network bridge/subnet under the same state directory, and
// returns its store.
func (w *fakes) other(bridge, subnet string) *ipam.Memory {
	w.t.Helper()
	s, err := w.stores.Memory(bridge, netip.MustParsePrefix(subnet))
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// container starts a fake container: pid in a namespace of its own.
func (w *fakes) container(pid int) int { return w.sys.Container(pid) }

// kill ends container pid: its namespace goes, its veth with it unless
// dying says the kernel is still at it.
func (w *fakes) kill(pid int, dying bool) { w.host.Kill(pid, dying) }

func (w *fakes) setup(id string, pid int, ports string) (Result, error) {
	w.t.Helper()
	req := Request{ID: id, Netns: Netns{PID: pid}}
	if ports != "" {
		p, err := port.Parse(ports)
		if err != nil {
			w.t.Fatal(err)
		}
		req.Ports = p
	}
	res, err := w.n.Setup(req)
	w.store.Close() // the hook process ends
	return res, err
}

func (w *fakes) mustSetup(id string, pid int, ports string) ipam.Lease {
	w.t.Helper()
	res, err := w.setup(id, pid, ports)
	if err != nil {
		w.t.Fatalf("setup %s: %v", id, err)
	}
	return res.Lease
}

func (w *fakes) leases() []ipam.Lease {
	w.t.Helper()
	ls, err := w.store.Peek()
	if err != nil {
		w.t.Fatal(err)
	}
	slices.SortFunc(ls, func(a, b ipam.Lease) int { return a.IP.Compare(b.IP) })
	return ls
}

func (w *fakes) draining() []ipam.Lease {
	var d []ipam.Lease
	w.store.Do(func(tx ipam.Tx) (err error) { d, err = tx.Draining(); return err })
	return d
}

func (w *fakes) gc() []string {
	w.t.Helper()
	var report []string
	err := w.store.Do(func(tx ipam.Tx) (err error) { report, err = w.n.gc(tx); return err })
	if err != nil {
		w.t.Fatalf("gc: %v", err)
	}
	return report
}

// assertEmpty checks that nothing of the network is left: no lease, no
// veth, no bridge, no rules, no record.
func (w *fakes) assertEmpty() {
	w.t.Helper()
	if ls := w.leases(); len(ls) != 0 {
		w.t.Errorf("leases left: %+v", ls)
	}
	if len(w.host.Veths) != 0 {
		w.t.Errorf("veths left: %v", w.host.Veths)
	}
	if len(w.host.Bridges) != 0 {
		w.t.Errorf("bridges left: %v", w.host.Bridges)
	}
	if len(w.fw.Installed) != 0 {
		w.t.Errorf("rules left for %v", w.fw.Installed)
	}
	if len(w.tenant.Zone) != 0 {
		w.t.Errorf("bridges left in firewalld's zone: %v", w.tenant.Zone)
	}
	if len(w.guard.Tables) != 0 {
		w.t.Errorf("spoof checks left for %v", w.guard.Tables)
	}
	w.store.Do(func(tx ipam.Tx) error {
		if _, ok := readRecord(tx); ok {
			w.t.Error("network record left")
		}
		return nil
	})
}

// lease is id's lease, if it has one.
func (w *fakes) lease(id string) (ipam.Lease, bool) {
	for _, l := range w.leases() {
		if l.ID == id {
			return l, true
		}
	}
	return ipam.Lease{}, false
}
