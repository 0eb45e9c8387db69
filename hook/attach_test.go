package hook

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/port"
)

// pod binds a fake container's namespace at a path, as a CNI runtime
// gives it, and returns the request of attachment id.
func (w *fakes) pod(id, path string, pid int) Request {
	w.sys.Paths[path] = w.container(pid)
	return Request{ID: id, Netns: Netns{Path: path}}
}

// The entry points a CNI face calls, over the fakes: an attachment by
// namespace path joins, checks, is collected and leaves.
func TestAttachmentByPath(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24", "fd19::/64")
	c, opts := w.n.Config, w.options()
	req := w.pod("pod1/eth0", "/run/netns/pod1", 20)
	res, err := Join(c, req, opts...)
	if err != nil {
		t.Fatal(err)
	}
	l := res.Lease
	if l.Veth != cniVethName("pod1/eth0") || !isCNIVeth(l.Veth) || l.Netns != "/run/netns/pod1" || l.PID != 0 {
		t.Errorf("lease %+v", l)
	}
	if res, err := Join(c, req, opts...); err != nil || !res.Reused {
		t.Errorf("a second ADD: %+v %v", res, err)
	}
	addrs := []netip.Prefix{netip.MustParsePrefix("10.1.0.2/24"), netip.MustParsePrefix("fd19::2/64")}
	gws := []netip.Addr{netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("fd19::1")}
	if _, err := Check(c, "pod1/eth0", addrs, gws, opts...); err != nil {
		t.Errorf("check: %v", err)
	}
	if err := Status(c, opts...); err != nil {
		t.Errorf("status: %v", err)
	}

	// What CHECK finds wrong, one thing at a time.
	for name, tc := range map[string]struct {
		id    string
		addrs []netip.Prefix
		gws   []netip.Addr
		want  string
	}{
		"unknown":       {"pod9/eth0", addrs, gws, "has no lease"},
		"other address": {"pod1/eth0", addrs[:1], gws, "holds [10.1.0.2/24 fd19::2/64]"},
		"no route":      {"pod1/eth0", addrs, append(gws, netip.MustParseAddr("fd20::1")), ""},
	} {
		_, err := Check(c, tc.id, tc.addrs, tc.gws, opts...)
		if name == "no route" {
			if err != nil {
				t.Errorf("%s: %v", name, err) // one route per family is enough
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	v := w.host.Veths[l.Veth]
	v.Gateways = v.Gateways[:1]
	if _, err := Check(c, "pod1/eth0", addrs, gws, opts...); err == nil || !strings.Contains(err.Error(), "no default route") {
		t.Errorf("check without an IPv6 route: %v", err)
	}
	v.Gateways = gws
	v.Addrs = addrs[:1]
	if _, err := Check(c, "pod1/eth0", addrs, gws, opts...); err == nil || !strings.Contains(err.Error(), "lacks") {
		t.Errorf("check without its IPv6 address: %v", err)
	}
	v.Addrs = addrs
	w.fw.Reload("netns0")
	if _, err := Check(c, "pod1/eth0", addrs, gws, opts...); err == nil || !strings.Contains(err.Error(), "rules of network netns0 are gone") {
		t.Errorf("check after a reload: %v", err)
	}
	w.host.Kill(20, false)
	if _, err := Check(c, "pod1/eth0", addrs, gws, opts...); err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Errorf("check of a pod whose veth went: %v", err)
	}

	// GC keeps what the runtime lists as valid, and releases the rest.
	w.store.Close()
	keep := w.pod("pod2/eth0", "/run/netns/pod2", 21)
	if _, err := Join(c, keep, opts...); err != nil {
		t.Fatal(err)
	}
	w.store.Close()
	drop := w.pod("pod3/eth0", "/run/netns/pod3", 22)
	if _, err := Join(c, drop, opts...); err != nil {
		t.Fatal(err)
	}
	w.store.Close()
	report, err := Collect(c, func(id string) bool { return id == "pod2/eth0" }, opts...)
	if err != nil || !strings.Contains(strings.Join(report, "\n"), "of pod3/eth0 (not a valid attachment)") {
		t.Errorf("gc: %q %v", report, err)
	}
	ids := []string{}
	for _, l := range w.leases() {
		ids = append(ids, l.ID)
	}
	if strings.Join(ids, " ") != "pod2/eth0" {
		t.Errorf("leases after gc: %v", ids)
	}
	if res, err := Leave(c, "pod2/eth0", opts...); err != nil || !res.Found {
		t.Errorf("DEL: %+v %v", res, err)
	}
	if res, err := Leave(c, "pod2/eth0", opts...); err != nil || res.Found {
		t.Errorf("a second DEL: %+v %v", res, err)
	}
	if _, err := Leave(c, "../x", opts...); !errors.Is(err, ErrInput) {
		t.Errorf("DEL of a bad id: %v", err)
	}
}

// A namespace path that holds no namespace is refused before anything is
// touched, and so is a store or firewall that cannot be used.
func TestAttachmentRefusals(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	c, opts := w.n.Config, w.options()
	_, err := Join(c, Request{ID: "p/eth0", Netns: Netns{Path: "/nowhere"}}, opts...)
	var in *input.Error
	if !errors.As(err, &in) || in.Field != input.Netns {
		t.Errorf("a path that is no namespace: %v", err)
	}
	w.assertEmpty()
	w.fail["published"] = true
	if err := Status(c, opts...); err == nil || !strings.Contains(err.Error(), "firewall iptables") {
		t.Errorf("status with a firewall that fails: %v", err)
	}
	delete(w.fail, "published")
	if err := Status(Config{}, opts...); !errors.Is(err, ErrInput) {
		t.Errorf("status of no network: %v", err)
	}
}

// Request.Check refuses what the network cannot give, whichever face
// built the request, naming the setting.
func TestRequestCheck(t *testing.T) {
	v4 := Defaults()
	v6 := Defaults()
	v6.Subnets = []netip.Prefix{netip.MustParsePrefix("fd19::/64")}
	internal := Defaults()
	internal.Internal = true
	ok := Request{ID: "a", Netns: Netns{PID: 5}}
	with := func(f func(*Request)) Request { r := ok; f(&r); return r }
	for name, tc := range map[string]struct {
		c     Config
		req   Request
		field input.Field
	}{
		"bad id":          {v4, with(func(r *Request) { r.ID = "a b" }), input.ID},
		"bad CNI ifname":  {v4, with(func(r *Request) { r.ID = "a/b c" }), input.Iface},
		"no namespace":    {v4, with(func(r *Request) { r.Netns = Netns{} }), input.Netns},
		"two namespaces":  {v4, with(func(r *Request) { r.Netns.Path = "/x" }), input.Netns},
		"internal ports":  {internal, with(func(r *Request) { r.Ports = port.MustParse("80:80") }), input.Ports},
		"IPv6 host addr":  {v4, with(func(r *Request) { r.Ports = port.MustParse("[2001:db8::1]:80:80") }), input.Ports},
		"IPv4 on IPv6":    {v6, with(func(r *Request) { r.IP = netip.MustParseAddr("10.0.0.1") }), input.IP},
		"IPv6 as IP":      {v4, with(func(r *Request) { r.IP = netip.MustParseAddr("fd19::1") }), input.IP},
		"IPv6 on IPv4":    {v4, with(func(r *Request) { r.IP6 = netip.MustParseAddr("fd19::1") }), input.IP6},
		"multicast MAC":   {v4, with(func(r *Request) { r.MAC = []byte{1, 0, 0x5e, 0, 0, 1} }), input.MAC},
		"short MAC":       {v4, with(func(r *Request) { r.MAC = []byte{2, 0} }), input.MAC},
		"long id":         {v4, with(func(r *Request) { r.ID = strings.Repeat("a", MaxID+1) }), input.ID},
		"dot id":          {v4, with(func(r *Request) { r.ID = ".." }), input.ID},
		"empty id":        {v4, with(func(r *Request) { r.ID = "" }), input.ID},
		"negative pid":    {v4, with(func(r *Request) { r.Netns.PID = -1 }), input.Netns},
		"long CNI ifname": {v4, with(func(r *Request) { r.ID = "a/" + strings.Repeat("e", 16) }), input.Iface},
	} {
		err := tc.req.Check(tc.c)
		var in *input.Error
		if !errors.As(err, &in) || in.Field != tc.field || !errors.Is(err, input.Err) {
			t.Errorf("%s: %v, want bad %s", name, err, tc.field)
		}
	}
	if err := ok.Check(v4); err != nil {
		t.Errorf("a good request: %v", err)
	}
	if s := (Netns{Path: "/run/netns/x"}).String() + " " + (Netns{PID: 7}).String(); s != "/run/netns/x pid 7" {
		t.Errorf("Netns.String: %s", s)
	}
}

// The namespaces of /proc as hook opens them, which needs no root for the
// test's own: its own namespace is refused, by pid and by path, and a
// file that is no namespace is named as such.
func TestProcsRefuseTheHooksOwnNamespace(t *testing.T) {
	var p procs
	if _, _, err := p.Netns(os.Getpid()); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "the hook's own network namespace") {
		t.Errorf("own pid: %v", err)
	}
	if _, _, err := p.Netns(1 << 30); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "no such process") {
		t.Errorf("no such pid: %v", err)
	}
	if _, _, err := p.NetnsAt("/proc/self/ns/net"); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "plugin's own") {
		t.Errorf("own path: %v", err)
	}
	if _, _, err := p.NetnsAt(os.DevNull); !strings.Contains(err.Error(), "not a network namespace") {
		t.Errorf("/dev/null: %v", err)
	}
	if _, _, err := p.NetnsAt("/nonexistent"); !strings.Contains(err.Error(), "not a network namespace") {
		t.Errorf("a missing path: %v", err)
	}
	if ino, err := p.PathInode("/proc/self/ns/net"); err != nil || ino == 0 {
		t.Errorf("PathInode: %d %v", ino, err)
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

// A bridge is one network's: another network asking for it is told how
// to remove the first, and the steps of a setup are timed for --debug.
func TestABridgeIsOneNetworks(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("a", w.container(10), "")
	dual := w.n.Config
	if err := dual.ParseSubnets([]string{"fd19::/64", "10.1.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	var debug strings.Builder
	opts := append(w.options(), WithDebug(slog.New(slog.NewTextHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	_, err := Join(dual, Request{ID: "b", Netns: Netns{PID: w.container(11)}}, opts...)
	var in *input.Error
	if !errors.As(err, &in) || in.Run != "bridgehook --bridge netns0 --subnet 10.1.0.0/24 network rm" ||
		!strings.Contains(input.Render(err, marked), "use another <bridge>") {
		t.Errorf("a dual-stack network on an IPv4 network's bridge: %v", err)
	}
	if !strings.Contains(debug.String(), `msg="open netns"`) {
		t.Errorf("--debug logged %q", debug.String())
	}
	if err := dual.ParseSubnets([]string{"10.1.0.0/33"}); !errors.Is(err, ErrInput) {
		t.Errorf("ParseSubnets of a bad subnet: %v", err)
	}
}
