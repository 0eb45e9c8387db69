package names

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
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

func (f *forwarder) forward(r *dnsmessage.Message, tcp bool, first []netip.Addr) *dnsmessage.Message {
	select {
	case f.slots <- struct{}{}:
		defer func() { <-f.slots }()
	default:
		return failed(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.budget)
	defer cancel()
	q := *r
	q.ID = uint16(rand.Uint32()) // not the client's: a reply must answer us
	b, err := q.Pack()
	if err != nil {
		return failed(r)
	}
	for _, up := range append(append([]netip.Addr{}, first...), f.host.get()...) {
		if ctx.Err() != nil {
			break
		}
		try, cancel := context.WithTimeout(ctx, f.per)
		m, err := exchange(try, b, &q, netip.AddrPortFrom(up, f.port), tcp)
		cancel()
		if err == nil {
			m.ID = r.ID
			return m
		}
	}
	return failed(r)
}

// exchange sends the packed query b (q unpacked) to the resolver at, over
// TCP or UDP as the client asked, and waits for its answer until ctx ends.
// A UDP socket connected to the resolver takes datagrams from it alone,
// and one that is not the reply to q is read past.
func exchange(ctx context.Context, b []byte, q *dnsmessage.Message, at netip.AddrPort, tcp bool) (*dnsmessage.Message, error) {
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, proto, at.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if tcp {
		if err := writeFramed(c, b); err != nil {
			return nil, err
		}
		in, err := readFramed(c)
		if err != nil {
			return nil, err
		}
		return replyTo(q, in)
	}
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	buf := make([]byte, maxMsg)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if m, err := replyTo(q, buf[:n]); err == nil {
			return m, nil
		}
	}
}

// replyTo unpacks b, the answer to q, or says why it is none.
func replyTo(q *dnsmessage.Message, b []byte) (*dnsmessage.Message, error) {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		return nil, err
	}
	if !m.Response || m.ID != q.ID || !slices.Equal(m.Questions, q.Questions) {
		return nil, errNotTheReply
	}
	return &m, nil
}

var errNotTheReply = errors.New("not the reply to the query")

// failed is the answer when no upstream gave one.
func failed(r *dnsmessage.Message) *dnsmessage.Message {
	m := reply(r, dnsmessage.RCodeServerFailure)
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
