package hook

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/internal/fake"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/port"
)

func TestColdThenWarmSetup(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.fw.Legacy = true // checked at each setup: no generation (gen_test.go)
	l := w.mustSetup("a", w.container(10), "")
	if l.IP.String() != "10.1.0.2" || l.Veth != "netnsv0-10" || l.NetnsInode != 1010 || l.Iface != "eth0" {
		t.Errorf("lease %+v", l)
	}
	v := w.host.Veths["netnsv0-10"]
	if v == nil || v.Alias != "bridgehook:a" || v.Master != "netns0" || fmt.Sprint(v.Addrs) != "[10.1.0.2/24]" || v.PID != 10 {
		t.Fatalf("veth %+v", v)
	}
	if _, ok := w.fw.Installed["netns0"]; !ok || w.host.Ensured != 1 {
		t.Fatalf("cold setup: rules %v, %d Ensure calls", w.fw.Installed, w.host.Ensured)
	}
	// The second container's setup trusts the record: no Ensure, no
	// install, one cheap check of the rules.
	calls, checks := len(w.fw.Calls), len(w.fw.Verifies)
	w.mustSetup("b", w.container(11), "")
	if w.host.Ensured != 1 || len(w.fw.Calls) != calls || !slices.Equal(w.fw.Verifies[checks:], []string{"netns0"}) {
		t.Errorf("warm setup: %d Ensure calls, firewall calls %v, checks %v", w.host.Ensured, w.fw.Calls[calls:], w.fw.Verifies[checks:])
	}
	// A bridge deleted behind our back (its ifindex changes) is made and
	// its rules installed again.
	delete(w.host.Bridges, "netns0")
	w.mustSetup("c", w.container(12), "")
	if w.host.Ensured != 2 || !slices.Contains(w.fw.Calls, "install netns0") {
		t.Errorf("after the bridge went: %d Ensure calls, firewall calls %v", w.host.Ensured, w.fw.Calls)
	}
	// Other options than recorded: the rules are installed again.
	w.n.ICC = false
	calls = len(w.fw.Calls)
	w.mustSetup("d", w.container(13), "")
	if !slices.Contains(w.fw.Calls[calls:], "install netns0") || !w.fw.Installed["netns0"].Isolated {
		t.Errorf("--icc=false on a network set up with icc: %v", w.fw.Calls[calls:])
	}
	// So does a new --non-masquerade-cidr, and the record keeps it.
	w.n.NonMasquerade = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	calls = len(w.fw.Calls)
	w.mustSetup("e", w.container(14), "")
	if !slices.Contains(w.fw.Calls[calls:], "install netns0") || len(w.fw.Installed["netns0"].NonMasquerade) != 1 {
		t.Errorf("--non-masquerade-cidr on a network set up without: %v", w.fw.Calls[calls:])
	}
	calls = len(w.fw.Calls)
	w.mustSetup("f", w.container(15), "")
	if len(w.fw.Calls) != calls {
		t.Errorf("the next setup did not trust the record: %v", w.fw.Calls[calls:])
	}
}

