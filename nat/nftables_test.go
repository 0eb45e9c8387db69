package nat

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/port"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// show renders expressions one per line, close to what nft --debug=netlink
// prints, so that a test can say what a rule must hold.
func show(es []expr.Any) []string {
	var out []string
	for _, e := range es {
		var s string
		switch e := e.(type) {
		case *expr.Meta:
			s = fmt.Sprintf("meta load %d => r%d", e.Key, e.Register)
			if e.SourceRegister {
				s = fmt.Sprintf("meta set %d <= r%d", e.Key, e.Register)
			}
		case *expr.Cmp:
			s = fmt.Sprintf("cmp %d r%d %x", e.Op, e.Register, e.Data)
		case *expr.Payload:
			s = fmt.Sprintf("payload %d+%d/%d => r%d", e.Base, e.Offset, e.Len, e.DestRegister)
		case *expr.Bitwise:
			s = fmt.Sprintf("bitwise r%d & %x ^ %x", e.SourceRegister, e.Mask, e.Xor)
		case *expr.Range:
			s = fmt.Sprintf("range r%d %x-%x", e.Register, e.FromData, e.ToData)
		case *expr.Ct:
			s = fmt.Sprintf("ct load %d => r%d", e.Key, e.Register)
		case *expr.Immediate:
			s = fmt.Sprintf("immediate %x => r%d", e.Data, e.Register)
		case *expr.NAT:
			s = fmt.Sprintf("nat %d family %d addr r%d proto r%d", e.Type, e.Family, e.RegAddrMin, e.RegProtoMin)
		case *expr.Masq:
			s = "masquerade"
		case *expr.Fib:
			s = fmt.Sprintf("fib daddr=%v addrtype=%v => r%d", e.FlagDADDR, e.ResultADDRTYPE, e.Register)
		case *expr.Counter:
			s = "counter"
		case *expr.Verdict:
			s = fmt.Sprintf("verdict %d %s", e.Kind, e.Chain)
		default:
			s = fmt.Sprintf("%T", e)
		}
		out = append(out, s)
	}
	return out
}

func ruleOf(t *testing.T, rules []Rule, what string) Rule {
	t.Helper()
	for _, r := range rules {
		if r.What == what {
			return r
		}
	}
	t.Fatalf("no rule %q in %+v", what, rules)
	return Rule{}
}

// Meta keys, ct keys and verdicts as the kernel numbers them.
const (
	nfproto  = 15 // NFT_META_NFPROTO
	l4proto  = 16 // NFT_META_L4PROTO
	iifname  = 6  // NFT_META_IIFNAME
	oifname  = 7  // NFT_META_OIFNAME
	markKey  = 3  // NFT_META_MARK
	eq, neq  = 0, 1
	accept   = 1 // NF_ACCEPT
	ctStatus = 2 // NFT_CT_STATUS
)

var netns0 = fmt.Sprintf("%x", append([]byte("netns0"), make([]byte, 10)...))

