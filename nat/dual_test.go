package nat

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/port"
)

var dualNet = Network{Bridge: "netns0", Subnets: []netip.Prefix{
	netip.MustParsePrefix("172.19.0.0/16"), netip.MustParsePrefix("fd19::/64"),
}}

func whats(rules []Rule, fam Family) []string {
	var out []string
	for _, r := range rules {
		if r.in(fam) {
			out = append(out, r.What)
		}
	}
	return out
}

func TestRulesPerFamily(t *testing.T) {
	rules := dualNet.Rules()
	want4 := []string{"between containers", "out of the bridge", "replies into the bridge", "published ports", "masquerade", "hairpin", "localhost"}
	want6 := []string{"between containers", "out of the bridge", "replies into the bridge", "published ports", "masquerade", "hairpin"}
	if got := whats(rules, IPv4); !slices.Equal(got, want4) {
		t.Errorf("IPv4 rules %v, want %v", got, want4)
	}
	// No localhost rule: ::1 cannot be DNATed (no route_localnet).
	if got := whats(rules, IPv6); !slices.Equal(got, want6) {
		t.Errorf("IPv6 rules %v, want %v", got, want6)
	}
	v6only := Network{Bridge: "br6", Subnets: []netip.Prefix{netip.MustParsePrefix("fd20::/64")}}
	for _, r := range v6only.Rules() {
		if r.Family() == IPv4 {
			t.Errorf("IPv6-only network has IPv4 rule %q", r.What)
		}
	}
	if !slices.Equal(v6only.Families(), []Family{IPv6}) || !slices.Equal(dualNet.Families(), []Family{IPv4, IPv6}) {
		t.Errorf("families %v %v", v6only.Families(), dualNet.Families())
	}
}

func TestPortRulesPerFamily(t *testing.T) {
	pub := Published{ID: "web", IP: netip.MustParseAddr("172.19.0.2"), IP6: netip.MustParseAddr("fd19::2")}
	for _, tc := range []struct{ ports, want string }{
		{"8080:80", "172.19.0.2:80 [fd19::2]:80"},
		{"[2001:db8::1]:8080:80", "[fd19::2]:80"},
		{"10.0.0.1:8080:80", "172.19.0.2:80"},
		{"9000-9001:9000-9001/udp", "172.19.0.2:0 [fd19::2]:0"},
	} {
		pub.Ports = port.MustParse(tc.ports)
		rules, err := dualNet.PortRules(pub)
		if err != nil {
			t.Fatalf("%s: %v", tc.ports, err)
		}
		var got []string
		for _, r := range rules {
			got = append(got, r.To.String())
			if r.Dst.IsValid() && r.Dst.Addr().Is6() != r.To.Addr().Is6() {
				t.Errorf("%s: rule for %s sends %s", tc.ports, r.Dst, r.To)
			}
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: DNAT to %v, want %s", tc.ports, got, tc.want)
		}
	}
	// An IPv6 host address for a container with IPv4 alone.
	v4only := Published{ID: "web", IP: netip.MustParseAddr("172.19.0.2"), Ports: port.MustParse("[2001:db8::1]:8080:80")}
	if _, err := testNet.PortRules(v4only); err == nil {
		t.Error("an IPv6 host address was published to an IPv4-only container")
	}
}

func TestNFTablesRendersIPv6(t *testing.T) {
	var masq6 Rule
	for _, r := range dualNet.Rules() {
		if r.What == "masquerade" && r.Family() == IPv6 {
			masq6 = r
		}
	}
	masq := show(dualNet.nftRule(masq6).Exprs)
	want := []string{
		fmt.Sprintf("meta load %d => r1", nfproto), "cmp 0 r1 0a",
		"payload 1+8/16 => r1", "bitwise r1 & ffffffffffffffff0000000000000000 ^ 00000000000000000000000000000000",
		"cmp 0 r1 fd190000000000000000000000000000",
		fmt.Sprintf("meta load %d => r1", oifname), fmt.Sprintf("cmp %d r1 %s", neq, netns0),
		"masquerade",
	}
	if !slices.Equal(masq, want) {
		t.Errorf("IPv6 masquerade:\n%s\nwant:\n%s", strings.Join(masq, "\n"), strings.Join(want, "\n"))
	}
	pub := Published{ID: "web", IP: netip.MustParseAddr("172.19.0.2"), IP6: netip.MustParseAddr("fd19::2"),
		Ports: port.MustParse("[2001:db8::1]:8080:80")}
	rules, err := dualNet.PortRules(pub)
	if err != nil || len(rules) != 1 {
		t.Fatalf("%v %v", rules, err)
	}
	dnat := show(dualNet.nftRule(rules[0]).Exprs)
	for _, w := range []string{
		"cmp 0 r1 0a", "payload 1+24/16 => r1", "cmp 0 r1 20010db8000000000000000000000001",
		"immediate fd190000000000000000000000000002 => r1", "nat 1 family 10 addr r1 proto r2",
	} {
		if !slices.Contains(dnat, w) {
			t.Errorf("IPv6 DNAT lacks %q:\n%s", w, strings.Join(dnat, "\n"))
		}
	}
	if back, ok := dualNet.publishedBy(dualNet.nftRule(rules[0])); !ok || back.IP != pub.IP6 {
		t.Errorf("read back %v %v, want the IPv6 address", back, ok)
	}
}