// A firewall reload takes the rules; the next setup finds them gone and
// brings the whole network back, the ports of older containers included.
func TestSetupReinstallsRulesAReloadRemoved(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.fw.Legacy = true // checked at each setup: no generation (gen_test.go)
	a := w.mustSetup("a", w.container(10), "8080:80")
	w.mustSetup("b", w.container(11), "")
	w.fw.Reload("netns0")
	calls := len(w.fw.Calls)
	res, err := w.setup("c", w.container(12), "")
	if err != nil || !res.RulesRestored {
		t.Fatalf("setup after a reload: %v, rules restored %v", err, res.RulesRestored)
	}
	c := res.Lease
	if !slices.Equal(w.fw.Calls[calls:], []string{"install netns0"}) {
		t.Errorf("after a reload: firewall calls %v", w.fw.Calls[calls:])
	}
	if res, _ := w.setup("c2", w.container(14), ""); res.RulesRestored {
		t.Error("the setup after that restored the rules again")
	}
	if p, ok := w.fw.Ports["netns0"][a.IP]; !ok || p.ID != "a" || len(p.Ports) != 1 || p.Ports[0].HostPort != 8080 {
		t.Errorf("a's port after the reinstall: %+v", w.fw.Ports["netns0"])
	}
	if v := w.host.Veths[c.Veth]; v == nil {
		t.Error("c has no veth")
	}
	// A check that cannot run counts as rules gone; when the reinstall
	// fails too, the setup fails and leaves nothing, veth included.
	w.fw.VerifyFails = true
	w.fw.Fail["install"] = true
	_, err = w.setup("d", w.container(13), "")
	if !errors.Is(err, fake.ErrInjected) || !strings.Contains(err.Error(), "install") {
		t.Errorf("setup with a failing check and install: %v", err)
	}
	for _, l := range w.leases() {
		if l.ID == "d" {
			t.Error("the failed setup left a lease")
		}
	}
	if w.host.Veths["netnsv0-13"] != nil {
		t.Error("the failed setup left its veth")
	}
}

// A network keeps its backend: a setup that names the other one is refused
// and leaves nothing; one that names none uses the network's.
func TestSetupRefusesAnotherFirewall(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.n.Firewall = "nftables"
	w.mustSetup("a", w.container(10), "")
	w.n.Firewall = "iptables"
	_, err := w.setup("b", w.container(11), "")
	if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "has its rules in nftables") || !strings.Contains(err.Error(), "--firewall iptables repair") {
		t.Errorf("setup asking for iptables on an nftables network: %v", err)
	}
	for _, l := range w.leases() {
		if l.ID == "b" {
			t.Error("the refused setup left a lease")
		}
	}
	w.n.Firewall = ""
	w.mustSetup("c", w.container(12), "")
	if w.n.Firewall != "nftables" {
		t.Errorf("a setup without --firewall used %q", w.n.Firewall)
	}
}

// A setup killed between creating its veth and labelling it leaves the
// name taken: the next setup of that container deletes the leftover.
func TestAHalfMadeVethOfThisPidIsReplaced(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.host.Veths["netnsv0-10"] = &fake.Veth{State: bridge.Live, PID: 10, Iface: "eth0"}
	l := w.mustSetup("a", w.container(10), "")
	if v := w.host.Veths[l.Veth]; v == nil || v.Alias != "bridgehook:a" {
		t.Errorf("veth %+v, want a's", v)
	}
	// A labelled veth of the name is someone's: it is left alone.
	w.host.Veths["netnsv0-11"] = &fake.Veth{Alias: "bridgehook:other", State: bridge.Live, PID: 99}
	if _, err := w.setup("b", w.container(11), ""); err == nil || w.host.Veths["netnsv0-11"].Alias != "bridgehook:other" {
		t.Errorf("setup over another container's veth: %v, veth %+v", err, w.host.Veths["netnsv0-11"])
	}
}

// Every step that fails undoes the steps before it: the network a cold
// setup made, the lease, the ports, the veth.
func TestEveryFailingStepIsUndone(t *testing.T) {
	for _, op := range []string{"ensure", "install", "set record", "allocate", "publish", "attach", "resolv.conf"} {
		t.Run(op, func(t *testing.T) {
			w := newWorld(t, "10.1.0.0/24")
			w.fail[op] = true
			req := Request{ID: "a", Netns: Netns{PID: w.container(10)}, Ports: port.MustParse("8080:80")}
			if op == "resolv.conf" {
				w.n.DNS = []netip.Addr{netip.MustParseAddr("10.0.0.53")}
				req.Rootfs = filepath.Join(t.TempDir(), "no-such-root")
			}
			_, err := w.n.Setup(req)
			if err == nil {
				t.Fatal("setup succeeded")
			}
			if op != "resolv.conf" && !errors.Is(err, fake.ErrInjected) {
				t.Errorf("error %v, want the injected one", err)
			}
			w.store.Close()
			w.assertEmpty()
			if len(w.fw.Ports["netns0"]) != 0 {
				t.Errorf("ports left: %v", w.fw.Ports)
			}
		})
	}
}

