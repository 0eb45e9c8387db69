package names

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/bridgehook/bridgehook/ipam"
)

func addrs(ss ...string) []netip.Addr {
	var a []netip.Addr
	for _, s := range ss {
		a = append(a, netip.MustParseAddr(s))
	}
	return a
}

func TestTableAnswersNamesAndAddressesBothWays(t *testing.T) {
	tb := newTable()
	tb.put("10.0.0.2", entryOf(ipam.Lease{ID: "abc", IP: netip.MustParseAddr("10.0.0.2"), IP6: netip.MustParseAddr("fd00::2"),
		Names: []string{"Web", "www", "not a name", "www"}}))
	tb.put("10.0.0.3", entryOf(ipam.Lease{ID: "pod1/eth0", IP: netip.MustParseAddr("10.0.0.3"), Names: []string{"www"}}))

	if got, ok := tb.lookup("web."); !ok || !slices.Equal(got, addrs("10.0.0.2", "fd00::2")) {
		t.Errorf("web: %v %v", got, ok)
	}
	// A shared alias answers with every holder's addresses.
	if got, _ := tb.lookup("www."); !slices.Equal(got, addrs("10.0.0.2", "10.0.0.3", "fd00::2")) {
		t.Errorf("www: %v", got)
	}
	// A CNI lease answers to its container id, not to "id/ifname".
	if _, ok := tb.lookup("pod1."); !ok {
		t.Error("pod1 unknown")
	}
	if names, ok := tb.reverse(netip.MustParseAddr("fd00::2")); !ok || !slices.Equal(names, []string{"abc.", "web.", "www."}) {
		t.Errorf("reverse: %v %v", names, ok)
	}

	tb.drop("10.0.0.2")
	if _, ok := tb.lookup("web."); ok {
		t.Error("web answers after its lease went")
	}
	if got, _ := tb.lookup("www."); !slices.Equal(got, addrs("10.0.0.3")) {
		t.Errorf("www after drop: %v", got)
	}
	if _, ok := tb.reverse(netip.MustParseAddr("10.0.0.2")); ok {
		t.Error("reverse answers after drop")
	}
}

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"db": "db.", "DB.": "db.", "my_db": "my_db.", "a.b-c": "a.b-c.",
		"": "", ".": "", "a..b": "", "a b": "", "é": "", string(make([]byte, 64)): "",
	} {
		got, ok := Canonical(in)
		if got != want || ok != (want != "") {
			t.Errorf("Canonical(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
}

func TestParseReverse(t *testing.T) {
	for in, want := range map[string]string{
		"4.3.2.1.in-addr.arpa.": "1.2.3.4",
		"2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.": "fd00::2",
		"4.3.2.in-addr.arpa.":     "",
		"04.3.2.1.in-addr.arpa.":  "",
		"256.3.2.1.in-addr.arpa.": "",
		"x.in-addr.arpa.":         "",
		"db.":                     "",
	} {
		ip, ok := parseReverse(in)
		if ok != (want != "") || ok && ip.String() != want {
			t.Errorf("parseReverse(%q) = %v %v, want %q", in, ip, ok, want)
		}
	}
}
