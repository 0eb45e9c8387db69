package e2e

// End-to-end tests of published ports and network options, with real
// containers in a sandbox host that has a "remote" client namespace on an
// uplink: 192.168.77.1 (sandbox) <-> 192.168.77.2 (client).

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const (
	hostAddr   = "192.168.77.1"
	clientAddr = "192.168.77.2"
)

// client is a namespace outside the sandbox host, as another machine on
// its network would be.
type client struct {
	name, path string
	ns         netns.NsHandle
}

func (s *sandbox) addClient(mtu int) *client {
	t := s.t
	t.Helper()
	c := &client{name: s.name + "-c"}
	c.path = "/run/netns/" + c.name
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	run("ip", "netns", "add", c.name)
	t.Cleanup(func() { c.ns.Close(); exec.Command("ip", "netns", "del", c.name).Run() })
	run("ip", "-n", s.name, "link", "add", "uplink", "mtu", fmt.Sprint(mtu), "type", "veth", "peer", "name", "uplink", "netns", c.name)
	run("ip", "-n", s.name, "addr", "add", hostAddr+"/24", "dev", "uplink")
	run("ip", "-n", s.name, "link", "set", "uplink", "up")
	run("ip", "-n", c.name, "addr", "add", clientAddr+"/24", "dev", "uplink")
	run("ip", "-n", c.name, "link", "set", "uplink", "up")
	run("ip", "-n", c.name, "link", "set", "lo", "up")
	var err error
	if c.ns, err = netns.GetFromPath(c.path); err != nil {
		t.Fatal(err)
	}
	return c
}

// httpGet fetches / from addr from inside ns and returns the body. (The
// host's busybox wget crashes on -T, and without it may hang.)
func httpGet(t *testing.T, ns netns.NsHandle, addr string) (string, error) {
	var c net.Conn
	var err error
	// The socket belongs to the namespace of the thread that makes it.
	inNetns(t, ns, func() { c, err = net.DialTimeout("tcp", addr, 3*time.Second) })
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", addr); err != nil {
		return "", err
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, ok := strings.Cut(string(resp), "\r\n\r\n")
	if status, _, _ := strings.Cut(string(resp), "\r\n"); !ok || !strings.Contains(status, " 200 ") {
		return "", fmt.Errorf("response %q", resp)
	}
	return body, nil
}

// udpAsk sends msg to addr from inside ns and returns the answer; from
// a fixed source port fromPort, unless 0, so that every ask is one
// conntrack entry.
func udpAsk(t *testing.T, ns netns.NsHandle, addr, msg string, fromPort int) (string, error) {
	var answer string
	var err error
	inNetns(t, ns, func() {
		var c *net.UDPConn
		c, err = net.DialUDP("udp", &net.UDPAddr{Port: fromPort}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 100)
		// UDP may lose the first datagram while ARP resolves: ask again.
		for range 5 {
			c.SetDeadline(time.Now().Add(time.Second))
			if _, err = c.Write([]byte(msg)); err != nil {
				return
			}
			var n int
			if n, err = c.Read(buf); err == nil {
				answer = string(buf[:n])
				return
			}
		}
	})
	return answer, err
}

// udpServer answers every datagram to port 9000 in pid's namespace with
// answer, until the test ends. (busybox has no UDP server.)
func udpServer(t *testing.T, pid int, answer string) {
	t.Helper()
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	udpServerIn(t, ns, 9000, answer)
}

// udpServerIn answers every datagram to port in namespace ns with answer,
// until the test ends.
func udpServerIn(t *testing.T, ns netns.NsHandle, port int, answer string) {
	t.Helper()
	var conn net.PacketConn
	var err error
	inNetns(t, ns, func() { conn, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 100)
		for {
			_, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			conn.WriteTo([]byte(answer), from)
		}
	}()
}

// withAnnotations sets annotations in a bundle's config.json.
func withAnnotations(t *testing.T, bundle string, ann map[string]string) {
	t.Helper()
	editSpec(t, bundle, func(s *specs.Spec) { s.Annotations = ann })
}

