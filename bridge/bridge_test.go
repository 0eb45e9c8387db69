package bridge

import (
	"net/netip"
	"testing"
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
