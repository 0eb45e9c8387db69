package hook

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/internal/fake"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/port"
)

func TestColdThenWarmSetup(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
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

func TestSecondSetupOfAWiredContainerIsANoOp(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	pid := w.container(10)
	first := w.mustSetup("a", pid, "")
	res, err := w.setup("a", pid, "")
	if err != nil || !res.Reused || res.Lease.IP != first.IP || len(w.host.Veths) != 1 {
		t.Errorf("second setup: %+v %v, veths %v", res, err, w.host.Veths)
	}
}

func TestAnIDHeldForALiveNamespaceIsRefused(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("a", w.container(10), "")
	_, err := w.setup("a", w.container(11), "")
	if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), `container id "a" already holds 10.1.0.2`) {
		t.Errorf("setup of a live id again: %v", err)
	}
	if len(w.leases()) != 1 || len(w.host.Veths) != 1 {
		t.Errorf("the refused setup changed things: %v %v", w.leases(), w.host.Veths)
	}
}

func TestAnIDWhoseContainerDiedStartsAfresh(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("a", w.container(10), "8080:80")
	w.kill(10, true) // the veth is still dying
	l := w.mustSetup("a", w.container(11), "8080:80")
	if l.PID != 11 || l.IP.String() != "10.1.0.3" {
		t.Errorf("new lease %+v, want pid 11 on the next address", l)
	}
	if d := w.draining(); len(d) != 1 || d[0].IP.String() != "10.1.0.2" {
		t.Errorf("the old address should drain until its veth goes: %+v", d)
	}
	if p := w.fw.Ports["netns0"]; len(p) != 1 || p[l.IP].ID != "a" {
		t.Errorf("published ports %v, want only the new container's", p)
	}
}

