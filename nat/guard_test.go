package nat

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func sender(veth, mac string, ips ...string) Sender {
	m, _ := net.ParseMAC(mac)
	s := Sender{Veth: veth, MAC: m}
	for _, ip := range ips {
		s.IPs = append(s.IPs, netip.MustParseAddr(ip))
	}
	return s
}

// The spoof check's table in the fake kernel: installed with what each
// container may send as, senders allowed and forbidden one transaction
// each, gone after a flush without that failing a teardown, reinstalled
// over itself, removed.
func TestGuardLifecycle(t *testing.T) {
	k := &kernel{}
	g := &GuardTable{c: k.firewall().c}
	defer g.Close()
	const table = "bridgehook-netns0"
	if ok, err := g.Verify("netns0"); ok || err != nil {
		t.Fatalf("Verify before Install = %v, %v", ok, err)
	}
	a := sender("netnsv0-10", "0a:58:ac:13:00:02", "172.19.0.2", "fd19::2")
	if err := g.Install("netns0", []Sender{a}); err != nil {
		t.Fatal(err)
	}
	if ok, err := g.Verify("netns0"); !ok || err != nil {
		t.Fatalf("Verify after Install = %v, %v", ok, err)
	}
	veth := "6e65746e7376302d3130" + strings.Repeat("00", 6) // "netnsv0-10", 16 bytes
	for set, want := range map[string][]string{
		setPorts: {veth},
		setMACs:  {veth + "0a58ac1300020000"},
		setIP4:   {veth + "ac130002"},
		setIP6:   {veth + "fd190000000000000000000000000002", veth + "fe800000000000000858acfffe130002"},
	} {
		if got := k.elements(unix.NFPROTO_BRIDGE, table, set); !slices.Equal(got, want) {
			t.Errorf("set %s = %v, want %v", set, got, want)
		}
	}
	b := sender("netnsv0-11", "0a:58:ac:13:00:03", "172.19.0.3")
	if err := g.Allow("netns0", b); err != nil {
		t.Fatal(err)
	}
	if got, _ := g.Senders("netns0"); !slices.Equal(got, []string{"netnsv0-10", "netnsv0-11"}) {
		t.Errorf("Senders = %v", got)
	}
	if n := len(k.elements(unix.NFPROTO_BRIDGE, table, setIP6)); n != 2 {
		t.Errorf("an IPv4-only sender added %d IPv6 entries", n-2)
	}
	for range 2 { // the second time, each element is gone already
		if err := g.Forbid("netns0", a); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := g.Senders("netns0"); !slices.Equal(got, []string{"netnsv0-11"}) {
		t.Errorf("Senders after Forbid = %v", got)
	}
	// gc drops what lost leases left, knowing only their veths.
	c := sender("netnsv0-12", "0a:58:ac:13:00:04", "172.19.0.4", "fd19::4")
	g.Allow("netns0", c)
	if err := g.Drop("netns0", []string{"netnsv0-12", "netnsv0-99"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := g.Senders("netns0"); !slices.Equal(got, []string{"netnsv0-11"}) || len(k.elements(unix.NFPROTO_BRIDGE, table, setIP6)) != 0 {
		t.Errorf("after Drop: senders %v, ip6 %v", got, k.elements(unix.NFPROTO_BRIDGE, table, setIP6))
	}
	if err := g.Drop("netns0", []string{"netnsv0-12"}); err != nil {
		t.Errorf("Drop of what is gone: %v", err)
	}
	// Reinstalling over the table replaces it in one transaction.
	writes := k.writes
	if err := g.Install("netns0", []Sender{a, b}); err != nil || k.writes != writes+1 {
		t.Errorf("Install over the table: %v, %d transactions", err, k.writes-writes)
	}
	if got, _ := g.Senders("netns0"); len(got) != 2 {
		t.Errorf("Senders after a reinstall = %v", got)
	}
	// A flush takes the table: Verify sees it, Forbid does not fail.
	k.tables = nil
	if ok, _ := g.Verify("netns0"); ok {
		t.Error("Verify passes without the table")
	}
	if err := g.Forbid("netns0", b); err != nil {
		t.Errorf("Forbid without the table: %v", err)
	}
	if got, err := g.Senders("netns0"); err != nil || len(got) != 0 {
		t.Errorf("Senders without the table = %v, %v", got, err)
	}
	if err := g.Allow("netns0", b); err == nil {
		t.Error("Allow without the table: nil")
	}
	g.Install("netns0", nil)
	if err := g.Uninstall("netns0"); err != nil || k.table(unix.NFPROTO_BRIDGE, table) != nil {
		t.Errorf("Uninstall: %v", err)
	}
	if err := g.Uninstall("netns0"); err != nil {
		t.Errorf("a second Uninstall: %v", err)
	}
	if err := g.Drop("netns0", []string{"netnsv0-11"}); err != nil {
		t.Errorf("Drop without the table: %v", err)
	}
}

func TestLinkLocal(t *testing.T) {
	mac, _ := net.ParseMAC("0a:58:ac:13:00:02")
	if got := LinkLocal(mac).String(); got != "fe80::858:acff:fe13:2" {
		t.Errorf("LinkLocal = %s", got)
	}
}
