package hook

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/port"
)

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

// A host port a process on the host holds is refused, on its address and
// on the wildcard that covers it, for every port of a range and each of
// the network's families; a first setup so refused leaves nothing. The
// same port on another address, or of the other protocol, is published.
func TestHostPortsInUse(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24", "fd19::/64")
	w.sys.Listen("tcp", netip.MustParseAddr("127.0.0.1"), 8080)
	w.sys.Listen("udp", netip.IPv6Unspecified(), 5353)
	for ports, want := range map[string]string{
		"8080:80":                   "host port 8080/tcp on 0.0.0.0 (every address) is in use",
		"127.0.0.1:8080:80":         "host port 8080/tcp on 127.0.0.1 is in use",
		"8070-8090:8070-8090":       "host port 8080/tcp on 0.0.0.0",
		"5353:53/udp":               "host port 5353/udp on :: (every address) is in use",
		"[2001:db8::1]:5353:53/udp": "host port 5353/udp on 2001:db8::1 is in use",
	} {
		_, err := w.setup("c", w.container(10), ports)
		var in *input.Error
		if !errors.As(err, &in) || in.Field != input.Ports || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", ports, err, want)
		}
		w.assertEmpty()
	}
	for _, ports := range []string{"10.0.0.1:8080:80", "8080:80/udp", "5353:53", "8081:80"} {
		if _, err := w.setup("c", w.container(11), ports); err != nil {
			t.Errorf("%s: %v", ports, err)
		}
		w.n.Teardown("c")
	}
}
