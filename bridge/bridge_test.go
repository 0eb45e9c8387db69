package bridge

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
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
