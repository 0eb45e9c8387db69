package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/miekg/dns"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/names"
)

// upstreamAddr is the test upstream resolver's address, on the sandbox's
// loopback: the name server reaches it, and nothing outside the sandbox.
const upstreamAddr = "10.53.0.53"

// upstream runs a resolver in the sandbox that knows one outside name,
// outside.example (192.0.2.10), and answers NXDOMAIN to the rest. It
// counts the queries it got.
func (s *sandbox) upstream(t *testing.T) *int64 {
	t.Helper()
	lo, err := s.nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.nl.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(upstreamAddr), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	var count int64
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		count++
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; strings.EqualFold(q.Name, "outside.example.") && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.ParseIP("192.0.2.10")})
		} else if !strings.EqualFold(q.Name, "outside.example.") {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	var srvs []*dns.Server
	inNetns(t, s.ns, func() {
		pc, err := net.ListenPacket("udp", upstreamAddr+":53")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", upstreamAddr+":53")
		if err != nil {
			t.Fatal(err)
		}
		srvs = []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	})
	for _, srv := range srvs {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	return &count
}

// nameServer is the pid of the sandbox's name server; 0 when none runs.
func (s *sandbox) nameServer() int {
	pid, _ := names.Running(s.stateDir)
	return pid
}

// namedBundle is a bundle (see bundle) of a container with hostname and
// the aliases annotation.
func namedBundle(t *testing.T, sb *sandbox, root, hostname, aliases string, args []string, extra ...string) string {
	t.Helper()
	dir := bundle(t, sb, root, createRuntime, args, extra...)
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	spec.Hostname = hostname
	if aliases != "" {
		spec.Annotations = map[string]string{"bridgehook.aliases": aliases}
	}
	if b, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// lookup runs busybox nslookup of name in container id and returns its
// output and whether it found an address.
func lookup(rt *ociRuntime, id, name string, server ...string) (string, bool) {
	out, err := rt.cmd(append([]string{"exec", id, "nslookup", name}, server...)...).CombinedOutput()
	return string(out), err == nil && strings.Contains(string(out), "Address")
}

// resolves checks that name resolves in container id to want, and only
// to it, for each of want's families.
func resolves(t *testing.T, rt *ociRuntime, id, name string, want ...netip.Addr) {
	t.Helper()
	out, ok := lookup(rt, id, name)
	if !ok {
		t.Errorf("%s: nslookup %s found nothing:\n%s", id, name, out)
		return
	}
	for _, a := range want {
		if !strings.Contains(out, "Address: "+a.String()+"\n") {
			t.Errorf("%s: nslookup %s: want %s in\n%s", id, name, a, out)
		}
	}
}

func TestContainersFindEachOtherByName(t *testing.T) {
	sb := newSandbox(t, "--names", "--subnet", "172.19.0.0/16", "--subnet", "fd19::/64", "--dns", upstreamAddr)
	queries := sb.upstream(t)
	root := rootfs(t)
	runc, crun := newRuntime(t, sb, "runc"), newRuntime(t, sb, "crun")
	sleep := []string{"sleep", "600"}
	runc.start(t, "web", namedBundle(t, sb, root, "webhost", "www, frontend", sleep))
	crun.start(t, "db", namedBundle(t, sb, root, "dbhost", "database", sleep))
	web, _ := sb.lease("web", "172.19.0.0/16,fd19::/64")
	db, _ := sb.lease("db", "172.19.0.0/16,fd19::/64")

	// The server listens on the IPv6 gateway: an address never tentative
	// (no DAD), so it could bind it the moment the bridge had it.
	br, err := sb.nl.LinkByName("netns0")
	if err != nil {
		t.Fatal(err)
	}
	gws, _ := sb.nl.AddrList(br, netlink.FAMILY_V6)
	for _, a := range gws {
		if a.IP.String() == "fd19::1" && (a.Flags&unix.IFA_F_TENTATIVE != 0 || a.Flags&unix.IFA_F_NODAD == 0) {
			t.Errorf("IPv6 gateway flags %#x: tentative, or subject to DAD", a.Flags)
		}
	}
	// It listens on the gateways, UDP and TCP, and on no wildcard (the
	// test's upstream aside).
	ss, err := sb.cmd("ss", "-Hlnut", "sport", "=", "53").Output()
	if err != nil {
		t.Fatal(err)
	}
	var at []string
	for _, line := range strings.Split(strings.TrimSpace(string(ss)), "\n") {
		if f := strings.Fields(line); len(f) >= 5 && !strings.HasPrefix(f[4], upstreamAddr+":") {
			at = append(at, f[0]+" "+f[4])
		}
	}
	slices.Sort(at)
	if want := []string{"tcp 172.19.0.1:53", "tcp [fd19::1]:53", "udp 172.19.0.1:53", "udp [fd19::1]:53"}; !slices.Equal(at, want) {
		t.Errorf("listening on %v, want %v", at, want)
	}
	resolv, err := os.ReadFile(filepath.Join(root, "etc", "resolv.conf"))
	if err != nil || !strings.Contains(string(resolv), "nameserver 172.19.0.1\nnameserver fd19::1\n") {
		t.Fatalf("resolv.conf names not the network's server: %q %v", resolv, err)
	}
	for _, name := range []string{"db", "dbhost", "database", "DataBase"} {
		resolves(t, runc, "web", name, db.IP, db.IP6)
	}
	for _, name := range []string{"web", "webhost", "www", "frontend"} {
		resolves(t, crun, "db", name, web.IP, web.IP6)
	}
	// By name, over each family.
	runc.run(t, "exec", "web", "ping", "-c1", "-W2", "-4", "database")
	crun.run(t, "exec", "db", "ping", "-c1", "-W2", "-6", "www")
	// Reverse: the address names its container.
	if out, _ := lookup(runc, "web", db.IP.String()); !strings.Contains(out, "name = db\n") {
		t.Logf("%s", out)
		t.Errorf("PTR of %s:\n%s", db.IP, out)
	}

	if out, ok := lookup(runc, "web", "nosuch"); ok || !strings.Contains(out, "NXDOMAIN") {
		t.Errorf("nslookup nosuch: want NXDOMAIN:\n%s", out)
	}
	before := *queries
	resolves(t, runc, "web", "outside.example", netip.MustParseAddr("192.0.2.10"))
	if *queries == before {
		t.Errorf("outside.example was not forwarded to the upstream")
	}
}

// ask sends a query for name from the network namespace at nsPath to
// server, port 53, and returns the reply, or the error and how long it
// took to come.
func ask(t *testing.T, nsPath, server, name string, qtype uint16) (m *dns.Msg, took time.Duration, err error) {
	t.Helper()
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 3 * time.Second}
	inNetns(t, ns, func() {
		start := time.Now()
		m, _, err = c.Exchange(q, net.JoinHostPort(server, "53"))
		took = time.Since(start)
	})
	return m, took, err
}

// answers are the addresses of m's answer.
func answers(m *dns.Msg) []string {
	var a []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			a = append(a, rr.A.String())
		case *dns.AAAA:
			a = append(a, rr.AAAA.String())
		}
	}
	return a
}