func TestNFTablesRendersThePolicy(t *testing.T) {
	masq := testNet.nftRule(ruleOf(t, testNet.Rules(), "masquerade"))
	want := []string{
		fmt.Sprintf("meta load %d => r1", nfproto), "cmp 0 r1 02",
		"payload 1+12/4 => r1", "bitwise r1 & ffff0000 ^ 00000000", "cmp 0 r1 ac130000",
		fmt.Sprintf("meta load %d => r1", oifname), fmt.Sprintf("cmp %d r1 %s", neq, netns0),
		"masquerade",
	}
	if got := show(masq.Exprs); !slices.Equal(got, want) {
		t.Errorf("masquerade:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if masq.Chain.Name != "postrouting" || masq.Table.Name != "bridgehook-netns0" || masq.Table.Family != nftables.TableFamilyINet {
		t.Errorf("masquerade in %s %s", masq.Table.Name, masq.Chain.Name)
	}
	if got := commentOf(masq); got != "bridgehook netns0: masquerade" {
		t.Errorf("comment %q", got)
	}

	// What the forward chain accepts carries the mark iptables' FORWARD
	// accepts; what it drops does not.
	dnated := show(testNet.nftRule(ruleOf(t, testNet.Rules(), "published ports")).Exprs)
	want = []string{
		fmt.Sprintf("meta load %d => r1", oifname), fmt.Sprintf("cmp %d r1 %s", eq, netns0),
		fmt.Sprintf("ct load %d => r1", ctStatus), "bitwise r1 & 20000000 ^ 00000000", "cmp 1 r1 00000000",
		fmt.Sprintf("meta load %d => r1", markKey), "bitwise r1 & fffffffe ^ 00000001", fmt.Sprintf("meta set %d <= r1", markKey),
		fmt.Sprintf("verdict %d ", accept),
	}
	if !slices.Equal(dnated, want) {
		t.Errorf("published ports accept:\n%s\nwant:\n%s", strings.Join(dnated, "\n"), strings.Join(want, "\n"))
	}
	isolated := Network{Bridge: "netns0", Subnets: testNet.Subnets, Isolated: true}
	drop := show(isolated.nftRule(ruleOf(t, isolated.Rules(), "containers isolated")).Exprs)
	if slices.ContainsFunc(drop, func(s string) bool { return strings.HasPrefix(s, "meta set") }) || drop[len(drop)-1] != "verdict 0 " {
		t.Errorf("isolation rule: %q", drop)
	}
	for _, r := range testNet.Rules() {
		if got := commentOf(testNet.nftRule(r)); got != "bridgehook netns0: "+r.What {
			t.Errorf("rule %q has comment %q", r.What, got)
		}
	}
}

// The marks are little-endian on the hosts this runs on, as the kernel
// compares them: the test above spells 0x01000000 as 00000001.
func TestNFTablesMarkIsHostOrder(t *testing.T) {
	got := show(testNet.coexistRule(IPv4).Exprs)
	want := []string{
		fmt.Sprintf("meta load %d => r1", markKey), "bitwise r1 & 00000001 ^ 00000000", "cmp 0 r1 00000001", "counter",
		fmt.Sprintf("verdict %d ", accept),
	}
	if !slices.Equal(got, want) {
		t.Errorf("coexistence rule:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r := testNet.coexistRule(IPv4); r.Table.Name != "filter" || r.Table.Family != nftables.TableFamilyIPv4 || r.Chain.Name != "FORWARD" {
		t.Errorf("coexistence rule in %s %s", r.Table.Name, r.Chain.Name)
	}
}

func TestNFTablesRendersPorts(t *testing.T) {
	pub := Published{ID: "web", IP: netip.MustParseAddr("172.19.0.2"), Ports: port.MustParse("127.0.0.1:9000-9001:7000-7001/udp, 8000-8002:8000-8002")}
	rules, err := testNet.PortRules(pub)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 3 {
		t.Fatalf("%d rules, want 2 for the remapped range and 1 for the same-port range", len(rules))
	}
	got := show(testNet.nftRule(rules[1]).Exprs)
	want := []string{
		fmt.Sprintf("meta load %d => r1", nfproto), "cmp 0 r1 02",
		"payload 1+16/4 => r1", "cmp 0 r1 7f000001",
		fmt.Sprintf("meta load %d => r1", l4proto), "cmp 0 r1 11",
		"payload 2+2/2 => r1", "cmp 0 r1 2329",
		"immediate ac130002 => r1", "immediate 1b59 => r2", "nat 1 family 2 addr r1 proto r2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("remapped udp port:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	same := show(testNet.nftRule(rules[2]).Exprs)
	if !slices.Contains(same, "range r1 1f40-1f42") || !slices.Contains(same, "nat 1 family 2 addr r1 proto r0") {
		t.Errorf("same-port range: %q", same)
	}

	// What the rules say reads back as what was published: how gc finds
	// the ports of a lease the store lost.
	var back []Published
	for _, r := range rules {
		p, ok := testNet.publishedBy(testNet.nftRule(r))
		if !ok {
			t.Fatalf("rule %q does not read back", r.What)
		}
		back = addPublished(back, p)
	}
	if len(back) != 1 || back[0].ID != "web" || back[0].IP != pub.IP || fmt.Sprint(back[0].Ports) != fmt.Sprint(pub.Ports) {
		t.Errorf("read back %+v, want %+v", back, pub)
	}
	// Another network's rule is not this one's.
	other := Network{Bridge: "br1", Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}}
	if _, ok := testNet.publishedBy(other.nftRule(rules[0])); ok {
		t.Error("br1's port rule read back as netns0's")
	}
}

func TestNFTablesChains(t *testing.T) {
	chains := testNet.nftChains()
	fwd := chains[nftForward]
	// Before iptables' FORWARD (priority 0), which looks for the mark.
	if *fwd.Priority >= 0 || *fwd.Hooknum != *nftables.ChainHookForward || fwd.Type != nftables.ChainTypeFilter {
		t.Errorf("forward chain: priority %d hook %d type %s", *fwd.Priority, *fwd.Hooknum, fwd.Type)
	}
	for _, name := range []string{nftPostrouting, nftPrerouting, nftOutput} {
		if c := chains[name]; c.Type != nftables.ChainTypeNAT || *c.Policy != nftables.ChainPolicyAccept {
			t.Errorf("%s: type %s", name, c.Type)
		}
	}
	if p := chains[nftPorts]; p.Hooknum != nil {
		t.Error("the ports chain is a base chain; it must be reached only through fib daddr type local")
	}
	got := show(testNet.toPorts(nftPrerouting).Exprs)
	if want := []string{"fib daddr=true addrtype=true => r1", "cmp 0 r1 02000000", "verdict -3 ports"}; !slices.Equal(got, want) {
		t.Errorf("jump to ports: %q, want %q", got, want)
	}
}

// The life of a network's table in the fake kernel: installed beside
// iptables-nft's FORWARD, checked, ports published and withdrawn, taken
// by a flush, and removed with the rule it put in iptables' chain.
func TestNFTablesLifecycle(t *testing.T) {
	k := &kernel{}
	k.addChain(unix.NFPROTO_IPV4, "filter", "FORWARD") // iptables on nf_tables
	fw := k.firewall()
	defer fw.Close()
	n := testNet
	if ok, err := fw.Verify(n); err != nil || ok {
		t.Fatalf("Verify before Install = %v, %v", ok, err)
	}
	if err := fw.Install(n, nil); err != nil {
		t.Fatal(err)
	}
	if k.tableDeletes != 0 {
		t.Errorf("the first Install deleted %d tables, none there", k.tableDeletes)
	}
	if k.rules(unix.NFPROTO_IPV4, "filter", "FORWARD") != 1 {
		t.Errorf("iptables' FORWARD holds %d rules, want the coexistence rule", k.rules(unix.NFPROTO_IPV4, "filter", "FORWARD"))
	}
	if ok, err := fw.Verify(n); err != nil || !ok {
		t.Fatalf("Verify after Install = %v, %v", ok, err)
	}
	// Installing again replaces the table and the coexistence rule.
	if err := fw.Install(n, nil); err != nil || k.rules(unix.NFPROTO_IPV4, "filter", "FORWARD") != 1 || k.tableDeletes != 1 {
		t.Errorf("a second Install: %v, %d coexistence rules", err, k.rules(unix.NFPROTO_IPV4, "filter", "FORWARD"))
	}
	web := Published{ID: "web", IP: netip.MustParseAddr("172.19.0.2"), Ports: port.MustParse("8080:80, 127.0.0.1:9000:90")}
	if err := fw.Publish(n, web); err != nil {
		t.Fatal(err)
	}
	got, err := fw.Published(n)
	if err != nil || len(got) != 1 || fmt.Sprint(got[0].Ports) != "[8080:80/tcp 127.0.0.1:9000:90/tcp]" || got[0].IP != web.IP {
		t.Errorf("Published = %+v %v", got, err)
	}
	other := Published{ID: "other", IP: netip.MustParseAddr("172.19.0.3"), Ports: port.MustParse("8081:80")}
	fw.Publish(n, other)
	if err := fw.Unpublish(n, web); err != nil {
		t.Fatal(err)
	}
	if got, _ := fw.Published(n); len(got) != 1 || got[0].ID != Label("other") {
		t.Errorf("Published after Unpublish = %+v, want other's alone", got)
	}
	// An iptables reload flushes FORWARD: the check sees it.
	k.table(unix.NFPROTO_IPV4, "filter").rules["FORWARD"] = nil
	if ok, _ := fw.Verify(n); ok {
		t.Error("Verify passes without the coexistence rule")
	}
	fw.Install(n, nil)
	// nft flush ruleset takes the table.
	saved := k.tables
	k.tables = nil
	if ok, _ := fw.Verify(n); ok {
		t.Error("Verify passes without the table")
	}
	if got, err := fw.Published(n); err != nil || len(got) != 0 {
		t.Errorf("Published without the table = %v, %v", got, err)
	}
	if err := fw.Unpublish(n, other); err != nil {
		t.Errorf("Unpublish without the table: %v", err)
	}
	k.tables = saved
	if err := fw.Uninstall(n); err != nil {
		t.Fatal(err)
	}
	if k.table(unix.NFPROTO_INET, n.nftTable().Name) != nil || k.rules(unix.NFPROTO_IPV4, "filter", "FORWARD") != 0 {
		t.Errorf("after Uninstall: tables %d, FORWARD rules %d", len(k.tables), k.rules(unix.NFPROTO_IPV4, "filter", "FORWARD"))
	}
	if err := fw.Uninstall(n); err != nil {
		t.Errorf("a second Uninstall: %v", err)
	}
}

// A transaction the kernel refuses changes nothing, and each change says
// which network it was for.
func TestNFTablesRefusedTransactions(t *testing.T) {
	k := &kernel{}
	fw := k.firewall()
	defer fw.Close()
	n := dualNet
	if err := fw.Install(n, nil); err != nil {
		t.Fatal(err)
	}
	k.failWrite = unix.EPERM
	web := Published{ID: "web", IP: netip.MustParseAddr("172.19.0.2"), IP6: netip.MustParseAddr("fd19::2"), Ports: port.MustParse("8080:80")}
	for name, f := range map[string]func() error{
		"install":   func() error { return fw.Install(n, nil) },
		"publish":   func() error { return fw.Publish(n, web) },
		"uninstall": func() error { return fw.Uninstall(n) },
	} {
		if err := f(); err == nil || !strings.Contains(err.Error(), "netns0") && !strings.Contains(err.Error(), "web") {
			t.Errorf("%s refused: %v", name, err)
		}
	}
	k.failWrite = 0
	if ok, err := fw.Verify(n); !ok || err != nil {
		t.Errorf("the table after refused transactions: %v %v", ok, err)
	}
	// Too many ports to remap is refused before anything is sent.
	writes := k.writes
	if err := fw.Publish(n, Published{ID: "wide", IP: web.IP, Ports: port.MustParse("1000-9000:2000-10000")}); err == nil || k.writes != writes {
		t.Errorf("a remap of 8001 ports: %v, %d transactions", err, k.writes-writes)
	}
	if err := fw.Install(n, []Published{{ID: "wide", IP: web.IP, Ports: port.MustParse("1000-9000:2000-10000")}}); err == nil {
		t.Error("Install with a remap of 8001 ports: nil")
	}
}
