package e2e

// IPv6: dual-stack and IPv6-only networks, end to end, with real runc and
// crun containers, both firewall backends, and a client in a namespace of
// its own on the sandbox's uplink.

import (
	"errors"
	"fmt"
	netpkg "net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/ipam"
)

const (
	hostAddr6   = "2001:db8:77::1"
	clientAddr6 = "2001:db8:77::2"
)

// addClient6 is addClient with IPv6 on the uplink as well.
func (s *sandbox) addClient6() *client {
	s.t.Helper()
	c := s.addClient(1500)
	for _, a := range []struct{ ns, addr string }{{s.name, hostAddr6}, {c.name, clientAddr6}} {
		if out, err := s.cmd("ip", "-n", a.ns, "addr", "add", a.addr+"/64", "dev", "uplink", "nodad").CombinedOutput(); err != nil {
			s.t.Fatalf("ip addr add %s: %v %s", a.addr, err, out)
		}
	}
	return c
}

// sysctl reads a /proc/sys file as the network namespace at nsPath sees it.
func (s *sandbox) sysctl(nsPath, path string) string {
	s.t.Helper()
	out, err := hostRun("nsenter", "--net="+nsPath, "cat", path)
	if err != nil {
		s.t.Fatalf("read %s: %v %s", path, err, out)
	}
	return strings.TrimSpace(out)
}

// ipv6Net is a network the IPv6 tests run on.
type ipv6Net struct {
	name   string
	flags  []string
	subnet string // as sandbox.store takes it
	gw6    string
	dual   bool
}

var ipv6Nets = []ipv6Net{
	{"dual-stack", []string{"--subnet", "172.19.0.0/16", "--subnet", "fd19::/64"}, "172.19.0.0/16,fd19::/64", "fd19::1", true},
	{"ipv6-only", []string{"--subnet", "fd19::/64"}, "fd19::/64", "fd19::1", false},
}

// addr6 is lease l's IPv6 address.
func addr6(l ipam.Lease) netip.Addr { return l.Addr(true) }

func TestIPv6Networks(t *testing.T) {
	for _, net := range ipv6Nets {
		t.Run(net.name, func(t *testing.T) {
			forEachFirewall(t, func(t *testing.T, fw string) { testIPv6Network(t, fw, net) })
		})
	}
}

