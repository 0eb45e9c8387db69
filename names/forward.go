package names

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Forwarding bounds. A client (glibc, musl) waits 5 s for a server before
// it tries the next, so a forward gives up well before: a dead upstream
// costs the client a SERVFAIL, not its timeout.
const (
	// perUpstream is how long one upstream has to answer.
	perUpstream = time.Second
	// forwardBudget is how long a query may wait across all upstreams.
	forwardBudget = 2 * time.Second
	// maxForwards bounds the forwards in flight: beyond it a query gets
	// SERVFAIL at once rather than a goroutine and a socket.
	maxForwards = 256
)

// forwarder asks the upstream resolvers: the network's own (--dns)
// first, then the host's.
type forwarder struct {
	slots chan struct{}
	host  *hostResolvers
	// budget and per are forwardBudget and perUpstream, and port 53;
	// tests change them.
	budget, per time.Duration
	port        uint16
}

func newForwarder(paths []string) *forwarder {
	return &forwarder{
		slots:  make(chan struct{}, maxForwards),
		host:   &hostResolvers{paths: paths},
		budget: forwardBudget, per: perUpstream, port: 53,
	}
}

func (f *forwarder) forward(r *dns.Msg, tcp bool, first []netip.Addr) *dns.Msg {
	select {
	case f.slots <- struct{}{}:
		defer func() { <-f.slots }()
	default:
		return failed(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.budget)
	defer cancel()
	c := &dns.Client{Net: "udp"}
	if tcp {
		c.Net = "tcp"
	}
	q := r.Copy()
	for _, up := range append(append([]netip.Addr{}, first...), f.host.get()...) {
		if ctx.Err() != nil {
			break
		}
		q.Id = dns.Id() // not the client's: a reply must answer us
		try, cancel := context.WithTimeout(ctx, f.per)
		m, _, err := c.ExchangeContext(try, q, netip.AddrPortFrom(up, f.port).String())
		cancel()
		if err == nil && m != nil {
			m.Id = r.Id
			return m
		}
	}
	return failed(r)
}

// failed is the answer when no upstream gave one.
func failed(r *dns.Msg) *dns.Msg {
	m := reply(r, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	return m
}

// hostResolvers are the host's name servers, read again whenever the
// file they come from changes: a laptop that moves networks gets new
// ones, and the server runs for as long as containers do.
type hostResolvers struct {
	paths []string

	mu      sync.Mutex
	seen    string
	servers []netip.Addr
}

func (h *hostResolvers) get() []netip.Addr {
	var key string
	for _, p := range h.paths {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			// resolvconf and systemd-resolved replace the file by a rename:
			// a new inode, whatever its time and size.
			key += fmt.Sprintf("%s %d %d %d %d;", p, st.Ino, st.Mtim.Nano(), st.Ctim.Nano(), st.Size)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if key != h.seen {
		h.seen = key
		h.servers, _ = HostResolvers(h.paths)
	}
	return h.servers
}
