// Package port is a published port mapping: HOST_IP:HOST_PORT[-END] to
// CONTAINER_PORT[-END]/PROTO, as the faces parse it, the store keeps it
// with a lease (it marshals as its text) and the firewall renders it.
package port

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Mapping is one published port mapping, or a range of equal length.
type Mapping struct {
	HostIP    netip.Addr // invalid: every host address
	HostPort  uint16
	HostEnd   uint16 // equal to HostPort for a single port
	Container uint16
	Proto     string // tcp, udp or sctp
}

// String renders p in the annotation grammar, canonically.
func (p Mapping) String() string {
	var b strings.Builder
	switch {
	case p.HostIP.Is6():
		b.WriteString("[" + p.HostIP.String() + "]:")
	case p.HostIP.IsValid():
		b.WriteString(p.HostIP.String() + ":")
	}
	b.WriteString(portRange(p.HostPort, p.HostEnd) + ":")
	b.WriteString(portRange(p.Container, p.Container+(p.HostEnd-p.HostPort)) + "/" + p.Proto)
	return b.String()
}

func portRange(a, b uint16) string {
	if a == b {
		return strconv.Itoa(int(a))
	}
	return fmt.Sprintf("%d-%d", a, b)
}

// Parse parses a comma-separated list of
// [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp|/sctp], an
// IPv6 HOST_IP in brackets.
func Parse(s string) ([]Mapping, error) {
	var ports []Mapping
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		p, err := parse(item)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", item, err)
		}
		for _, q := range ports {
			if q.Overlaps(p) {
				return nil, fmt.Errorf("port %q overlaps %q", item, q.String())
			}
		}
		ports = append(ports, p)
	}
	if len(ports) == 0 {
		return nil, fmt.Errorf("no ports in %q; want e.g. 8080:80 or 127.0.0.1:5353:53/udp", s)
	}
	return ports, nil
}

func parse(s string) (Mapping, error) {
	p := Mapping{Proto: "tcp"}
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		p.Proto = s[i+1:]
		s = s[:i]
		if p.Proto != "tcp" && p.Proto != "udp" && p.Proto != "sctp" {
			return p, fmt.Errorf("protocol %q: want tcp, udp or sctp", p.Proto)
		}
	}
	bracketed := strings.HasPrefix(s, "[")
	if bracketed {
		host, rest, ok := strings.Cut(s[1:], "]:")
		ip, err := netip.ParseAddr(host)
		if !ok || err != nil || !ip.Is6() || ip.Zone() != "" {
			return p, fmt.Errorf("host address %q: want an IPv6 address in brackets, e.g. [2001:db8::1]:8080:80", s)
		}
		if ip.IsLoopback() {
			// IPv6 has no route_localnet: the kernel drops a packet from
			// ::1 routed to a container.
			return p, fmt.Errorf("host address [::1]: IPv6 cannot forward loopback traffic to a container; publish on a host address, or use 127.0.0.1")
		}
		if !ip.IsUnspecified() {
			p.HostIP = ip
		}
		s = rest
	}
	parts := strings.Split(s, ":")
	switch {
	case len(parts) == 2:
	case len(parts) == 3 && !bracketed:
		ip, err := netip.ParseAddr(parts[0])
		if err != nil || !ip.Is4() {
			return p, fmt.Errorf("host address %q: want an IPv4 address, or an IPv6 one in brackets", parts[0])
		}
		if !ip.IsUnspecified() {
			p.HostIP = ip
		}
		parts = parts[1:]
	case len(parts) > 3 && !bracketed:
		return p, fmt.Errorf("want [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO], an IPv6 HOST_IP in brackets")
	default:
		return p, fmt.Errorf("want [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]")
	}
	hs, he, err := parseRange(parts[0])
	if err != nil {
		return p, fmt.Errorf("host port: %w", err)
	}
	cs, ce, err := parseRange(parts[1])
	if err != nil {
		return p, fmt.Errorf("container port: %w", err)
	}
	if he-hs != ce-cs {
		return p, fmt.Errorf("host range %s and container range %s differ in length", parts[0], parts[1])
	}
	p.HostPort, p.HostEnd, p.Container = hs, he, cs
	return p, nil
}

func parseRange(s string) (uint16, uint16, error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err := parseNum(a)
	if err != nil {
		return 0, 0, err
	}
	hi := lo
	if isRange {
		if hi, err = parseNum(b); err != nil {
			return 0, 0, err
		}
		if hi < lo {
			return 0, 0, fmt.Errorf("range %s runs backwards", s)
		}
	}
	return lo, hi, nil
}

func parseNum(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 || s[0] == '+' {
		return 0, fmt.Errorf("%q is not a port number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// Overlaps reports whether p and q claim a common host port on a common
// host address: two containers cannot both have it.
func (p Mapping) Overlaps(q Mapping) bool {
	if p.Proto != q.Proto || p.HostEnd < q.HostPort || q.HostEnd < p.HostPort {
		return false
	}
	return !p.HostIP.IsValid() || !q.HostIP.IsValid() || p.HostIP == q.HostIP
}

// MarshalText renders m in the annotation grammar: a lease keeps its
// ports as text.
func (m Mapping) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads one mapping back.
func (m *Mapping) UnmarshalText(b []byte) error {
	ms, err := Parse(string(b))
	if err != nil {
		return err
	}
	if len(ms) != 1 {
		return fmt.Errorf("port %q: want one mapping", b)
	}
	*m = ms[0]
	return nil
}

// MustParse is Parse for mappings known to be good, such as a test's; it
// panics on an error.
func MustParse(s string) []Mapping {
	ms, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return ms
}
