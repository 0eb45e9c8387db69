package names

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
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
	forward(r *dns.Msg, tcp bool, first []netip.Addr) *dns.Msg
}

// handler answers one network's queries.
type handler struct {
	src source
	fwd upstream
}

func (h handler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	src := addrOf(w.RemoteAddr())
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	m := h.answer(r, src, tcp)
	if m == nil {
		return
	}
	if !tcp {
		size := dns.MinMsgSize
		if o := r.IsEdns0(); o != nil && int(o.UDPSize()) > size {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// answer is the reply to query r from src: nil for what deserves none.
// The network's own names and addresses are answered here, and the rest
// forwarded, but only for the network's containers (and the host, which
// queries from the gateway): a network is a boundary, and the server no
// open resolver.
func (h handler) answer(r *dns.Msg, src netip.Addr, tcp bool) *dns.Msg {
	switch {
	case r.Response:
		return nil
	case r.Opcode != dns.OpcodeQuery:
		return reply(r, dns.RcodeNotImplemented)
	case len(r.Question) != 1:
		return reply(r, dns.RcodeFormatError)
	}
	net := h.src.config()
	if !net.has(src) {
		return reply(r, dns.RcodeRefused)
	}
	q := r.Question[0]
	name, ok := Canonical(q.Name)
	if ok && q.Qclass == dns.ClassINET {
		h.src.catchUp()
		if m := h.local(r, name); m != nil {
			return m
		}
		if ip, ok := parseReverse(name); ok && net.has(ip) {
			// The network's own addresses are never asked of others.
			return authoritative(reply(r, dns.RcodeNameError), net)
		}
	}
	if net.Internal {
		return authoritative(reply(r, dns.RcodeNameError), net)
	}
	return h.fwd.forward(r, tcp, net.Upstreams)
}

// local answers r, for canonical name, from the network's table; nil when
// the name is not the network's.
func (h handler) local(r *dns.Msg, name string) *dns.Msg {
	q := r.Question[0]
	if ip, ok := parseReverse(name); ok {
		names, ok := h.src.reverse(ip)
		if !ok {
			return nil
		}
		m := authoritative(reply(r, dns.RcodeSuccess), h.src.config())
		if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
			for _, n := range names {
				m.Answer = append(m.Answer, &dns.PTR{Hdr: header(q.Name, dns.TypePTR), Ptr: n})
			}
		}
		return m
	}
	addrs, ok := h.src.lookup(name)
	if !ok {
		return nil
	}
	m := authoritative(reply(r, dns.RcodeSuccess), h.src.config())
	for _, a := range addrs {
		switch {
		case a.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			m.Answer = append(m.Answer, &dns.A{Hdr: header(q.Name, dns.TypeA), A: a.AsSlice()})
		case a.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: header(q.Name, dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	return m
}

func reply(r *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(r, rcode)
	return m
}

// authoritative marks m as the network's own answer; recursion is
// available where the network forwards.
func authoritative(m *dns.Msg, net Network) *dns.Msg {
	m.Authoritative = true
	m.RecursionAvailable = !net.Internal
	return m
}

// header is an answer's: TTL 0, as containers come and go and a name may
// move to another address at any moment.
func header(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 0}
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