func testIPv6Network(t *testing.T, fw string, net ipv6Net) {
	sb := newSandbox(t, append([]string{"--firewall", fw}, net.flags...)...)
	cl := sb.addClient6()
	root := rootfs(t)
	if err := os.WriteFile(filepath.Join(root, "www", "index.html"), []byte("hello from a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runc, crun := newRuntime(t, sb, "runc"), newRuntime(t, sb, "crun")
	ba := bundle(t, sb, root, createRuntime, []string{"httpd", "-f", "-p", "80", "-h", "/www"})
	withAnnotations(t, ba, map[string]string{"bridgehook.ports": "8080:80, 9000:9000/udp"})
	pa := runc.start(t, "a", ba)
	udpServer(t, pa, "pong")
	pb := crun.start(t, "b", bundle(t, sb, root, createRuntime, []string{"sleep", "600"}))

	// What the kernel holds, as soon as the runtime has started them.
	ip6 := map[string]string{}
	for id, pid := range map[string]int{"a": pa, "b": pb} {
		l, ok := sb.lease(id, net.subnet)
		if !ok || !addr6(l).IsValid() || l.IP.Is4() != net.dual {
			t.Fatalf("%s: lease %+v %v", id, l, ok)
		}
		ip6[id] = addr6(l).String()
		in := inside(t, pid)
		eth0, err := in.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		addrs, _ := in.AddrList(eth0, netlink.FAMILY_V6)
		found := false
		for _, a := range addrs {
			// None tentative, the link-local one included: the
			// container can use IPv6 the moment it starts.
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				t.Errorf("%s: %s is tentative (flags %#x)", id, a.IPNet, a.Flags)
			}
			if a.IP.Equal(addr6(l).AsSlice()) {
				found = true
				if a.Flags&unix.IFA_F_NODAD == 0 {
					t.Errorf("%s: %s is subject to DAD (flags %#x)", id, a.IPNet, a.Flags)
				}
			}
		}
		if !found {
			t.Fatalf("%s: eth0 has %v, lease says %s", id, addrs, addr6(l))
		}
		v4, _ := in.AddrList(eth0, netlink.FAMILY_V4)
		if net.dual != (len(v4) == 1 && v4[0].IP.Equal(l.IP.AsSlice())) {
			t.Errorf("%s: IPv4 addresses %v on a %s network", id, v4, net.name)
		}
		routes, _ := in.RouteList(nil, netlink.FAMILY_V6)
		if !defaultVia6(routes, net.gw6) {
			t.Errorf("%s: no IPv6 default route via %s: %v", id, net.gw6, routes)
		}
		in.Close()
		nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
		// The container's interface, and those it makes later.
		for _, dev := range []string{"eth0", "default"} {
			for _, key := range []string{"accept_ra", "accept_dad"} {
				if v := sb.sysctl(nsPath, "/proc/sys/net/ipv6/conf/"+dev+"/"+key); v != "0" {
					t.Errorf("%s: %s %s %s, want 0", id, dev, key, v)
				}
			}
		}
	}
	if f := sb.sysctl(sb.path, "/proc/sys/net/ipv6/conf/all/forwarding"); f != "1" {
		t.Errorf("IPv6 forwarding %s", f)
	}
	if ra := sb.sysctl(sb.path, "/proc/sys/net/ipv6/conf/netns0/accept_ra"); ra != "0" {
		t.Errorf("bridge accept_ra %s, want 0", ra)
	}

	// Each other, the gateway, and a client outside through masquerade:
	// the client has no route to the containers' subnet.
	for _, p := range []struct {
		rt       *ociRuntime
		id, dest string
	}{
		{runc, "a", net.gw6}, {runc, "a", ip6["b"]}, {runc, "a", clientAddr6},
		{crun, "b", net.gw6}, {crun, "b", ip6["a"]}, {crun, "b", clientAddr6},
	} {
		if !pingFrom(p.rt, p.id, p.dest) {
			t.Errorf("%s (%s) cannot ping %s", p.id, p.rt.name, p.dest)
		}
	}
	if net.dual && (!pingFrom(runc, "a", clientAddr) || !pingFrom(crun, "b", "172.19.0.1")) {
		t.Error("IPv4 does not work on the dual-stack network")
	}

	// The published port over IPv6: from the client, from the host, and
	// from another container through the host's address (hairpin).
	waitFor(t, "httpd in a", func() bool {
		_, err := httpGet(t, sb.ns, "["+ip6["a"]+"]:80")
		return err == nil
	})
	for _, c := range []struct {
		from string
		cl   *client
		addr string
	}{
		{"a client on the uplink", cl, "[" + hostAddr6 + "]:8080"},
		{"the host, through its own address", nil, "[" + hostAddr6 + "]:8080"},
	} {
		ns := sb.ns
		if c.cl != nil {
			ns = c.cl.ns
		}
		if out, err := httpGet(t, ns, c.addr); err != nil || out != "hello from a\n" {
			t.Errorf("from %s, %s: %v %q", c.from, c.addr, err, out)
		}
	}
	for _, rt := range []struct {
		rt *ociRuntime
		id string
	}{{crun, "b"}, {runc, "a"}} {
		out, err := rt.rt.cmd("exec", rt.id, "wget", "-q", "-O", "-", "http://["+hostAddr6+"]:8080/").CombinedOutput()
		if err != nil || string(out) != "hello from a\n" {
			t.Errorf("from container %s through [%s]:8080 (hairpin): %v %q", rt.id, hostAddr6, err, out)
		}
	}
	if got, err := udpAsk(t, cl.ns, "["+hostAddr6+"]:9000", "ping", 0); err != nil || got != "pong" {
		t.Errorf("udp over IPv6 from the client: %v %q", err, got)
	}
	if net.dual {
		if out, err := httpGet(t, cl.ns, hostAddr+":8080"); err != nil || out != "hello from a\n" {
			t.Errorf("the same port over IPv4: %v %q", err, out)
		}
	}

	// ::1 cannot be DNATed: refused, leaving nothing.
	bc := bundle(t, sb, root, createRuntime, []string{"sleep", "600"})
	withAnnotations(t, bc, map[string]string{"bridgehook.ports": "[::1]:8081:80"})
	out, err := runc.cmd("run", "-d", "--bundle", bc, "c").CombinedOutput()
	runc.cmd("delete", "-f", "c").Run()
	if err == nil || !strings.Contains(string(out), "IPv6 cannot forward loopback traffic") {
		t.Errorf("[::1] port: %v %s", err, out)
	}
	if _, ok := sb.lease("c", net.subnet); ok {
		t.Error("the refused container holds a lease")
	}

	// ls knows both families.
	ls := sb.ls()
	if len(ls) != 1 || !slices.Equal(ls[0].Subnets, strings.Split(net.subnet, ",")) || len(ls[0].Endpoints) != 2 {
		t.Fatalf("ls: %+v", ls)
	}
	for _, ep := range ls[0].Endpoints {
		if got := ep.IP; !net.dual && got != ip6[ep.ID] || net.dual && ep.IP6 != ip6[ep.ID] {
			t.Errorf("ls shows %s at %s %s, want IPv6 %s", ep.ID, ep.IP, ep.IP6, ip6[ep.ID])
		}
	}

	// Teardown takes the IPv6 port rules too.
	runc.run(t, "delete", "-f", "a")
	for _, r := range sb.rules() {
		if strings.Contains(r, "8080") || strings.Contains(r, "9000") {
			t.Errorf("rule left after teardown: %s", r)
		}
	}
	if out, err := httpGet(t, cl.ns, "["+hostAddr6+"]:8080"); err == nil {
		t.Errorf("port still answers over IPv6 after teardown: %q", out)
	}
}

func defaultVia6(routes []netlink.Route, gw string) bool {
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "::/0") && r.Gw.String() == gw {
			return true
		}
	}
	return false
}

