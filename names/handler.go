package names

import (
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// source is one network as its handler sees it, with its lock taken for
// each call.
type source interface {
	config() Network
	lookup(name string) ([]netip.Addr, bool)
	reverse(ip netip.Addr) ([]string, bool)
	// catchUp applies what changed in the store and is not yet applied:
	// inotify queues a lease's event before the setup (or teardown) that
	// wrote it returns, so after catchUp every finished setup's names
	// answer, and no finished teardown's do.
	catchUp()
}

// upstream answers what the network does not know.
type upstream interface {
	forward(r *dnsmessage.Message, tcp bool, first []netip.Addr) *dnsmessage.Message
}

// handler answers one network's queries.
type handler struct {
	src source
	fwd upstream
}

// serve answers the packet b from src: the packed reply, or nil for none.
// What does not parse as a message gets no answer, as it may not be one.
func (h handler) serve(b []byte, src netip.Addr, tcp bool) []byte {
	var r dnsmessage.Message
	if r.Unpack(b) != nil {
		return nil
	}
	m := h.answer(&r, src, tcp)
	if m == nil {
		return nil
	}
	out, err := m.Pack()
	if err != nil {
		return nil
	}
	if !tcp && len(out) > udpSize(&r) {
		// Too long for the client's buffer: it asks again over TCP.
		m.Truncated = true
		m.Answers, m.Authorities, m.Additionals = nil, nil, nil
		out, _ = m.Pack()
	}
	return out
}

// udpSize is the largest reply r's client takes over UDP: 512 bytes, or
// what its EDNS record says.
func udpSize(r *dnsmessage.Message) int {
	size := 512
	for _, rr := range r.Additionals {
		if rr.Header.Type == dnsmessage.TypeOPT && int(rr.Header.Class) > size {
			size = int(rr.Header.Class)
		}
	}
	return size
}

// answer is the reply to query r from src: nil for what deserves none.
// The network's own names and addresses are answered here, and the rest
// forwarded, but only for the network's containers (and the host, which
// queries from the gateway): a network is a boundary, and the server no
// open resolver.
func (h handler) answer(r *dnsmessage.Message, src netip.Addr, tcp bool) *dnsmessage.Message {
	switch {
	case r.Response:
		return nil
	case r.OpCode != 0: // not a query
		return reply(r, dnsmessage.RCodeNotImplemented)
	case len(r.Questions) != 1:
		return reply(r, dnsmessage.RCodeFormatError)
	}
	net := h.src.config()
	if !net.has(src) {
		return reply(r, dnsmessage.RCodeRefused)
	}
	q := r.Questions[0]
	name, ok := Canonical(q.Name.String())
	if ok && q.Class == dnsmessage.ClassINET {
		h.src.catchUp()
		if m := h.local(r, name); m != nil {
			return m
		}
		if ip, ok := parseReverse(name); ok && net.has(ip) {
			// The network's own addresses are never asked of others.
			return authoritative(reply(r, dnsmessage.RCodeNameError), net)
		}
	}
	if net.Internal {
		return authoritative(reply(r, dnsmessage.RCodeNameError), net)
	}
	return h.fwd.forward(r, tcp, net.Upstreams)
}

// local answers r, for canonical name, from the network's table; nil when
// the name is not the network's.
func (h handler) local(r *dnsmessage.Message, name string) *dnsmessage.Message {
	q := r.Questions[0]
	all := q.Type == dnsmessage.TypeALL
	if ip, ok := parseReverse(name); ok {
		names, ok := h.src.reverse(ip)
		if !ok {
			return nil
		}
		m := authoritative(reply(r, dnsmessage.RCodeSuccess), h.src.config())
		if q.Type == dnsmessage.TypePTR || all {
			for _, n := range names {
				if ptr, err := dnsmessage.NewName(n); err == nil {
					m.Answers = append(m.Answers, answer(q, dnsmessage.TypePTR, &dnsmessage.PTRResource{PTR: ptr}))
				}
			}
		}
		return m
	}
	addrs, ok := h.src.lookup(name)
	if !ok {
		return nil
	}
	m := authoritative(reply(r, dnsmessage.RCodeSuccess), h.src.config())
	for _, a := range addrs {
		switch {
		case a.Is4() && (q.Type == dnsmessage.TypeA || all):
			m.Answers = append(m.Answers, answer(q, dnsmessage.TypeA, &dnsmessage.AResource{A: a.As4()}))
		case a.Is6() && (q.Type == dnsmessage.TypeAAAA || all):
			m.Answers = append(m.Answers, answer(q, dnsmessage.TypeAAAA, &dnsmessage.AAAAResource{AAAA: a.As16()}))
		}
	}
	return m
}

// reply is the answer to r with rcode and r's question, and nothing else
// yet.
func reply(r *dnsmessage.Message, rcode dnsmessage.RCode) *dnsmessage.Message {
	m := &dnsmessage.Message{Header: dnsmessage.Header{
		ID: r.ID, Response: true, OpCode: r.OpCode, RCode: rcode,
		RecursionDesired: r.RecursionDesired, CheckingDisabled: r.CheckingDisabled,
	}}
	if len(r.Questions) > 0 {
		m.Questions = r.Questions[:1]
	}
	return m
}

// authoritative marks m as the network's own answer; recursion is
// available where the network forwards.
func authoritative(m *dnsmessage.Message, net Network) *dnsmessage.Message {
	m.Authoritative = true
	m.RecursionAvailable = !net.Internal
	return m
}

// answer is a record for question q, with TTL 0: containers come and go,
// and a name may move to another address at any moment.
func answer(q dnsmessage.Question, t dnsmessage.Type, body dnsmessage.ResourceBody) dnsmessage.Resource {
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: q.Name, Type: t, Class: dnsmessage.ClassINET, TTL: 0},
		Body:   body,
	}
}

// parseReverse reads an address back from its canonical reverse name:
// d.c.b.a.in-addr.arpa. or the 32 nibbles of ip6.arpa.
func parseReverse(name string) (netip.Addr, bool) {
	if s, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		f := strings.Split(s, ".")
		if len(f) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, x := range f {
			v, err := strconv.ParseUint(x, 10, 8)
			if err != nil || x != strconv.FormatUint(v, 10) {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	}
	if s, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		f := strings.Split(s, ".")
		if len(f) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, x := range f {
			v, err := strconv.ParseUint(x, 16, 8)
			if err != nil || len(x) != 1 {
				return netip.Addr{}, false
			}
			b[15-i/2] |= byte(v) << (4 * (i % 2))
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
