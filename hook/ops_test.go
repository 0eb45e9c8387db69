package hook

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/internal/fake"
	"github.com/bridgehook/bridgehook/ipam"
)

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
	w.gen.N++
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

// repair --all puts every network's rules back, each with its own
// options, and a network given none of the flags need not exist.
func TestRepairAll(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("a", w.container(10), "")
	other := w.n.Config
	other.Bridge, other.Subnets, other.ICC = "br1", []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}, false
	if _, err := Join(other, Request{ID: "b", Netns: Netns{PID: w.container(11)}}, w.options()...); err != nil {
		t.Fatal(err)
	}
	w.fw.Reload("netns0")
	w.fw.Reload("br1")
	none := w.n.Config
	none.Bridge = "nothere"
	report, err := Repair(none, true, w.options()...)
	if err != nil || len(report) != 2 || !strings.Contains(report[1], "br1: bridge and rules in place (10.2.0.0/24)") {
		t.Errorf("repair --all: %q %v", report, err)
	}
	if n, ok := w.fw.Installed["br1"]; !ok || !n.Isolated {
		t.Errorf("br1's rules %+v: want them back, isolated as recorded", n)
	}
	if _, ok := w.fw.Installed["netns0"]; !ok {
		t.Error("netns0's rules are not back")
	}
	// Moving a network to another backend takes its rules out of the old
	// one first; with the fake standing for both, they end up installed.
	moved := w.n.Config
	moved.Firewall = "nftables"
	if _, err := Repair(moved, false, w.options()...); err != nil || !strings.Contains(strings.Join(w.fw.Calls, " "), "uninstall netns0 install netns0") {
		t.Errorf("repair into nftables: %v, calls %v", err, w.fw.Calls)
	}
	w.store.Do(func(tx ipam.Tx) error {
		if rec, ok := readRecord(tx); !ok || rec.Firewall != "nftables" {
			t.Errorf("record after the move: %+v", rec)
		}
		return nil
	})
}
