package bridge

import (
	"errors"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestMACFromAddress(t *testing.T) {
	for ip, want := range map[string]string{
		"172.19.0.1":    "0a:58:ac:13:00:01",
		"10.99.255.254": "0a:58:0a:63:ff:fe",
	} {
		mac := MAC(netip.MustParseAddr(ip))
		if mac.String() != want {
			t.Errorf("MAC(%s) = %s, want %s", ip, mac, want)
		}
		// Locally administered, unicast: never a vendor's, never multicast.
		if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
			t.Errorf("MAC(%s) = %s is not a local unicast address", ip, mac)
		}
	}
}

func TestPeerDying(t *testing.T) {
	for _, c := range []struct {
		nsid int
		want bool
	}{
		{-1, false},       // no attribute: the peer is in our own namespace
		{0, false},        // a live peer namespace
		{7, false},        // a live peer namespace
		{1<<32 - 1, true}, // the kernel's -1, "not assigned": dying
	} {
		attrs := netlink.NewLinkAttrs()
		attrs.NetNsID = c.nsid
		if got := peerDying(&netlink.Veth{LinkAttrs: attrs}); got != c.want {
			t.Errorf("peerDying(nsid %d) = %v, want %v", c.nsid, got, c.want)
		}
	}
}

// TestEnterComesBack runs enter into a namespace of the test's own: fn
// runs in there, the handle is bound there, and the thread comes back to
// the namespace it left. A failing fn makes no handle.
func TestEnterComesBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		home, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer home.Close()
		ns, err := netns.New() // a namespace with lo alone, which the thread is in now
		if err != nil {
			t.Error(err)
			return
		}
		defer ns.Close()
		if err := netns.Set(home); err != nil {
			t.Error(err)
			return
		}
		var seen netns.NsHandle
		h, err := enter(ns, func() error {
			seen, err = netns.Get()
			return err
		})
		if err != nil {
			t.Error(err)
			return
		}
		defer h.Close()
		defer seen.Close()
		if !seen.Equal(ns) {
			t.Errorf("fn ran in %s, not in %s", seen, ns)
		}
		now, err := netns.Get()
		if err != nil || !now.Equal(home) {
			t.Errorf("the thread is in %s after enter (%v), not back in %s", now, err, home)
		}
		now.Close()
		links, err := h.LinkList()
		if err != nil || len(links) != 1 || links[0].Attrs().Name != "lo" {
			t.Errorf("the handle sees %d links (%v), want the new namespace's lo alone", len(links), err)
		}
		if h, err := enter(ns, func() error { return os.ErrInvalid }); h != nil || !errors.Is(err, os.ErrInvalid) {
			t.Errorf("enter with a failing fn = %v, %v", h, err)
		}
	}()
	<-done
}