func TestIPTablesDualStackUsesBothTools(t *testing.T) {
	f4, f6 := &fake{}, &fake{}
	fw := f4.firewall()
	fw.r6 = f6
	if err := fw.Install(dualNet, []Published{{ID: "web", IP: netip.MustParseAddr("172.19.0.2"),
		IP6: netip.MustParseAddr("fd19::2"), Ports: port.MustParse("8080:80")}}); err != nil {
		t.Fatal(err)
	}
	if len(f4.restores) != 1 || len(f6.restores) != 1 {
		t.Fatalf("restores: iptables %d, ip6tables %d", len(f4.restores), len(f6.restores))
	}
	for _, tc := range []struct {
		tool, in   string
		has, hasnt []string
	}{
		{"iptables", f4.restores[0],
			[]string{"-s 172.19.0.0/16 ! -o netns0", "-s 127.0.0.0/8", "--to-destination 172.19.0.2:80", "-i netns0 -o netns0"},
			[]string{"fd19"}},
		{"ip6tables", f6.restores[0],
			[]string{"-s fd19::/64 ! -o netns0", "--to-destination [fd19::2]:80", "-i netns0 -o netns0"},
			[]string{"172.19", "127.0.0.0"}},
	} {
		for _, w := range tc.has {
			if !strings.Contains(tc.in, w) {
				t.Errorf("%s lacks %q:\n%s", tc.tool, w, tc.in)
			}
		}
		for _, w := range tc.hasnt {
			if strings.Contains(tc.in, w) {
				t.Errorf("%s has %q:\n%s", tc.tool, w, tc.in)
			}
		}
	}
	if !slices.Contains(f4.sysctls, ipForward) || !slices.Contains(f4.sysctls, ip6Forward) {
		t.Errorf("sysctls %v: want both forwardings", f4.sysctls)
	}
	// Read back: an entry per container address, from both tools.
	got, err := fw.Published(dualNet)
	if err != nil || len(got) != 2 || got[0].IP.String() != "172.19.0.2" || got[1].IP.String() != "fd19::2" {
		t.Errorf("Published() = %v %v", got, err)
	}
}

func TestNonMasqueradeReturnsBeforeTheMasquerade(t *testing.T) {
	n := dualNet
	n.NonMasquerade = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd44::/48")}
	var order []string
	for _, r := range n.Rules() {
		if r.Chain == Masquerade {
			order = append(order, r.What)
		}
	}
	want := []string{"not masqueraded to 10.244.0.0/16", "not masqueraded to fd44::/48", "masquerade", "hairpin", "masquerade", "hairpin", "localhost"}
	if !slices.Equal(order, want) {
		t.Errorf("masquerade chain %v, want %v", order, want)
	}
	ipt := n.iptablesOf(IPv4, n.Rules())
	found := false
	for _, r := range ipt {
		spec := strings.Join(r.Spec, " ")
		found = found || spec == `-d 10.244.0.0/16 ! -o netns0 -m comment --comment bridgehook netns0: not masqueraded to 10.244.0.0/16 -j RETURN`
		if strings.Contains(spec, "fd44::") {
			t.Errorf("IPv6 exception in iptables: %s", spec)
		}
	}
	if !found {
		t.Errorf("no IPv4 RETURN rule in %v", ipt)
	}
	ret := show(n.nftRule(ruleOf(t, n.Rules(), "not masqueraded to fd44::/48")).Exprs)
	if ret[len(ret)-1] != fmt.Sprintf("verdict %d ", -5) || !slices.Contains(ret, "payload 1+24/16 => r1") {
		t.Errorf("IPv6 exception in nftables:\n%s", strings.Join(ret, "\n"))
	}
}