// hostRun runs a command from the test's own namespace and returns its
// output.
func hostRun(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func TestIPv6ICCFalseAndInternal(t *testing.T) {
	forEachFirewall(t, func(t *testing.T, fw string) {
		for _, opt := range []string{"--icc=false", "--internal"} {
			t.Run(opt, func(t *testing.T) {
				sb := newSandbox(t, "--firewall", fw, opt, "--subnet", "172.19.0.0/16", "--subnet", "fd19::/64")
				sb.addClient6()
				root := rootfs(t)
				runc := newRuntime(t, sb, "runc")
				for _, id := range []string{"a", "b"} {
					runc.start(t, id, bundle(t, sb, root, createRuntime, []string{"sleep", "600"}))
				}
				if !pingFrom(runc, "a", "fd19::1") {
					t.Error("a cannot reach the gateway over IPv6")
				}
				if got := pingFrom(runc, "a", "fd19::3"); got != (opt == "--internal") {
					t.Errorf("%s: a reaches b over IPv6: %v", opt, got)
				}
				if got := pingFrom(runc, "a", clientAddr6); got != (opt == "--icc=false") {
					t.Errorf("%s: a reaches the client over IPv6: %v", opt, got)
				}
			})
		}
	})
}

// TestConcurrentHundredDualStack: 100 setups at once on a dual-stack
// network hand out 100 distinct addresses of each family, each on its
// container's eth0.
func TestConcurrentHundredDualStack(t *testing.T) {
	const subnet = "10.20.0.0/24,fd20::/64"
	sb := newSandbox(t, "--subnet", "10.20.0.0/24", "--subnet", "fd20::/64")
	n := 100
	pids := sb.containers(n)
	sb.parallel(n, func(i int) string { return setupState(fmt.Sprint("c", i), pids[i]) }, sameFlags)
	ls := sb.leases("netns0", subnet)
	v4, v6 := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for _, l := range ls {
		v4[l.IP], v6[l.IP6] = true, true
	}
	if len(ls) != n || len(v4) != n || len(v6) != n || v6[netip.Addr{}] {
		t.Fatalf("%d leases, %d distinct IPv4, %d distinct IPv6; want %d", len(ls), len(v4), len(v6), n)
	}
	for _, l := range ls {
		in := inside(t, l.PID)
		eth0, err := in.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		addrs, _ := in.AddrList(eth0, netlink.FAMILY_ALL)
		var have []string
		for _, a := range addrs {
			if !a.IP.IsLinkLocalUnicast() {
				have = append(have, a.IP.String())
			}
		}
		if !slices.Equal(have, []string{l.IP.String(), l.IP6.String()}) && !slices.Equal(have, []string{l.IP6.String(), l.IP.String()}) {
			t.Errorf("%s: eth0 has %v, lease says %s %s", l.ID, have, l.IP, l.IP6)
		}
		in.Close()
	}
	sb.parallel(n, func(i int) string { return stopState(fmt.Sprint("c", i)) }, sameFlags)
	if ls := sb.leases("netns0", subnet); len(ls) != 0 {
		t.Errorf("leases left: %v", ls)
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	sb.waitVethsGone()
}

func TestIPv6BadInputLeavesNothingBehind(t *testing.T) {
	sb := newSandbox(t)
	sb.addClient6() // a route to 2001:db8:77::/64 on the uplink
	pid := sb.container()
	with := func(ann string) string {
		return fmt.Sprintf(`{"ociVersion":"1.0.2","id":"x","pid":%d,"status":"creating","annotations":{%s}}`, pid, ann)
	}
	dual := []string{"--subnet", "172.19.0.0/16", "--subnet", "fd19::/64"}
	for _, tt := range []struct {
		name, state string
		args        []string
		want        string
	}{
		{"two IPv6 subnets", with(""), []string{"--subnet", "fd19::/64", "--subnet", "fd20::/64"}, "one IPv4 and one IPv6 network"},
		{"two IPv4 subnets", with(""), []string{"--subnet", "10.0.0.0/24", "--subnet", "10.1.0.0/24"}, "one IPv4 and one IPv6 network"},
		{"three subnets", with(""), append(dual, "--subnet", "10.1.0.0/24"), "one IPv4 and one IPv6 network"},
		{"host bits", with(""), []string{"--subnet", "fd19::5/64"}, "host bits set"},
		{"multicast", with(""), []string{"--subnet", "ff05::/64"}, "multicast"},
		{"link-local", with(""), []string{"--subnet", "fe80::/64"}, "link-local"},
		{"loopback", with(""), []string{"--subnet", "::1/128"}, "loopback"},
		{"too long a prefix", with(""), []string{"--subnet", "fd19::/121"}, "/120 or larger"},
		{"MTU below 1280", with(""), append(dual, "--mtu", "1200"), "IPv6 needs 1280"},
		{"overlaps a host route", with(""), []string{"--subnet", "172.19.0.0/16", "--subnet", "2001:db8:77::/64"}, "overlaps the route to 2001:db8:77::/64 on uplink"},
		{"bad ip6", with(`"bridgehook.ip6":"fd19::zz"`), dual, "is not an IPv6 address"},
		{"IPv4 in ip6", with(`"bridgehook.ip6":"172.19.0.9"`), dual, "is not an IPv6 address"},
		{"ip6 on an IPv4 network", with(`"bridgehook.ip6":"fd19::9"`), nil, "has no IPv6 subnet"},
		{"ip on an IPv6 network", with(`"bridgehook.ip":"172.19.0.9"`), []string{"--subnet", "fd19::/64"}, "has no IPv4 subnet"},
		{"ip6 outside", with(`"bridgehook.ip6":"fd20::9"`), dual, "outside subnet fd19::/64"},
		{"ip6 the gateway", with(`"bridgehook.ip6":"fd19::1"`), dual, "the gateway of fd19::/64"},
		{"port on ::1", with(`"bridgehook.ports":"[::1]:8080:80"`), dual, "IPv6 cannot forward loopback traffic"},
		{"IPv6 port on an IPv4 network", with(`"bridgehook.ports":"[2001:db8::1]:8080:80"`), nil, "has no IPv6 subnet"},
		{"IPv4 port on an IPv6 network", with(`"bridgehook.ports":"10.0.0.1:8080:80"`), []string{"--subnet", "fd19::/64"}, "has no IPv4 subnet"},
	} {
		t.Run(tt.name, func(t *testing.T) { sb.refused(t, tt.state, tt.args, tt.want) })
	}

	// An IPv4 network's bridge cannot become a dual-stack one's: two
	// stores would lease its IPv4 addresses twice.
	sb.mustHook(setupState("v4", pid))
	other := sb.container()
	_, out, code := sb.run(setupState("y", other), dual...)
	if code != 2 || !strings.Contains(out, "bridge netns0 is network [172.19.0.0/16]'s") {
		t.Errorf("dual-stack on an IPv4 network's bridge: exit %d %s", code, out)
	}
	if _, ok := sb.lease("y", "172.19.0.0/16,fd19::/64"); ok {
		t.Error("the refused container holds a lease")
	}
	sb.mustHook(stopState("v4"))
}

// TestIPv6ForwardingKeepsRouterAdvertisements: turning on IPv6 forwarding
// would make the kernel ignore router advertisements on an uplink that
// learns its routes from them; that uplink is switched to accept_ra 2
// first, and nothing else is.
func TestIPv6ForwardingKeepsRouterAdvertisements(t *testing.T) {
	sb := newSandbox(t)
	for _, name := range []string{"wan", "lan"} {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		// A veth pair: no dummy module on these machines.
		if err := sb.nl.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: name + "-peer"}); err != nil {
			t.Fatal(err)
		}
		link, _ := sb.nl.LinkByName(name)
		peer, _ := sb.nl.LinkByName(name + "-peer")
		if err := errors.Join(sb.nl.LinkSetUp(link), sb.nl.LinkSetUp(peer)); err != nil {
			t.Fatal(err)
		}
	}
	wan, _ := sb.nl.LinkByName("wan")
	// A route as the kernel learns it from an advertisement.
	_, dst, _ := netpkg.ParseCIDR("2001:db8:99::/64")
	if err := sb.nl.RouteAdd(&netlink.Route{LinkIndex: wan.Attrs().Index, Dst: dst, Protocol: 9}); err != nil {
		t.Fatal(err)
	}
	// An IPv4-only container's host veth exists already.
	sb.mustHook(setupState("v4", sb.container()), "--bridge", "br4", "--subnet", "10.4.0.0/24")
	conf := "/proc/sys/net/ipv6/conf/"
	for _, f := range []string{"all/forwarding", "wan/accept_ra", "lan/accept_ra"} {
		want := map[string]string{"all/forwarding": "0", "wan/accept_ra": "1", "lan/accept_ra": "1"}[f]
		if got := sb.sysctl(sb.path, conf+f); got != want {
			t.Fatalf("before: %s = %s, want %s", f, got, want)
		}
	}
	veth := sb.veths()[0]
	sb.mustHook(setupState("v6", sb.container()), "--subnet", "172.19.0.0/16", "--subnet", "fd19::/64")
	for f, want := range map[string]string{
		"all/forwarding":    "1",
		"wan/accept_ra":     "2",
		"lan/accept_ra":     "1",
		veth + "/accept_ra": "1",
	} {
		if got := sb.sysctl(sb.path, conf+f); got != want {
			t.Errorf("after: %s = %s, want %s", f, got, want)
		}
	}
}

