package names

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

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

func (f *fakeUpstream) forward(r *dnsmessage.Message, tcp bool, first []netip.Addr) *dnsmessage.Message {
	f.asked, f.first = append(f.asked, r.Questions[0].Name.String()), first
	m := reply(r, dnsmessage.RCodeSuccess)
	m.Answers = append(m.Answers, answer(r.Questions[0], dnsmessage.TypeA, &dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}))
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

func query(name string, t dnsmessage.Type) *dnsmessage.Message {
	return &dnsmessage.Message{
		Header:    dnsmessage.Header{ID: uint16(rand.Uint32()), RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: t, Class: dnsmessage.ClassINET}},
	}
}

// data is what m's answers say: addresses and names.
func data(m *dnsmessage.Message) []string {
	var out []string
	for _, rr := range m.Answers {
		switch b := rr.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(b.A).String())
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(b.AAAA).String())
		case *dnsmessage.PTRResource:
			out = append(out, b.PTR.String())
		default:
			out = append(out, rr.Body.GoString())
		}
	}
	return out
}

var client = netip.MustParseAddr("10.0.0.7")

func TestHandlerAnswersTheNetworksNames(t *testing.T) {
	h, _, up := newFixture()
	for _, c := range []struct {
		name string
		t    dnsmessage.Type
		want []string
	}{
		{"db.", dnsmessage.TypeA, []string{"10.0.0.2"}},
		{"DataBase.", dnsmessage.TypeAAAA, []string{"fd00::2"}},
		{"db.", dnsmessage.TypeALL, []string{"10.0.0.2", "fd00::2"}},
		{"db.", dnsmessage.TypeMX, nil}, // the name exists: NOERROR, no data
		{"2.0.0.10.in-addr.arpa.", dnsmessage.TypePTR, []string{"db.", "database."}},
	} {
		m := h.answer(query(c.name, c.t), client, false)
		if m.RCode != dnsmessage.RCodeSuccess || !m.Authoritative || !slices.Equal(data(m), c.want) {
			t.Errorf("%s %v: %v, want %v", c.name, c.t, data(m), c.want)
			continue
		}
		for i, rr := range m.Answers {
			if rr.Header.TTL != 0 || rr.Header.Name.String() != c.name {
				t.Errorf("%s %v: answer %d is %v, want TTL 0 and the name asked", c.name, c.t, i, rr.Header)
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
	if m := h.answer(query("new.", dnsmessage.TypeA), client, false); len(m.Answers) != 1 || src.caughtUp != 1 {
		t.Errorf("a name set up a moment ago: %v (caught up %d times)", m, src.caughtUp)
	}
	if len(up.asked) != 0 {
		t.Errorf("forwarded %v", up.asked)
	}
}

func TestHandlerForwardsOtherNames(t *testing.T) {
	h, _, up := newFixture()
	m := h.answer(query("example.com.", dnsmessage.TypeA), client, false)
	if len(m.Answers) != 1 || len(up.asked) != 1 || up.first[0] != netip.MustParseAddr("10.9.9.9") {
		t.Errorf("example.com: %v, asked %v of %v", m, up.asked, up.first)
	}
	// Other addresses' reverse names are forwarded; the network's own
	// never are.
	h.answer(query("1.2.0.192.in-addr.arpa.", dnsmessage.TypePTR), client, false)
	m = h.answer(query("9.0.0.10.in-addr.arpa.", dnsmessage.TypePTR), client, false)
	if m.RCode != dnsmessage.RCodeNameError || len(up.asked) != 2 {
		t.Errorf("unknown address of the network: %v, asked %v", m, up.asked)
	}
}

func TestHandlerRefusesOutsiders(t *testing.T) {
	h, _, up := newFixture()
	for _, name := range []string{"db.", "example.com."} {
		m := h.answer(query(name, dnsmessage.TypeA), netip.MustParseAddr("10.1.0.7"), false)
		if m.RCode != dnsmessage.RCodeRefused || len(m.Answers) != 0 {
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
	m := h.answer(query("example.com.", dnsmessage.TypeA), client, false)
	if m.RCode != dnsmessage.RCodeNameError || m.RecursionAvailable || len(up.asked) != 0 {
		t.Errorf("internal: %v, asked %v", m, up.asked)
	}
	if m := h.answer(query("db.", dnsmessage.TypeA), client, false); len(m.Answers) != 1 {
		t.Errorf("internal network's own name: %v", m)
	}
}

func TestHandlerRefusesWhatIsNoQuery(t *testing.T) {
	h, _, _ := newFixture()
	r := query("db.", dnsmessage.TypeA)
	r.Response = true
	if m := h.answer(r, client, false); m != nil {
		t.Errorf("answered a response: %v", m)
	}
	r = query("db.", dnsmessage.TypeA)
	r.OpCode = 5 // UPDATE
	if m := h.answer(r, client, false); m.RCode != dnsmessage.RCodeNotImplemented {
		t.Errorf("update: %v", m)
	}
	r = query("db.", dnsmessage.TypeA)
	r.Questions = append(r.Questions, r.Questions[0])
	if m := h.answer(r, client, false); m.RCode != dnsmessage.RCodeFormatError {
		t.Errorf("two questions: %v", m)
	}
}

// FuzzHandler feeds the server any packet: it must never panic, and
// what it answers must be a reply that unpacks, with the query's ID, and
// fit a UDP client's buffer.
func FuzzHandler(f *testing.F) {
	for _, q := range []*dnsmessage.Message{query("db.", dnsmessage.TypeA), query("2.0.0.10.in-addr.arpa.", dnsmessage.TypePTR), query("x.", dnsmessage.TypeALL)} {
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, _, _ := newFixture()
		out := h.serve(b, client, false)
		if out == nil {
			return
		}
		var r, m dnsmessage.Message
		if err := r.Unpack(b); err != nil {
			t.Fatalf("answered what does not unpack: %v", err)
		}
		if err := m.Unpack(out); err != nil || !m.Response || m.ID != r.ID || len(out) > udpSize(&r) {
			t.Fatalf("reply %x (%v) to %x", out, err, b)
		}
	})
}

func TestALongAnswerIsTruncatedOverUDP(t *testing.T) {
	h, src, _ := newFixture()
	for i := range 60 {
		ip := netip.AddrFrom4([4]byte{10, 0, 1, byte(i)})
		src.t.put(ip.String(), entryOf(ipam.Lease{ID: "c" + ip.String(), IP: ip, Names: []string{"many"}}))
	}
	b, _ := query("many.", dnsmessage.TypeA).Pack()
	var m dnsmessage.Message
	if err := m.Unpack(h.serve(b, client, false)); err != nil || !m.Truncated || len(m.Answers) != 0 {
		t.Errorf("60 addresses over UDP: truncated %v, %d answers, %v", m.Truncated, len(m.Answers), err)
	}
	if err := m.Unpack(h.serve(b, client, true)); err != nil || m.Truncated || len(m.Answers) != 60 {
		t.Errorf("60 addresses over TCP: truncated %v, %d answers, %v", m.Truncated, len(m.Answers), err)
	}
}