func TestAFullSubnetReclaimsWhatTheDeadHold(t *testing.T) {
	w := newWorld(t, "10.1.0.0/29") // five addresses
	for pid := 10; pid < 15; pid++ {
		w.mustSetup(fmt.Sprint("c", pid), w.container(pid), "")
	}
	_, err := w.setup("full", w.container(20), "")
	if !errors.Is(err, ipam.ErrExhausted) || !strings.Contains(input.Render(err, marked), "larger <subnet>") {
		t.Fatalf("setup on a full subnet: %v", err)
	}
	w.kill(12, true)                    // died without a poststop; the kernel is at its veth
	w.store.Do(func(tx ipam.Tx) error { // and one teardown left a drained address
		l, _, _ := tx.Lookup("c13")
		w.kill(13, false)
		return tx.Drain(l)
	})
	l := w.mustSetup("full", 20, "")
	if l.IP.String() != "10.1.0.4" {
		t.Errorf("got %s, want c12's reclaimed 10.1.0.4", l.IP)
	}
	if d := w.draining(); len(d) != 0 {
		t.Errorf("still draining after the reclaim: %+v", d)
	}
	if _, ok := w.host.Veths["netnsv0-12"]; ok {
		t.Error("the dead container's veth is left")
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

func TestAStaticAddress(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	l, err := w.n.Setup(Request{ID: "a", Netns: Netns{PID: w.container(10)}, IP: netip.MustParseAddr("10.1.0.77")})
	if err != nil || l.Lease.IP.String() != "10.1.0.77" {
		t.Fatalf("static: %+v %v", l, err)
	}
	for ip, want := range map[string]string{"10.1.0.77": "leased", "10.1.0.1": "gateway", "10.2.0.1": "outside"} {
		_, err := w.n.Setup(Request{ID: "b" + ip, Netns: Netns{PID: w.container(11)}, IP: netip.MustParseAddr(ip)})
		if !errors.Is(err, ErrInput) || !strings.HasPrefix(input.Render(err, marked), "<ip>") || !strings.Contains(err.Error(), want) {
			t.Errorf("static %s: %v", ip, err)
		}
	}
	// A drained address asked for by name comes back once its veth is gone.
	w.mustSetup("c", w.container(12), "")
	res, _ := w.n.Teardown("c")
	w.kill(12, true)
	w.n.Teardown("c")
	w.store.Do(func(tx ipam.Tx) error { return tx.Drain(res.Lease) })
	if _, err := w.n.Setup(Request{ID: "d", Netns: Netns{PID: w.container(13)}, IP: res.Lease.IP}); err != nil {
		t.Errorf("asking for a drained address whose veth is gone: %v", err)
	}
}

func TestPortClashes(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("web", w.container(10), "8080:80")
	_, err := w.setup("other", w.container(11), "8080:8080")
	if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "host port 8080:8080/tcp is already published by container web (10.1.0.2 on netnsv0-10)") {
		t.Errorf("clash with a live container: %v", err)
	}
	if len(w.leases()) != 1 || len(w.host.Veths) != 1 || len(w.fw.Ports["netns0"]) != 1 {
		t.Errorf("the refused setup left something: %v %v %v", w.leases(), w.host.Veths, w.fw.Ports)
	}
	// A dead holder's claim goes.
	w.kill(10, false)
	if _, err := w.setup("other", 11, "8080:8080"); err != nil {
		t.Errorf("port held by a dead container: %v", err)
	}
	if p := w.fw.Ports["netns0"]; len(p) != 1 || p[netip.MustParseAddr("10.1.0.3")].ID != "other" {
		t.Errorf("ports %v, want other's alone", p)
	}
}

func TestPortClashAcrossNetworks(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	br1 := w.other("br1", "10.2.0.0/24")
	other := *w.n
	other.Config.Bridge, other.Config.Subnets, other.store = "br1", br1.Subnets(), br1
	if _, err := other.Setup(Request{ID: "there", Netns: Netns{PID: w.container(10)}, Ports: port.MustParse("9000:90")}); err != nil {
		t.Fatal(err)
	}
	br1.Close()
	_, err := w.setup("here", w.container(11), "9000:9000")
	if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "already published by container there (10.2.0.2") {
		t.Errorf("clash across networks: %v", err)
	}
	// The holder on the other network dies: its claim and its rules go.
	w.kill(10, false)
	w.mustSetup("here", 11, "9000:9000")
	if len(w.fw.Ports["br1"]) != 0 {
		t.Errorf("br1 still publishes %v", w.fw.Ports["br1"])
	}
	if ls, _ := br1.Peek(); len(ls) != 0 {
		t.Errorf("br1 leases %v, want the dead holder's gone", ls)
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

func TestGCChoices(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("live", w.container(10), "")
	w.mustSetup("dead", w.container(11), "8080:80")
	w.mustSetup("lost", w.container(12), "9000:90") // the store will lose its lease
	w.mustSetup("gone", w.container(13), "7000:70") // lost, and its container died
	w.kill(11, true)
	w.kill(13, true)
	w.store.Do(func(tx ipam.Tx) error {
		for _, id := range []string{"lost", "gone"} {
			if _, _, err := tx.Release(id); err != nil {
				return err
			}
		}
		return nil
	})
	// A setup killed between its lease and its veth; and one still at it.
	w.store.Do(func(tx ipam.Tx) error {
		_, err := tx.Allocate(ipam.Lease{ID: "killed", PID: w.container(14), NetnsInode: 1014, Veth: "netnsv0-14"})
		return err
	})
	w.store.Close()
	w.store.Do(func(tx ipam.Tx) error {
		_, err := tx.Allocate(ipam.Lease{ID: "busy", PID: w.container(15), NetnsInode: 1015, Veth: "netnsv0-15"})
		return err
	})
	// A veth a killed setup left unlabelled, and one a busy setup has not
	// labelled yet.
	w.host.Veths["netnsv0-16"] = &fake.Veth{State: bridge.Live}
	w.host.Veths["netnsv0-15"] = &fake.Veth{State: bridge.Live, PID: 15}

	report := strings.Join(w.gc(), "\n")
	for _, want := range []string{
		"reclaimed 10.1.0.3 from dead (pid 11 is gone",
		"reclaimed 10.1.0.6 from killed (its setup died before pid 14 got its veth)",
		"freed 1 addresses of containers that are gone, and their veths",
		"rebuilt lease 10.1.0.4 for lost from netnsv0-12",
		"deleted veth netnsv0-13 (no lease)",
		"removed the port rules of gone (10.1.0.5): it has no lease",
		"deleted veth netnsv0-16 (unlabelled: its setup was killed half-way)",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("gc report lacks %q:\n%s", want, report)
		}
	}
	var ids []string
	for _, l := range w.leases() {
		ids = append(ids, l.ID)
		if l.ID == "lost" && fmt.Sprint(l.Ports) != "[9000:90/tcp]" {
			t.Errorf("rebuilt lease of lost has ports %v, want them back from the rules", l.Ports)
		}
	}
	if !slices.Equal(ids, []string{"live", "lost", "busy"}) {
		t.Errorf("leases after gc: %v, want live, lost and the busy setup's", ids)
	}
	var veths []string
	for name := range w.host.Veths {
		veths = append(veths, name)
	}
	slices.Sort(veths)
	if !slices.Equal(veths, []string{"netnsv0-10", "netnsv0-12", "netnsv0-15"}) {
		t.Errorf("veths after gc: %v", veths)
	}
	if p := w.fw.Ports["netns0"]; len(p) != 1 || p[netip.MustParseAddr("10.1.0.4")].ID != "lost" {
		t.Errorf("ports after gc: %v, want lost's alone", p)
	}
	w.store.Close()
	// Once the busy setup is gone too, its lease and half-made veth go.
	if again := w.gc(); len(again) != 2 || !strings.Contains(again[0], "from busy (its setup died") ||
		!strings.Contains(again[1], "deleted veth netnsv0-15 (unlabelled") {
		t.Errorf("gc once the busy setup is gone: %q", again)
	}
}

func TestRemoveAndRepair(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("a", w.container(10), "")
	if _, err := w.n.Remove(); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "in use by a (10.1.0.2, pid 10)") {
		t.Errorf("remove of a network in use: %v", err)
	}
	delete(w.fw.Installed, "netns0") // a firewall reload
	if err := w.store.Do(w.n.repair); err != nil || len(w.fw.Installed) != 1 {
		t.Errorf("repair: %v, rules %v", err, w.fw.Installed)
	}
	w.kill(10, false)
	report, err := w.n.Remove()
	if err != nil || !strings.Contains(strings.Join(report, "\n"), "removed bridge netns0") {
		t.Errorf("remove: %v %q", err, report)
	}
	w.assertEmpty()
}

