package port

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// InUse reports whether a socket of the host's own holds port p of proto
// on addr (an unspecified address: every address of its family), by
// binding one there and letting it go: what refuses the bind is what the
// container would take traffic from. It costs four system calls and
// starts no process.
//
// A TCP socket that only connected from p (TIME_WAIT, say) does not count:
// the test socket reuses addresses, which Linux allows unless something
// listens. UDP has no listening state, so any socket bound to p counts.
func InUse(proto string, addr netip.Addr, p uint16) (bool, error) {
	family, level, freebind := unix.AF_INET, unix.SOL_IP, unix.IP_FREEBIND
	if addr.Is6() {
		family, level, freebind = unix.AF_INET6, unix.SOL_IPV6, unix.IPV6_FREEBIND
	}
	typ, protocol := unix.SOCK_STREAM, unix.IPPROTO_TCP
	switch proto {
	case "udp":
		typ, protocol = unix.SOCK_DGRAM, unix.IPPROTO_UDP
	case "sctp":
		protocol = unix.IPPROTO_SCTP
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, protocol)
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
		return false, nil // no SCTP here (or no IPv6): nothing can hold the port
	}
	if err != nil {
		return false, fmt.Errorf("test host port %d/%s: %w", p, proto, err)
	}
	defer unix.Close(fd)
	// A HOST_IP the host does not have yet is still tested, as the
	// address it would have.
	if err := unix.SetsockoptInt(fd, level, freebind, 1); err != nil {
		return false, fmt.Errorf("test host port %d/%s: %w", p, proto, err)
	}
	if family == unix.AF_INET6 {
		// [::] tests IPv6 alone; 0.0.0.0 is tested on its own.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return false, fmt.Errorf("test host port %d/%s: %w", p, proto, err)
		}
	}
	if protocol != unix.IPPROTO_UDP {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return false, fmt.Errorf("test host port %d/%s: %w", p, proto, err)
		}
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET6 {
		sa = &unix.SockaddrInet6{Port: int(p), Addr: addr.As16()}
	} else {
		sa = &unix.SockaddrInet4{Port: int(p), Addr: addr.As4()}
	}
	switch err := unix.Bind(fd, sa); {
	case err == nil:
		return false, nil
	case errors.Is(err, unix.EADDRINUSE):
		return true, nil
	default:
		return false, fmt.Errorf("test host port %s: %w", netip.AddrPortFrom(addr, p), err)
	}
}