// TestIPv6Operations: ls, inspect, the self-healing of a warm setup, gc,
// repair and network rm on a dual-stack network, per backend.
func TestIPv6Operations(t *testing.T) { forEachFirewall(t, testIPv6Operations) }

func testIPv6Operations(t *testing.T, fw string) {
	const subnet = "172.19.0.0/16,fd19::/64"
	sb := newSandbox(t, "--firewall", fw, "--subnet", "172.19.0.0/16", "--subnet", "fd19::/64")
	withAnn := func(id string, pid int, ann string) string {
		return fmt.Sprintf(`{"ociVersion":"1.0.2","id":%q,"pid":%d,"status":"creating","annotations":{%s}}`, id, pid, ann)
	}
	a, b := sb.container(), sb.container()
	sb.mustHook(withAnn("a", a, `"bridgehook.ports":"8080:80"`))
	sb.mustHook(withAnn("b", b, `"bridgehook.ip6":"fd19::beef"`))

	nets := sb.ls()
	if len(nets) != 1 || !slices.Equal(nets[0].Gateways, []string{"172.19.0.1", "fd19::1"}) || nets[0].Subnet != "172.19.0.0/16" {
		t.Fatalf("ls: %+v", nets)
	}
	if eps := nets[0].Endpoints; len(eps) != 2 || eps[0].IP6 != "fd19::2" || eps[1].IP6 != "fd19::beef" {
		t.Errorf("endpoints: %+v", eps)
	}
	table, _, _ := sb.run("", "ls")
	for _, want := range []string{"IP6", "fd19::2", "fd19::beef", "172.19.0.0/16 fd19::/64"} {
		if !strings.Contains(table, want) {
			t.Errorf("ls table lacks %q:\n%s", want, table)
		}
	}
	if stdout, _, code := sb.run("", "inspect", "b"); code != 0 || !strings.Contains(stdout, `"ip6": "fd19::beef"`) {
		t.Errorf("inspect b: exit %d %s", code, stdout)
	}
	ports6 := func() (n int) {
		for _, r := range sb.rules() {
			if strings.Contains(r, "8080") && strings.Contains(r, "fd19::2") {
				n++
			}
		}
		return n
	}
	if ports6() != 1 {
		t.Fatalf("IPv6 port rules: %v", sb.rules())
	}

	// A reload of the IPv6 firewall alone: the next setup sees it and
	// puts back exactly what was there, ports included.
	before := sorted(sb.rules())
	reload := [][]string{{"ip6tables", "-F"}, {"ip6tables", "-X"}, {"ip6tables", "-t", "nat", "-F"}, {"ip6tables", "-t", "nat", "-X"}}
	if fw == "nftables" {
		reload = [][]string{{"nft", "flush", "ruleset"}}
	}
	for _, cmd := range reload {
		if out, err := sb.cmd(cmd...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", cmd, err, out)
		}
	}
	if slices.Equal(sorted(sb.rules()), before) {
		t.Fatalf("%v took nothing", reload)
	}
	c := sb.container()
	if out, err := sb.hook(setupState("c", c)); err != nil || !strings.Contains(out, "rules_restored=true") {
		t.Fatalf("setup after the reload: %v %s", err, out)
	}
	if got := sorted(sb.rules()); !slices.Equal(got, before) {
		t.Errorf("rules after the reload and a setup:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}

	// gc: a container gone without a teardown loses both addresses and
	// its IPv6 port rule; a lease the store lost comes back whole.
	kill(t, a)
	st := sb.store("netns0", subnet)
	err := st.DamageLease(netip.MustParseAddr("172.19.0.3"), []byte("{garbage"))
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := sb.run("", "gc")
	if code != 0 || !strings.Contains(stdout, "reclaimed 172.19.0.2 from a") || !strings.Contains(stdout, "rebuilt lease 172.19.0.3 for b") {
		t.Fatalf("gc: exit %d %q %q", code, stdout, stderr)
	}
	if l, ok := sb.lease("b", subnet); !ok || l.IP6.String() != "fd19::beef" {
		t.Errorf("b's lease after gc: %+v %v", l, ok)
	}
	if _, ok := sb.lease("a", subnet); ok || ports6() != 0 {
		t.Errorf("a's lease or IPv6 port rule left after gc: %v", sb.rules())
	}

	// repair after a reload; then network rm takes both families' rules.
	for _, cmd := range reload {
		sb.cmd(cmd...).Run()
	}
	if stdout, stderr, code := sb.run("", "repair"); code != 0 || !strings.Contains(stdout, "(172.19.0.0/16 and fd19::/64)") {
		t.Errorf("repair: exit %d %q %q", code, stdout, stderr)
	}
	before = slices.DeleteFunc(before, func(s string) bool { return strings.Contains(s, "8080") })
	if got := sorted(sb.rules()); !slices.Equal(got, before) {
		t.Errorf("rules after repair:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
	sb.mustHook(stopState("b"))
	sb.mustHook(stopState("c"))
	if stdout, stderr, code := sb.run("", "network", "rm"); code != 0 {
		t.Fatalf("network rm: exit %d %q %q", code, stdout, stderr)
	}
	sb.assertEmpty()
}