func editSpec(t *testing.T, bundle string, edit func(*specs.Spec)) {
	t.Helper()
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	edit(&s)
	if b, err = json.Marshal(s); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPublishedPorts(t *testing.T) { forEachFirewall(t, testPublishedPorts) }

func testPublishedPorts(t *testing.T, fw string) {
	sb := newSandbox(t, "--firewall", fw)
	cl := sb.addClient(1500)
	root := rootfs(t)
	if err := os.WriteFile(filepath.Join(root, "www", "index.html"), []byte("hello from a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runc := newRuntime(t, sb, "runc")
	ba := bundle(t, sb, root, createRuntime, []string{"httpd", "-f", "-p", "80", "-h", "/www"})
	withAnnotations(t, ba, map[string]string{"bridgehook.ports": "8080:80, 9000:9000/udp"})
	pa := runc.start(t, "a", ba)
	udpServer(t, pa, "pong")
	runc.start(t, "b", bundle(t, sb, root, createRuntime, []string{"sleep", "600"}))
	waitFor(t, "httpd in a", func() bool {
		_, err := httpGet(t, sb.ns, "172.19.0.2:80")
		return err == nil
	})

	for _, c := range []struct {
		from string
		ns   netns.NsHandle
		addr string
	}{
		{"a client on the uplink", cl.ns, hostAddr + ":8080"},
		{"the host, through its own address", sb.ns, hostAddr + ":8080"},
		{"the host, through 127.0.0.1", sb.ns, "127.0.0.1:8080"},
	} {
		if out, err := httpGet(t, c.ns, c.addr); err != nil || out != "hello from a\n" {
			t.Errorf("from %s, %s: %v %q", c.from, c.addr, err, out)
		}
	}
	for _, id := range []string{"b", "a"} {
		out, err := runc.cmd("exec", id, "wget", "-q", "-O", "-", "http://"+hostAddr+":8080/").CombinedOutput()
		if err != nil || string(out) != "hello from a\n" {
			t.Errorf("from container %s through the host address (hairpin): %v %q", id, err, out)
		}
	}
	if got, err := udpAsk(t, cl.ns, hostAddr+":9000", "ping", 0); err != nil || strings.TrimSpace(got) != "pong" {
		t.Errorf("udp from the client: %v %q", err, got)
	}

	// The same host port for another container is refused, and leaves
	// nothing behind.
	bc := bundle(t, sb, root, createRuntime, []string{"sleep", "600"})
	withAnnotations(t, bc, map[string]string{"bridgehook.ports": "127.0.0.1:8080:8080"})
	out, err := runc.cmd("run", "-d", "--bundle", bc, "c").CombinedOutput()
	runc.cmd("delete", "-f", "c").Run()
	if err == nil || !strings.Contains(string(out), "host port 127.0.0.1:8080:8080/tcp is already published by container a") {
		t.Errorf("duplicate publish: %v %s", err, out)
	}
	if _, ok := sb.lease("c", "172.19.0.0/16"); ok {
		t.Error("the refused container holds a lease")
	}

	runc.run(t, "delete", "-f", "a")
	for _, r := range sb.rules() {
		if strings.Contains(r, "8080") || strings.Contains(r, "9000") {
			t.Errorf("rule left after teardown: %s", r)
		}
	}
	if out, err := httpGet(t, cl.ns, hostAddr+":8080"); err == nil {
		t.Errorf("port still answers after teardown: %q", out)
	}
}

// pingFrom pings dest from a container and reports whether it answered.
func pingFrom(rt *ociRuntime, id, dest string) bool {
	return rt.cmd("exec", id, "ping", "-c1", "-W1", dest).Run() == nil
}

func TestICCFalse(t *testing.T) { forEachFirewall(t, testICCFalse) }

func testICCFalse(t *testing.T, fw string) {
	sb := newSandbox(t, "--firewall", fw, "--icc=false")
	root := rootfs(t)
	runc := newRuntime(t, sb, "runc")
	for _, id := range []string{"a", "b"} {
		runc.start(t, id, bundle(t, sb, root, createRuntime, []string{"sleep", "600"}))
	}
	if !pingFrom(runc, "a", "172.19.0.1") {
		t.Error("isolated container cannot reach the gateway")
	}
	if pingFrom(runc, "a", "172.19.0.3") || pingFrom(runc, "b", "172.19.0.2") {
		t.Error("isolated containers reach each other")
	}
	if n := sb.ls()[0]; n.ICC || n.Internal || !n.NAT {
		t.Errorf("ls shows icc=%v internal=%v nat=%v for an --icc=false network", n.ICC, n.Internal, n.NAT)
	}
}

func TestInternal(t *testing.T) { forEachFirewall(t, testInternal) }

func testInternal(t *testing.T, fw string) {
	sb := newSandbox(t, "--firewall", fw, "--internal")
	sb.addClient(1500)
	root := rootfs(t)
	runc := newRuntime(t, sb, "runc")
	for _, id := range []string{"a", "b"} {
		runc.start(t, id, bundle(t, sb, root, createRuntime, []string{"sleep", "600"}))
	}
	if !pingFrom(runc, "a", "172.19.0.1") || !pingFrom(runc, "a", "172.19.0.3") {
		t.Error("internal containers cannot reach the gateway or each other")
	}
	if pingFrom(runc, "a", clientAddr) {
		t.Error("internal container reaches the outside")
	}
	for _, r := range sb.rules() {
		if strings.Contains(strings.ToLower(r), "masquerade") && (strings.Contains(r, "! -o netns0") || strings.Contains(r, `oifname != "netns0"`)) {
			t.Errorf("internal network has %s", r)
		}
	}
	// Publishing on an internal network is refused up front.
	b := bundle(t, sb, root, createRuntime, []string{"sleep", "600"})
	withAnnotations(t, b, map[string]string{"bridgehook.ports": "8080:80"})
	if out, err := runc.cmd("run", "-d", "--bundle", b, "p").CombinedOutput(); err == nil || !strings.Contains(string(out), "--internal") {
		t.Errorf("ports on an internal network: %v %s", err, out)
	}
	runc.cmd("delete", "-f", "p").Run()
}

func TestStaticAddress(t *testing.T) {
	sb := newSandbox(t)
	root := rootfs(t)
	runc := newRuntime(t, sb, "runc")
	b := bundle(t, sb, root, createRuntime, []string{"sleep", "600"})
	withAnnotations(t, b, map[string]string{"bridgehook.ip": "172.19.5.77"})
	pid := runc.start(t, "s", b)
	eth0, _ := inside(t, pid).LinkByName("eth0")
	addrs, _ := inside(t, pid).AddrList(eth0, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "172.19.5.77/16" {
		t.Errorf("static address: %v", addrs)
	}
	for ip, want := range map[string]string{
		"172.19.5.77": "already leased", "172.19.0.1": "gateway",
		"172.19.255.255": "broadcast", "10.0.0.1": "outside", "nonsense": "not an IPv4 address",
	} {
		b := bundle(t, sb, root, createRuntime, []string{"sleep", "600"})
		withAnnotations(t, b, map[string]string{"bridgehook.ip": ip})
		out, err := runc.cmd("run", "-d", "--bundle", b, "t").CombinedOutput()
		runc.cmd("delete", "-f", "t").Run()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("static %s: %v, want %q in %s", ip, err, want, out)
		}
	}
}

func TestTwoNetworks(t *testing.T) { forEachFirewall(t, testTwoNetworks) }

func testTwoNetworks(t *testing.T, fw string) {
	sb := newSandbox(t, "--firewall", fw)
	root := rootfs(t)
	runc := newRuntime(t, sb, "runc")
	b := bundle(t, sb, root, createRuntime, []string{"sleep", "600"})
	second := specs.Hook{Path: binary, Args: append(append([]string{binary}, sb.flags...),
		"--bridge", "br1", "--subnet", "10.88.0.0/24", "--iface", "eth1")}
	editSpec(t, b, func(s *specs.Spec) {
		s.Hooks.CreateRuntime = append(s.Hooks.CreateRuntime, second)
		s.Hooks.Poststop = append(s.Hooks.Poststop, second)
	})
	pid := runc.start(t, "two", b)
	in := inside(t, pid)
	for iface, want := range map[string]string{"eth0": "172.19.0.2/16", "eth1": "10.88.0.2/24"} {
		l, err := in.LinkByName(iface)
		if err != nil {
			t.Fatalf("no %s: %v", iface, err)
		}
		addrs, _ := in.AddrList(l, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != want {
			t.Errorf("%s: %v, want %s", iface, addrs, want)
		}
	}
	routes, _ := in.RouteList(nil, netlink.FAMILY_V4)
	defaults := 0
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			defaults++
			if r.Gw.String() != "172.19.0.1" {
				t.Errorf("default route via %s, want the first network's gateway", r.Gw)
			}
		}
	}
	if defaults != 1 {
		t.Errorf("%d default routes", defaults)
	}
	if !pingFrom(runc, "two", "10.88.0.1") || !pingFrom(runc, "two", "172.19.0.1") {
		t.Error("cannot reach both gateways")
	}
	runc.run(t, "delete", "-f", "two")
	if ls := sb.leases("br1", "10.88.0.0/24"); len(ls) != 0 {
		t.Errorf("second network's lease left: %v", ls)
	}
}

func TestNewBridgeTakesTheUplinkMTU(t *testing.T) {
	sb := newSandbox(t)
	sb.addClient(1400)
	if out, err := sb.cmd("ip", "route", "add", "default", "via", clientAddr).CombinedOutput(); err != nil {
		t.Fatalf("default route: %v %s", err, out)
	}
	pid := sb.container()
	sb.mustHook(setupState("m", pid))
	br, _ := sb.nl.LinkByName("netns0")
	eth0, _ := inside(t, pid).LinkByName("eth0")
	if br.Attrs().MTU != 1400 || eth0.Attrs().MTU != 1400 {
		t.Errorf("bridge MTU %d, eth0 MTU %d; want the uplink's 1400", br.Attrs().MTU, eth0.Attrs().MTU)
	}
	// An explicit --mtu wins.
	sb.mustHook(setupState("n", sb.container()), "--bridge", "br9", "--subnet", "10.9.0.0/24", "--mtu", "1280")
	if br9, _ := sb.nl.LinkByName("br9"); br9.Attrs().MTU != 1280 {
		t.Errorf("--mtu 1280 bridge has MTU %d", br9.Attrs().MTU)
	}
}

func TestSubnetOverlappingARouteIsRefused(t *testing.T) {
	sb := newSandbox(t)
	sb.addClient(1500)
	if out, err := sb.cmd("ip", "route", "add", "172.19.128.0/20", "via", clientAddr).CombinedOutput(); err != nil {
		t.Fatalf("route: %v %s", err, out)
	}
	out, err := sb.hook(setupState("o", sb.container()))
	if err == nil || !strings.Contains(out, "overlaps the route to 172.19.128.0/20 on uplink") {
		t.Fatalf("overlapping subnet: %v %q", err, out)
	}
	sb.assertEmpty()
}

func TestResolvConf(t *testing.T) {
	sb := newSandbox(t, "--dns", "10.0.0.53,10.0.0.54")
	root := rootfs(t) // this test's own: the hook writes into it
	runc := newRuntime(t, sb, "runc")
	editableRoot(t, root)
	b := bundle(t, sb, root, createRuntime, []string{"sleep", "600"})
	runc.start(t, "d", b)
	out := runc.run(t, "exec", "d", "cat", "/etc/resolv.conf")
	if !strings.Contains(out, "nameserver 10.0.0.53\nnameserver 10.0.0.54\n") {
		t.Errorf("container resolv.conf:\n%s", out)
	}
}

func editableRoot(t *testing.T, root string) {
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestNonMasqueradeCIDR(t *testing.T) { forEachFirewall(t, testNonMasqueradeCIDR) }

// testNonMasqueradeCIDR: traffic to a --non-masquerade-cidr reaches the
// client with the container's own address (the client routes the
// subnet back, as another node of a cluster would); traffic elsewhere is
// masqueraded as before.
func testNonMasqueradeCIDR(t *testing.T, fw string) {
	sb := newSandbox(t, "--firewall", fw, "--non-masquerade-cidr", clientAddr+"/32")
	cl := sb.addClient(1500)
	if out, err := sb.cmd("ip", "-n", cl.name, "route", "add", "172.19.0.0/16", "via", hostAddr).CombinedOutput(); err != nil {
		t.Fatalf("route back: %v %s", err, out)
	}
	if out, err := sb.cmd("ip", "-n", cl.name, "addr", "add", "192.168.77.3/24", "dev", "uplink").CombinedOutput(); err != nil {
		t.Fatalf("second client address: %v %s", err, out)
	}
	// The client reports the source address of each connection.
	var ln net.Listener
	var err error
	inNetns(t, cl.ns, func() { ln, err = net.Listen("tcp", ":7000") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	seen := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()
	runc := newRuntime(t, sb, "runc")
	runc.start(t, "a", bundle(t, sb, rootfs(t), createRuntime, []string{"sleep", "600"}))
	for _, c := range []struct{ dest, wantSource string }{
		{clientAddr, "172.19.0.2"}, // the exception: its own address
		{"192.168.77.3", hostAddr}, // elsewhere: masqueraded
	} {
		if out, err := runc.cmd("exec", "a", "nc", "-w", "2", c.dest, "7000").CombinedOutput(); err != nil {
			t.Fatalf("connect to %s: %v %s", c.dest, err, out)
		}
		select {
		case src := <-seen:
			if src != c.wantSource {
				t.Errorf("to %s the client saw %s, want %s", c.dest, src, c.wantSource)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the client saw no connection to %s", c.dest)
		}
	}
}