func TestListAndInspect(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("b", w.container(11), "8080:80")
	w.mustSetup("a", w.container(10), "")
	w.kill(11, false)
	views, err := List(w.n.Config, false, w.options()...)
	if err != nil || len(views) != 1 {
		t.Fatalf("list: %+v %v", views, err)
	}
	v := views[0]
	if v.Bridge != "netns0" || v.Gateway != "10.1.0.1" || v.MTU != 1500 || !v.NAT || !v.ICC || len(v.Endpoints) != 2 {
		t.Fatalf("view %+v", v)
	}
	b, a := v.Endpoints[0], v.Endpoints[1]
	if b.ID != "b" || b.Status != "stale" || !slices.Equal(b.Ports, []string{"8080:80/tcp"}) || a.ID != "a" || a.Status != "running" || a.MAC != "0a:58:0a:01:00:03" {
		t.Errorf("endpoints %+v", v.Endpoints)
	}
}

// The real store on disk, which works without root in a directory of the
// test's: ls and inspect find what a setup leased, and gc and
// network rm refuse an unusable state directory the way the CLI says.
func TestCommandsOverTheDiskStore(t *testing.T) {
	c := Defaults()
	c.StateDir = t.TempDir()
	s, err := ipam.Open(c.StateDir, c.Bridge, c.Subnets...)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Do(func(tx ipam.Tx) error {
		_, err := tx.Allocate(ipam.Lease{ID: "me", PID: os.Getpid(), NetnsInode: must(procs{}.NetnsInode(os.Getpid()))})
		return err
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	views, err := List(c, false)
	if err != nil || len(views) != 1 || len(views[0].Endpoints) != 1 || views[0].Endpoints[0].Status != "running" {
		t.Errorf("ls: %+v %v", views, err)
	}
	if all, err := List(c, true); err != nil || len(all) != 1 {
		t.Errorf("ls --all: %+v %v", all, err)
	}
	ep, err := Inspect(c, "me")
	if err != nil || ep.IP != "172.19.0.2" || ep.Network != "netns0" {
		t.Errorf("inspect: %+v %v", ep, err)
	}
	if _, err := Inspect(c, "nobody"); !errors.Is(err, ErrInput) {
		t.Errorf("inspect of an unknown id: %v", err)
	}
	other := c
	other.Bridge = "unknown"
	if views, err := List(other, false); err != nil || len(views) != 0 {
		t.Errorf("ls of a network never set up: %+v %v", views, err)
	}
	if report, err := GC(other, false); err != nil || len(report) != 0 {
		t.Errorf("gc of a network never set up: %q %v", report, err)
	}
	os.Chmod(c.StateDir, 0o777)
	for name, f := range map[string]func() error{
		"repair":     func() error { _, err := Repair(c, false); return err },
		"network rm": func() error { _, err := RemoveNetwork(c); return err },
		"gc":         func() error { _, err := GC(c, false); return err },
	} {
		if err := f(); !errors.Is(err, ErrInput) || !strings.Contains(input.Render(err, marked), "<state-dir>") {
			t.Errorf("%s with an unsafe state dir: %v", name, err)
		}
	}
}

func TestHintsNameTheFlag(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("x: %w", ipam.ErrExhausted):                      "<subnet>",
		fmt.Errorf("x: %w", ipam.ErrCorrupt):                        "bridgehook gc",
		fmt.Errorf("x: %w", bridge.ErrNotBridge):                    "<bridge>",
		fmt.Errorf("x: %w", bridge.ErrOverlap):                      "<subnet>",
		fmt.Errorf("x: %w", bridge.ErrOtherAddress):                 "<bridge>",
		&os.PathError{Op: "write", Path: "/run/x", Err: errNoSpace}: "<state-dir>",
	} {
		if got := input.Render(hint(err), marked); !strings.Contains(got, want) {
			t.Errorf("hint(%v) = %v, want it to name %s", err, got, want)
		}
	}
	if hint(nil) != nil {
		t.Error("hint(nil) != nil")
	}
}

// marked spells a field <field>, so that tests see which one an error
// names.
func marked(f input.Field) string { return "<" + string(f) + ">" }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

var errNoSpace = syscall.ENOSPC

// A record written before dual-stack (one "subnet", a "gateway") is still
// trusted: an IPv4 network set up by an older bridgehook stays warm.
func TestRecordOfAnOlderVersionIsTrusted(t *testing.T) {
	w := newWorld(t, "172.19.0.0/16")
	w.mustSetup("a", w.container(10), "")
	br := w.host.Bridges["netns0"]
	old := map[string]any{"bridge": "netns0", "subnet": "172.19.0.0/16", "gateway": "172.19.0.1",
		"mtu": br.MTU, "bridge_index": br.Index, "icc": true, "internal": false}
	if err := w.store.Do(func(tx ipam.Tx) error { return tx.SetRecord(old) }); err != nil {
		t.Fatal(err)
	}
	w.mustSetup("b", w.container(11), "")
	if w.host.Ensured != 1 {
		t.Errorf("the older record was not trusted: %d Ensure calls", w.host.Ensured)
	}
}

// A dual-stack setup gives the container both addresses, and the rules
// both subnets.
func TestDualStackSetup(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24", "fd19::/64")
	l := w.mustSetup("a", w.container(10), "")
	if l.IP.String() != "10.1.0.2" || l.IP6.String() != "fd19::2" {
		t.Fatalf("lease %+v", l)
	}
	if v := w.host.Veths["netnsv0-10"]; fmt.Sprint(v.Addrs) != "[10.1.0.2/24 fd19::2/64]" {
		t.Errorf("container addresses %v", v.Addrs)
	}
	if n := w.fw.Installed["netns0"]; !slices.Equal(n.Subnets, w.n.Subnets) {
		t.Errorf("rules installed for %v", n.Subnets)
	}
}

func TestAliasFitsIfAlias(t *testing.T) {
	if a := alias("c1"); a != "bridgehook:c1" {
		t.Errorf("alias(c1) = %q", a)
	}
	long := strings.Repeat("x", MaxID)
	if a := alias(long); len(a) > 255 || a == alias(long[1:]) {
		t.Errorf("alias of a long id: %q", a)
	}
}
