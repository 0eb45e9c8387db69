package names

import (
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/bridgehook/bridgehook/ipam"
)

// fakeSource is a network's table, with what catchUp would find queued.
type fakeSource struct {
	net      Network
	t        *table
	queued   map[string]ipam.Lease
	caughtUp int
}

func (f *fakeSource) config() Network                        { return f.net }
func (f *fakeSource) lookup(n string) ([]netip.Addr, bool)   { return f.t.lookup(n) }
func (f *fakeSource) reverse(ip netip.Addr) ([]string, bool) { return f.t.reverse(ip) }
func (f *fakeSource) catchUp() {
	f.caughtUp++
	for k, l := range f.queued {
		f.t.put(k, entryOf(l))
	}
	f.queued = nil
}

// fakeUpstream answers everything with one A record, and records what it
// was asked.
type fakeUpstream struct {
	asked []string
	first []netip.Addr
}

func (f *fakeUpstream) forward(r *dns.Msg, tcp bool, first []netip.Addr) *dns.Msg {
	f.asked, f.first = append(f.asked, r.Question[0].Name), first
	m := reply(r, dns.RcodeSuccess)
	m.Answer = append(m.Answer, &dns.A{Hdr: header(r.Question[0].Name, dns.TypeA), A: net.IPv4(192, 0, 2, 1)})
	return m
}

func newFixture() (handler, *fakeSource, *fakeUpstream) {
	src := &fakeSource{
		net: Network{Gateways: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("fd00::1/64")},
			Upstreams: addrs("10.9.9.9")},
		t: newTable(),
	}
	src.t.put("10.0.0.2", entryOf(ipam.Lease{ID: "db", IP: netip.MustParseAddr("10.0.0.2"), IP6: netip.MustParseAddr("fd00::2"), Names: []string{"database"}}))
	up := &fakeUpstream{}
	return handler{src: src, fwd: up}, src, up
}

func query(name string, t uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, t)
	return m
}

var client = netip.MustParseAddr("10.0.0.7")

func TestHandlerAnswersTheNetworksNames(t *testing.T) {
	h, _, up := newFixture()
	for _, c := range []struct {
		name string
		t    uint16
		want []string
	}{
		{"db.", dns.TypeA, []string{"10.0.0.2"}},
		{"DataBase.", dns.TypeAAAA, []string{"fd00::2"}},
		{"db.", dns.TypeANY, []string{"10.0.0.2", "fd00::2"}},
		{"db.", dns.TypeMX, nil}, // the name exists: NOERROR, no data
		{"2.0.0.10.in-addr.arpa.", dns.TypePTR, []string{"db.", "database."}},
	} {
		m := h.answer(query(c.name, c.t), client, false)
		if m.Rcode != dns.RcodeSuccess || !m.Authoritative || len(m.Answer) != len(c.want) {
			t.Errorf("%s %s: %v", c.name, dns.TypeToString[c.t], m)
			continue
		}
		for i, rr := range m.Answer {
			var got string
			switch rr := rr.(type) {
			case *dns.A:
				got = rr.A.String()
			case *dns.AAAA:
				got = rr.AAAA.String()
			case *dns.PTR:
				got = rr.Ptr
			}
			if got != c.want[i] || rr.Header().Ttl != 0 || rr.Header().Name != c.name {
				t.Errorf("%s %s: answer %d is %v, want %s with TTL 0", c.name, dns.TypeToString[c.t], i, rr, c.want[i])
			}
		}
	}
	if len(up.asked) != 0 {
		t.Errorf("forwarded %v", up.asked)
	}
}

func TestHandlerCatchesUpBeforeItAnswers(t *testing.T) {
	h, src, up := newFixture()
	src.queued = map[string]ipam.Lease{"10.0.0.5": {ID: "new", IP: netip.MustParseAddr("10.0.0.5")}}
	if m := h.answer(query("new.", dns.TypeA), client, false); len(m.Answer) != 1 || src.caughtUp != 1 {
		t.Errorf("a name set up a moment ago: %v (caught up %d times)", m, src.caughtUp)
	}
	if len(up.asked) != 0 {
		t.Errorf("forwarded %v", up.asked)
	}
}

func TestHandlerForwardsOtherNames(t *testing.T) {
	h, _, up := newFixture()
	m := h.answer(query("example.com.", dns.TypeA), client, false)
	if len(m.Answer) != 1 || len(up.asked) != 1 || up.first[0] != netip.MustParseAddr("10.9.9.9") {
		t.Errorf("example.com: %v, asked %v of %v", m, up.asked, up.first)
	}
	// Other addresses' reverse names are forwarded; the network's own
	// never are.
	h.answer(query("1.2.0.192.in-addr.arpa.", dns.TypePTR), client, false)
	m = h.answer(query("9.0.0.10.in-addr.arpa.", dns.TypePTR), client, false)
	if m.Rcode != dns.RcodeNameError || len(up.asked) != 2 {
		t.Errorf("unknown address of the network: %v, asked %v", m, up.asked)
	}
}

func TestHandlerRefusesOutsiders(t *testing.T) {
	h, _, up := newFixture()
	for _, name := range []string{"db.", "example.com."} {
		m := h.answer(query(name, dns.TypeA), netip.MustParseAddr("10.1.0.7"), false)
		if m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
			t.Errorf("%s from another network: %v", name, m)
		}
	}
	if len(up.asked) != 0 {
		t.Errorf("forwarded for an outsider: %v", up.asked)
	}
}

func TestInternalNetworksForwardNothing(t *testing.T) {
	h, src, up := newFixture()
	src.net.Internal = true
	m := h.answer(query("example.com.", dns.TypeA), client, false)
	if m.Rcode != dns.RcodeNameError || m.RecursionAvailable || len(up.asked) != 0 {
		t.Errorf("internal: %v, asked %v", m, up.asked)
	}
	if m := h.answer(query("db.", dns.TypeA), client, false); len(m.Answer) != 1 {
		t.Errorf("internal network's own name: %v", m)
	}
}

func TestHandlerRefusesWhatIsNoQuery(t *testing.T) {
	h, _, _ := newFixture()
	r := query("db.", dns.TypeA)
	r.Response = true
	if m := h.answer(r, client, false); m != nil {
		t.Errorf("answered a response: %v", m)
	}
	r = query("db.", dns.TypeA)
	r.Opcode = dns.OpcodeUpdate
	if m := h.answer(r, client, false); m.Rcode != dns.RcodeNotImplemented {
		t.Errorf("update: %v", m)
	}
	r = query("db.", dns.TypeA)
	r.Question = append(r.Question, r.Question[0])
	if m := h.answer(r, client, false); m.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %v", m)
	}
}

// FuzzHandler feeds the handler any packet: it must never panic, and what
// it answers must pack.
func FuzzHandler(f *testing.F) {
	for _, q := range []*dns.Msg{query("db.", dns.TypeA), query("2.0.0.10.in-addr.arpa.", dns.TypePTR), query("x.", dns.TypeANY)} {
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := new(dns.Msg)
		if r.Unpack(b) != nil {
			return
		}
		h, _, _ := newFixture()
		if m := h.answer(r, client, false); m != nil {
			if _, err := m.Pack(); err != nil {
				t.Fatalf("reply does not pack: %v\n%v", err, m)
			}
		}
	})
}
