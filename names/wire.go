package names

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// maxMsg is the largest DNS message, over UDP or TCP.
const maxMsg = 65535

// tcpIdle is how long a TCP client may keep a connection open between
// queries (RFC 7766 asks for seconds, not minutes).
const tcpIdle = 10 * time.Second

// sockets are one network's listening sockets and the connections they
// accepted, closed together when the network is no longer served.
type sockets struct {
	mu     sync.Mutex
	open   map[io.Closer]struct{}
	closed bool
}

func newSockets() *sockets { return &sockets{open: map[io.Closer]struct{}{}} }

// add keeps c to be closed with the rest; false, and c closed, when they
// are closed already.
func (s *sockets) add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.open[c] = struct{}{}
	return true
}

func (s *sockets) done(c io.Closer) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
	c.Close()
}

func (s *sockets) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.open {
		c.Close()
	}
	clear(s.open)
}

// serveUDP answers each datagram on pc in a goroutine of its own, as a
// forward may wait on an upstream, until pc is closed.
func serveUDP(pc net.PacketConn, h handler) {
	buf := make([]byte, maxMsg)
	for {
		n, from, err := pc.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		req := slices.Clone(buf[:n])
		go func() {
			if out := h.serve(req, addrOf(from), false); out != nil {
				pc.WriteTo(out, from)
			}
		}()
	}
}

// serveTCP answers the queries of each connection ln accepts, in turn,
// until ln is closed.
func serveTCP(ln net.Listener, h handler, socks *sockets) {
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		if !socks.add(c) {
			return
		}
		go func() {
			defer socks.done(c)
			src := addrOf(c.RemoteAddr())
			for {
				c.SetDeadline(time.Now().Add(tcpIdle))
				req, err := readFramed(c)
				if err != nil {
					return
				}
				out := h.serve(req, src, true)
				if out == nil || writeFramed(c, out) != nil {
					return
				}
			}
		}()
	}
}

// readFramed reads one message of a DNS TCP stream: its length in two
// bytes, then itself.
func readFramed(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// writeFramed writes b to a DNS TCP stream, in one write.
func writeFramed(w io.Writer, b []byte) error {
	if len(b) > maxMsg {
		return errors.New("message too long for TCP")
	}
	_, err := w.Write(append(binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(b)), uint16(len(b))), b...))
	return err
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
