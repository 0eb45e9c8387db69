package ipam

import (
	"net/netip"
	"testing"
)

func TestRangeOf(t *testing.T) {
	for _, tc := range []struct {
		prefix, first, last, gateway, size string
	}{
		{"10.1.0.0/29", "10.1.0.2", "10.1.0.6", "10.1.0.1", "5"},
		{"10.1.0.0/30", "10.1.0.2", "10.1.0.2", "10.1.0.1", "1"},
		{"172.19.0.0/16", "172.19.0.2", "172.19.255.254", "172.19.0.1", "65533"},
		{"0.0.0.0/0", "0.0.0.2", "255.255.255.254", "0.0.0.1", "4294967293"},
		// No broadcast in IPv6: the last address is leasable.
		{"fd19::/126", "fd19::2", "fd19::3", "fd19::1", "2"},
		{"fd19::/64", "fd19::2", "fd19::ffff:ffff:ffff:ffff", "fd19::1", "18446744073709551614"},
	} {
		r, err := RangeOf(netip.MustParsePrefix(tc.prefix))
		if err != nil {
			t.Errorf("%s: %v", tc.prefix, err)
			continue
		}
		if r.First.String() != tc.first || r.Last.String() != tc.last || r.Gateway().String() != tc.gateway || r.Size().String() != tc.size {
			t.Errorf("%s: %s..%s gw %s size %s, want %s..%s gw %s size %s", tc.prefix,
				r.First, r.Last, r.Gateway(), r.Size(), tc.first, tc.last, tc.gateway, tc.size)
		}
	}
	for _, bad := range []string{"10.1.0.0/31", "10.1.0.0/32", "10.1.0.1/24", "fd19::/127"} {
		if _, err := RangeOf(netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("RangeOf(%s) accepted it", bad)
		}
	}
}

func TestRangeNextWrapsOnceFromTheHint(t *testing.T) {
	r, _ := RangeOf(netip.MustParsePrefix("fd19::/125")) // ::2 .. ::7
	taken := map[string]bool{"fd19::6": true, "fd19::7": true, "fd19::2": true}
	isTaken := func(ip netip.Addr) bool { return taken[ip.String()] }
	for hint, want := range map[string]string{
		"fd19::5":  "fd19::3", // past ::6 and ::7, wrap, past ::2
		"fd19::7":  "fd19::3", // the last: start again from the first
		"":         "fd19::3",
		"fd19::3":  "fd19::4",
		"10.0.0.1": "fd19::3", // not in the range: from the first
	} {
		var h netip.Addr
		if hint != "" {
			h = netip.MustParseAddr(hint)
		}
		if got, ok := r.Next(h, isTaken); !ok || got.String() != want {
			t.Errorf("Next(%s) = %s %v, want %s", hint, got, ok, want)
		}
	}
	all := func(netip.Addr) bool { return true }
	if ip, ok := r.Next(netip.Addr{}, all); ok {
		t.Errorf("Next on a full range = %s", ip)
	}
}

func TestRangeCheck(t *testing.T) {
	r, _ := RangeOf(netip.MustParsePrefix("10.1.0.0/24"))
	for ip, ok := range map[string]bool{"10.1.0.0": false, "10.1.0.1": false, "10.1.0.2": true, "10.1.0.254": true, "10.1.0.255": false, "10.1.1.2": false} {
		if err := r.Check(netip.MustParseAddr(ip)); (err == nil) != ok {
			t.Errorf("Check(%s) = %v", ip, err)
		}
	}
}