func pidNetns(pid int) string { return fmt.Sprintf("/proc/%d/ns/net", pid) }

func TestANetworkIsABoundaryForNames(t *testing.T) {
	sb := newSandbox(t)
	a := []string{"--names", "--subnet", "10.61.0.0/24"}
	b := []string{"--names", "--bridge", "br-other", "--subnet", "10.62.0.0/24"}
	pa, pb := sb.container(), sb.container()
	sb.mustHook(setupState("a", pa), a...)
	sb.mustHook(setupState("b", pb), b...)

	if m, _, err := ask(t, pidNetns(pa), "10.61.0.1", "a", dns.TypeA); err != nil || len(answers(m)) != 1 {
		t.Fatalf("a's own network: %v %v", m, err)
	}
	// b asks its own server for a: that network does not know it.
	if m, _, err := ask(t, pidNetns(pb), "10.62.0.1", "a", dns.TypeA); err != nil || len(answers(m)) != 0 {
		t.Errorf("b's server answered a name of a's network: %v %v", m, err)
	}
	// b asks a's server: it is refused, as is recursion.
	for _, name := range []string{"a", "outside.example"} {
		if m, _, err := ask(t, pidNetns(pb), "10.61.0.1", name, dns.TypeA); err != nil || m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
			t.Errorf("b asked a's server for %s: %v %v", name, m, err)
		}
	}
}

func TestAKilledNameServerIsHealedByTheNextSetup(t *testing.T) {
	sb := newSandbox(t, "--names", "--subnet", "10.63.0.0/24", "--dns", upstreamAddr)
	sb.upstream(t)
	pids := sb.containers(3)
	sb.mustHook(setupState("a", pids[0]))
	sb.mustHook(setupState("b", pids[1]))
	first := sb.nameServer()
	if first == 0 {
		t.Fatal("no name server after a setup of a network with names")
	}
	if err := unix.Kill(first, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server's lock let go", func() bool { return sb.nameServer() == 0 })
	// Meanwhile an outside name fails at once: nothing listens, and the
	// kernel says so; the client does not wait out its timeout.
	// (ask waits 3 s for an answer: an error well before is the kernel's.)
	if m, took, err := ask(t, pidNetns(pids[0]), "10.63.0.1", "outside.example", dns.TypeA); err == nil || took >= 2*time.Second {
		t.Errorf("with the server killed: %v %v after %v; want an error at once, not a timeout", m, err, took)
	}

	sb.mustHook(setupState("c", pids[2]))
	if pid := sb.nameServer(); pid == 0 || pid == first {
		t.Fatalf("after the next setup the server is %d (killed: %d)", pid, first)
	}
	for _, name := range []string{"a", "b", "c", "outside.example"} {
		if m, _, err := ask(t, pidNetns(pids[0]), "10.63.0.1", name, dns.TypeA); err != nil || len(answers(m)) != 1 {
			t.Errorf("%s after the heal: %v %v", name, m, err)
		}
	}
}

func TestTheServerEndsWithTheLastContainerOfItsNetworks(t *testing.T) {
	sb := newSandbox(t, "--names")
	a, b := []string{"--subnet", "10.64.0.0/24"}, []string{"--bridge", "br-b", "--subnet", "10.65.0.0/24"}
	pids := sb.containers(2)
	sb.mustHook(setupState("a", pids[0]), a...)
	sb.mustHook(setupState("b", pids[1]), b...)
	server := sb.nameServer()
	sb.mustHook(stopState("a"), a...)
	// One network with names still has a container: it goes on.
	if m, _, err := ask(t, pidNetns(pids[1]), "10.65.0.1", "b", dns.TypeA); err != nil || len(answers(m)) != 1 || sb.nameServer() != server {
		t.Fatalf("b with a gone: %v %v (server %d, was %d)", m, err, sb.nameServer(), server)
	}
	sb.mustHook(stopState("b"), b...)
	waitFor(t, "the name server to end", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", server))
		return sb.nameServer() == 0 && (len(b) == 0 || strings.Contains(string(b), ") Z "))
	})
}