// A warm setup that fails leaves the network to the containers on it.
func TestAFailingWarmSetupLeavesTheNetwork(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("a", w.container(10), "")
	w.fail["attach"] = true
	if _, err := w.setup("b", w.container(11), ""); !errors.Is(err, fake.ErrInjected) {
		t.Fatalf("setup: %v", err)
	}
	if ls := w.leases(); len(ls) != 1 || ls[0].ID != "a" || len(w.host.Bridges) != 1 || len(w.fw.Installed) != 1 {
		t.Errorf("after a failed warm setup: leases %v, bridges %v, rules %v", ls, w.host.Bridges, w.fw.Installed)
	}
}

// An undo that fails is not dropped: the error names it.
func TestAFailingUndoIsReported(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.fail["attach"], w.fail["unpublish"] = true, true
	_, err := w.setup("a", w.container(10), "8080:80")
	if !errors.Is(err, fake.ErrInjected) || !strings.Contains(err.Error(), "attach: injected failure (and undoing it: unpublish: injected failure") {
		t.Errorf("error %v, want the attach failure and the unpublish one", err)
	}
}

func TestTeardown(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	if res, err := w.n.Teardown("never"); err != nil || res.Found {
		t.Errorf("teardown of an unknown id: %+v %v", res, err)
	}
	w.mustSetup("live", w.container(10), "8080:80")
	w.mustSetup("exited", w.container(11), "")
	// A running container's veth is deleted at once, its ports withdrawn.
	if res, err := w.n.Teardown("live"); err != nil || !res.Found {
		t.Fatalf("teardown: %+v %v", res, err)
	}
	if _, ok := w.host.Veths["netnsv0-10"]; ok || len(w.fw.Ports["netns0"]) != 0 {
		t.Errorf("after teardown: veths %v, ports %v", w.host.Veths, w.fw.Ports)
	}
	// An exited one's is left to the kernel, its address drained.
	w.kill(11, true)
	if _, err := w.n.Teardown("exited"); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.host.Veths["netnsv0-11"]; !ok {
		t.Error("teardown deleted a dying veth itself")
	}
	if d := w.draining(); len(d) != 1 || d[0].ID != "exited" {
		t.Errorf("draining %+v", d)
	}
	if len(w.leases()) != 0 {
		t.Errorf("leases left: %v", w.leases())
	}
	if res, err := w.n.Teardown("exited"); err != nil || res.Found {
		t.Errorf("second teardown: %+v %v", res, err)
	}
}

// A dual-stack setup gives the container both addresses, and the rules
// both subnets; it quiets the container's IPv6, which an IPv4 network
// leaves alone.
func TestDualStackSetup(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24", "fd19::/64")
	l := w.mustSetup("a", w.container(10), "")
	if l.IP.String() != "10.1.0.2" || l.IP6.String() != "fd19::2" {
		t.Fatalf("lease %+v", l)
	}
	v := w.host.Veths["netnsv0-10"]
	if fmt.Sprint(v.Addrs) != "[10.1.0.2/24 fd19::2/64]" {
		t.Errorf("container addresses %v", v.Addrs)
	}
	if !v.Quiet6 {
		t.Error("the container's IPv6 was not quieted")
	}
	w4 := newWorld(t, "10.1.0.0/24")
	w4.mustSetup("a", w4.container(10), "")
	if w4.host.Veths["netnsv0-10"].Quiet6 {
		t.Error("an IPv4 network quieted the container's IPv6")
	}
	if n := w.fw.Installed["netns0"]; !slices.Equal(n.Subnets, w.n.Subnets) {
		t.Errorf("rules installed for %v", n.Subnets)
	}
}

