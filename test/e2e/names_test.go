package e2e

import (
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"

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
