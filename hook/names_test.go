package hook

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/internal/fake"
	"github.com/bridgehook/bridgehook/ipam"
)

// A network with names asks for its server at each setup, once the lease
// is written, and records what the server needs; the lease keeps the
// container's names.
func TestSetupOfANetworkWithNames(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("a", w.container(10), "")
	if len(w.served) != 0 {
		t.Fatalf("a network without names asked for a server: %v", w.served)
	}

	w.n.Names = true
	w.n.DNS = []netip.Addr{netip.MustParseAddr("192.0.2.53")}
	calls := len(w.fw.Calls)
	res, err := w.n.Setup(Request{ID: "b", Netns: Netns{PID: w.container(11)}, Names: []string{"web", "www"}})
	w.store.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := ipam.StoreDir(w.n.StateDir, "netns0", w.n.Subnets...)
	if !slices.Equal(w.served, []string{want}) {
		t.Errorf("served %v, want %s", w.served, want)
	}
	if !slices.Equal(res.Lease.Names, []string{"web", "www"}) {
		t.Errorf("lease names %v", res.Lease.Names)
	}
	// Turning names on changes what the record says: the network is
	// verified and recorded again.
	if !slices.Contains(w.fw.Calls[calls:], "install netns0") {
		t.Errorf("names turned on without a new record: %v", w.fw.Calls[calls:])
	}
	var rec record
	w.store.Do(func(tx ipam.Tx) error { rec, _ = readRecord(tx); return nil })
	if rec.Names == nil || rec.Names.Gateways[0].String() != "10.1.0.1/24" || !slices.Equal(rec.Names.Upstreams, w.n.DNS) {
		t.Errorf("record's names: %+v", rec.Names)
	}
	calls = len(w.fw.Calls)
	w.mustSetup("c", w.container(12), "")
	if len(w.fw.Calls) != calls || len(w.served) != 2 {
		t.Errorf("warm setup with names: firewall %v, served %v", w.fw.Calls[calls:], w.served)
	}
}

// A server that cannot be had fails the setup, which leaves nothing.
func TestSetupFailsWithoutItsNameServer(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.n.Names = true
	w.fail["names"] = true
	if _, err := w.setup("a", w.container(10), ""); !errors.Is(err, fake.ErrInjected) {
		t.Fatalf("setup: %v", err)
	}
	if ls, _ := w.store.Peek(); len(ls) != 0 || len(w.host.Veths) != 0 {
		t.Errorf("left behind: leases %v, veths %v", ls, w.host.Veths)
	}
}

func TestNamesMustBeNames(t *testing.T) {
	c := Defaults()
	req := Request{ID: "a", Netns: Netns{PID: 10}, Names: []string{"ok", "not ok"}}
	var in *input.Error
	if err := req.Check(c); !errors.As(err, &in) || in.Field != input.Aliases {
		t.Errorf("a name with a space: %v", err)
	}
}

// repair --all keeps a network's names: it takes them from the record,
// as the other options.
func TestRepairAllKeepsNames(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.n.Names = true
	w.mustSetup("a", w.container(10), "")
	c := Defaults()
	c.StateDir = w.n.StateDir
	if _, err := Repair(c, true, w.options()...); err != nil {
		t.Fatal(err)
	}
	var rec record
	w.store.Do(func(tx ipam.Tx) error { rec, _ = readRecord(tx); return nil })
	if rec.Names == nil {
		t.Error("repair --all dropped the network's names")
	}
}