func TestAHundredSetupsAtOnceAllResolve(t *testing.T) {
	sb := newSandbox(t, "--names", "--subnet", "10.66.0.0/24")
	const n = 100
	pids := sb.containers(n)
	errs := make(chan error, n)
	for i, pid := range pids {
		go func() {
			out, err := sb.hook(setupState(fmt.Sprint("c", i), pid))
			if err != nil {
				err = fmt.Errorf("c%d: %v: %s", i, err, out)
			}
			errs <- err
		}()
	}
	for range pids {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i := range pids {
		l, _ := sb.lease(fmt.Sprint("c", i), "10.66.0.0/24")
		m, _, err := ask(t, pidNetns(pids[0]), "10.66.0.1", fmt.Sprint("c", i), dns.TypeA)
		if err != nil || !slices.Equal(answers(m), []string{l.IP.String()}) {
			t.Errorf("c%d: %v %v, want %s", i, m, err, l.IP)
		}
	}
}

// TestCNIPodsFindEachOtherByName: through libcni, as podman's CNI backend
// and CRI runtimes call it, a pod answers to its container id, to
// K8S_POD_NAME and to its aliases, and ADD's result names the server.
func TestCNIPodsFindEachOtherByName(t *testing.T) {
	sb := newSandbox(t)
	w := newCNIWorld(t, sb)
	list := w.conflist(t, "1.0.0", `,"names":true,"subnet":"10.68.0.0/24"`)
	p1, p2 := w.netns(t), w.netns(t)
	rt1 := &libcni.RuntimeConf{ContainerID: "pod1", NetNS: p1, IfName: "eth0",
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "web"}},
		CapabilityArgs: map[string]any{"aliases": map[string][]string{"bhnet": {"www"}}}}
	r1 := w.mustAdd(t, list, rt1)
	if !slices.Equal(r1.DNS.Nameservers, []string{"10.68.0.1"}) {
		t.Errorf("result's dns: %+v", r1.DNS)
	}
	rt2 := &libcni.RuntimeConf{ContainerID: "pod2", NetNS: p2, IfName: "eth0", Args: [][2]string{{"K8S_POD_NAME", "db"}}}
	w.mustAdd(t, list, rt2)
	for _, name := range []string{"pod1", "web", "www"} {
		if m, _, err := ask(t, p2, "10.68.0.1", name, dns.TypeA); err != nil || !slices.Equal(answers(m), []string{"10.68.0.2"}) {
			t.Errorf("%s from pod2: %v %v", name, m, err)
		}
	}
	for _, rt := range []*libcni.RuntimeConf{rt1, rt2} {
		if err := w.del(t, list, rt); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the name server to end", func() bool { return sb.nameServer() == 0 })
}

// TestTheUnitServesWhatIsThereAtBoot runs the dns unit's command where a
// network with names has a container but no server runs, as after a
// reboot with the state kept: it serves the names at once, and ends by
// itself with the last container.
func TestTheUnitServesWhatIsThereAtBoot(t *testing.T) {
	sb := newSandbox(t, "--names", "--subnet", "10.69.0.0/24")
	pid := sb.container()
	sb.mustHook(setupState("a", pid))
	unix.Kill(sb.nameServer(), unix.SIGKILL)
	waitFor(t, "the server's lock let go", func() bool { return sb.nameServer() == 0 })

	unit := sb.bridgehook("", unitCommand(t, "bridgehook-dns.service")...)
	if err := unit.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- unit.Wait() }()
	waitFor(t, "the unit's server to serve", func() bool {
		m, _, err := ask(t, pidNetns(pid), "10.69.0.1", "a", dns.TypeA)
		return err == nil && len(answers(m)) == 1
	})
	sb.mustHook(stopState("a"))
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the unit's server ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		unit.Process.Kill()
		t.Fatal("the unit's server did not end with the last container")
	}
}