// The spoof check goes in and out with each container: a setup tells it
// the container's veth, MAC and addresses before the veth exists, a
// teardown takes them back, a setup after a flush brings back every
// container's, gc drops what a lost lease left, and with the check off the
// network has none.
func TestSpoofCheck(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24", "fd19::/64")
	a := w.mustSetup("a", w.container(10), "")
	b := w.mustSetup("b", w.container(11), "")
	s := w.guard.Tables["netns0"][a.Veth]
	if s.MAC.String() != "0a:58:0a:01:00:02" || fmt.Sprint(s.IPs) != "[10.1.0.2 fd19::2]" {
		t.Errorf("a may send as %+v", s)
	}
	if _, err := w.n.Teardown("a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.guard.Senders("netns0"); !slices.Equal(got, []string{b.Veth}) {
		t.Errorf("after a's teardown: %v", got)
	}
	// A flush of the ruleset: the next setup restores b's too.
	delete(w.guard.Tables, "netns0")
	w.gen.N++ // a flush is a commit
	res, err := w.setup("c", w.container(12), "")
	if err != nil || !res.RulesRestored {
		t.Fatalf("setup after a flush: %+v %v", res, err)
	}
	if got, _ := w.guard.Senders("netns0"); len(got) != 2 || !slices.Contains(got, b.Veth) {
		t.Errorf("after the flush and c's setup: %v", got)
	}
	// A lease the store lost: gc drops its entries.
	w.store.Do(func(tx ipam.Tx) error { return tx.Remove(b) })
	w.kill(11, false)
	if report := strings.Join(w.gc(), "\n"); !strings.Contains(report, "dropped the spoof check's entries of veth "+b.Veth) {
		t.Errorf("gc: %s", report)
	}
	if got, _ := w.guard.Senders("netns0"); slices.Contains(got, b.Veth) {
		t.Errorf("b's entries after gc: %v", got)
	}
	// A failing check undoes the setup.
	w.fail["allow"] = true
	if _, err := w.setup("d", w.container(13), ""); !errors.Is(err, fake.ErrInjected) {
		t.Errorf("setup with the check failing: %v", err)
	}
	delete(w.fail, "allow")
	if l, ok := w.lease("d"); ok {
		t.Errorf("the failed setup left %+v", l)
	}
	// Turned off, the network has no check, and its record says so.
	w.n.SpoofCheck = false
	w.mustSetup("e", w.container(14), "")
	if _, ok := w.guard.Tables["netns0"]; ok {
		t.Error("the check is still there with --spoof-check=false")
	}
	if views, _ := List(w.n.Config, false, w.options()...); views[0].SpoofCheck {
		t.Error("ls says the check is on")
	}
}

// Where firewalld runs, a network's bridge is in bridgehook's zone from
// its first setup; warm setups do not ask firewalld, a setup that finds
// its rules gone does, and so do repair and network rm, which takes the
// bridge out.
func TestFirewalldZone(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("a", w.container(10), "")
	if !w.tenant.Zone["netns0"] || w.tenant.Joins != 1 {
		t.Fatalf("after the first setup: zone %v, %d joins", w.tenant.Zone, w.tenant.Joins)
	}
	w.mustSetup("b", w.container(11), "")
	if w.tenant.Joins != 1 {
		t.Errorf("a warm setup asked firewalld: %d joins", w.tenant.Joins)
	}
	w.fw.Reload("netns0")
	delete(w.tenant.Zone, "netns0")
	w.mustSetup("c", w.container(12), "")
	if !w.tenant.Zone["netns0"] {
		t.Error("a setup that found its rules gone did not put the bridge back in the zone")
	}
	w.fail["join"] = true
	if err := w.store.Do(w.n.repair); !errors.Is(err, fake.ErrInjected) {
		t.Errorf("repair with firewalld failing: %v", err)
	}
	delete(w.fail, "join")
	for _, pid := range []int{10, 11, 12} {
		w.kill(pid, false)
	}
	if _, err := w.n.Remove(); err != nil {
		t.Fatal(err)
	}
	w.assertEmpty()
}
