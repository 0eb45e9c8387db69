package e2e

// Frames as a container with NET_RAW writes them, and a capture of what
// reaches an interface: the tools of the impersonation tests.

import (
	endian "encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func ether(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	f := append(append(append([]byte{}, dst...), src...), byte(typ>>8), byte(typ))
	return append(f, payload...)
}

// arpFrame is an ARP message (op 1 request, 2 reply) from sha/spa to
// tha/tpa, sent to dst.
func arpFrame(dst, src net.HardwareAddr, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	p := []byte{0, 1, 8, 0, 6, 4, byte(op >> 8), byte(op)}
	p = append(append(p, sha...), spa.AsSlice()...)
	p = append(append(p, tha...), tpa.AsSlice()...)
	return ether(dst, src, unix.ETH_P_ARP, p)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// udpFrame is a UDP datagram from src to dst (either family), in a frame
// from smac to dmac, with its checksums right.
func udpFrame(dmac, smac net.HardwareAddr, src, dst netip.AddrPort, payload []byte) []byte {
	udp := endian.BigEndian.AppendUint16(nil, src.Port())
	udp = endian.BigEndian.AppendUint16(udp, dst.Port())
	udp = endian.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(append(udp, 0, 0), payload...)
	if src.Addr().Is4() {
		ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0}
		endian.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		ip = append(append(ip, src.Addr().AsSlice()...), dst.Addr().AsSlice()...)
		endian.BigEndian.PutUint16(ip[10:], checksum(ip))
		return ether(dmac, smac, unix.ETH_P_IP, append(ip, udp...))
	}
	endian.BigEndian.PutUint16(udp[6:], checksum(append(pseudo6(src.Addr(), dst.Addr(), unix.IPPROTO_UDP, len(udp)), udp...)))
	return ether(dmac, smac, unix.ETH_P_IPV6, append(ipv6Header(src.Addr(), dst.Addr(), unix.IPPROTO_UDP, len(udp), 64), udp...))
}

func ipv6Header(src, dst netip.Addr, next byte, n int, hops byte) []byte {
	h := []byte{0x60, 0, 0, 0, byte(n >> 8), byte(n), next, hops}
	return append(append(h, src.AsSlice()...), dst.AsSlice()...)
}

func pseudo6(src, dst netip.Addr, next byte, n int) []byte {
	p := append(src.AsSlice(), dst.AsSlice()...)
	p = endian.BigEndian.AppendUint32(p, uint32(n))
	return append(p, 0, 0, 0, next)
}

// icmp6Frame is an ICMPv6 message of type typ with body (after the
// checksum), hop limit 255 as neighbour discovery wants, checksum right.
func icmp6Frame(dmac, smac net.HardwareAddr, src, dst netip.Addr, typ byte, body []byte) []byte {
	m := append([]byte{typ, 0, 0, 0}, body...)
	endian.BigEndian.PutUint16(m[2:], checksum(append(pseudo6(src, dst, unix.IPPROTO_ICMPV6, len(m)), m...)))
	return ether(dmac, smac, unix.ETH_P_IPV6, append(ipv6Header(src, dst, unix.IPPROTO_ICMPV6, len(m), 255), m...))
}

// neighbourAdvert says target is at mac (solicited 0, override 1).
func neighbourAdvert(target netip.Addr, mac net.HardwareAddr) []byte {
	body := append([]byte{0x20, 0, 0, 0}, target.AsSlice()...)
	return append(append(body, 2, 1), mac...)
}

// routerAdvert announces a default router with a prefix.
func routerAdvert(mac net.HardwareAddr) []byte {
	body := []byte{64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
	return append(append(body, 1, 1), mac...)
}

// rawSocket opens a packet socket on iface of namespace ns.
func rawSocket(t *testing.T, ns netns.NsHandle, iface string) (fd int, ifindex int) {
	t.Helper()
	var err error
	inNetns(t, ns, func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName(iface); err != nil {
			return
		}
		ifindex = ifi.Index
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL))); err != nil {
			return
		}
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex})
	})
	if err != nil {
		t.Fatalf("packet socket on %s: %v", iface, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, ifindex
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// send writes frame out of eth0 in namespace ns, as a container with
// NET_RAW can.
func send(t *testing.T, ns netns.NsHandle, frame []byte) {
	t.Helper()
	fd, ifindex := rawSocket(t, ns, "eth0")
	if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// capture starts listening on iface of namespace ns, and returns a
// function that reports whether a frame match accepts arrived, waiting up
// to d for it.
func capture(t *testing.T, ns netns.NsHandle, iface string, match func([]byte) bool) func(d time.Duration) bool {
	t.Helper()
	fd, _ := rawSocket(t, ns, iface)
	return func(d time.Duration) bool {
		buf := make([]byte, 2048)
		deadline := time.Now().Add(d)
		for {
			left := time.Until(deadline)
			if left <= 0 {
				return false
			}
			tv := unix.NsecToTimeval(left.Nanoseconds())
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // a timeout, or a signal: try until the deadline
			}
			if match(buf[:n]) {
				return true
			}
		}
	}
}

// carries reports whether frame holds b.
func carries(frame, b []byte) bool { return len(b) > 0 && contains(frame, b) }

func contains(s, sub []byte) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if string(s[i:i+len(sub)]) == string(sub) {
			return true
		}
	}
	return false
}
