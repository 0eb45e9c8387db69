package hook

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/input"
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
