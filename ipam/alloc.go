package ipam

import (
	"fmt"
	"math/big"
	"net/netip"
	"time"
)

// Range is the addresses of a network that can be leased: all of its
// prefix but the network address, the gateway (the first host address)
// and, for IPv4, the broadcast address. It works on netip.Addr alone, so
// it makes no assumption on the width of an address.
type Range struct {
	Prefix      netip.Prefix
	First, Last netip.Addr
}

// RangeOf returns the leasable range of p, which must be a network address
// with room for the gateway and one more.
func RangeOf(p netip.Prefix) (Range, error) {
	if !p.IsValid() || p != p.Masked() {
		return Range{}, fmt.Errorf("subnet %s is not a network address", p)
	}
	// Two host bits at least: the network address, the gateway, one
	// container, and for IPv4 the broadcast address.
	if p.Addr().BitLen()-p.Bits() < 2 {
		return Range{}, fmt.Errorf("subnet %s is too small to leave room for a gateway and a container", p)
	}
	last := lastAddr(p)
	if p.Addr().Is4() {
		last = last.Prev()
	}
	return Range{Prefix: p, First: p.Addr().Next().Next(), Last: last}, nil
}

// rangesOf returns the ranges of a network's subnets: one, or an IPv4 and
// an IPv6 one, in that order (dual-stack).
func rangesOf(subnets []netip.Prefix) ([]Range, error) {
	switch {
	case len(subnets) == 0:
		return nil, fmt.Errorf("no subnet")
	case len(subnets) > 2 || len(subnets) == 2 && !(subnets[0].Addr().Is4() && subnets[1].Addr().Is6()):
		return nil, fmt.Errorf("subnets %v: want one, or an IPv4 and an IPv6 one in that order", subnets)
	}
	rs := make([]Range, len(subnets))
	for i, p := range subnets {
		r, err := RangeOf(p)
		if err != nil {
			return nil, err
		}
		rs[i] = r
	}
	return rs, nil
}

// wanted is the address of r's family that want asks for, if any.
func (r Range) wanted(want Lease) netip.Addr {
	return want.Addr(r.Prefix.Addr().Is6())
}

// Gateway is the bridge's own address: the first host address.
func (r Range) Gateway() netip.Addr { return r.Prefix.Addr().Next() }

// Contains reports whether ip can be leased.
func (r Range) Contains(ip netip.Addr) bool {
	return r.Prefix.Contains(ip) && !ip.Less(r.First) && !r.Last.Less(ip)
}

// Check says why ip cannot be leased, or nil if it can.
func (r Range) Check(ip netip.Addr) error {
	p := r.Prefix
	switch {
	case !p.Contains(ip):
		return addrErr(ip, "%w: %s is outside subnet %s", ErrUnusable, ip, p)
	case ip == p.Addr():
		return addrErr(ip, "%w: %s is the network address of %s", ErrUnusable, ip, p)
	case ip == r.Gateway():
		return addrErr(ip, "%w: %s is the gateway of %s", ErrUnusable, ip, p)
	case !r.Contains(ip):
		return addrErr(ip, "%w: %s is the broadcast address of %s", ErrUnusable, ip, p)
	}
	return nil
}

// Want says why ip, asked for by name, cannot be leased: not the range's,
// or taken.
func (r Range) Want(ip netip.Addr, taken func(netip.Addr) bool) error {
	if err := r.Check(ip); err != nil {
		return err
	}
	if taken(ip) {
		return addrErr(ip, "%w: %s is already leased, or held back for a container being torn down", ErrTaken, ip)
	}
	return nil
}

// Size is the number of addresses in the range.
func (r Range) Size() *big.Int {
	a, b := new(big.Int).SetBytes(r.First.AsSlice()), new(big.Int).SetBytes(r.Last.AsSlice())
	return b.Sub(b, a).Add(b, big.NewInt(1))
}

// Next returns the first address after hint (or from First, when hint is
// not in the range) for which taken is false, wrapping round once. The
// walk stops at the first free address, so with round-robin allocation
// its cost does not grow with the number of leases held.
func (r Range) Next(hint netip.Addr, taken func(netip.Addr) bool) (netip.Addr, bool) {
	start := r.First
	if hint.IsValid() && r.Contains(hint) && hint != r.Last {
		start = hint.Next()
	}
	ip := start
	for {
		if !taken(ip) {
			return ip, true
		}
		if ip == r.Last {
			ip = r.First
		} else {
			ip = ip.Next()
		}
		if ip == start {
			return netip.Addr{}, false
		}
	}
}

// lastAddr is the last address of p: its host bits all set.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As16()
	offset := 0
	if p.Addr().Is4() {
		offset = 96
	}
	for i := offset + p.Bits(); i < 128; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	ip := netip.AddrFrom16(a)
	if p.Addr().Is4() {
		ip = ip.Unmap()
	}
	return ip
}

func subnetsOf(rs []Range) []netip.Prefix {
	ps := make([]netip.Prefix, len(rs))
	for i, r := range rs {
		ps[i] = r.Prefix
	}
	return ps
}

// unknownFamily refuses an address asked for in a family the network has
// no subnet of.
func unknownFamily(rs []Range, want Lease) error {
	for _, ip := range []netip.Addr{want.IP, want.IP6} {
		if !ip.IsValid() {
			continue
		}
		ok := false
		for _, r := range rs {
			ok = ok || r.Prefix.Addr().Is6() == ip.Is6()
		}
		if !ok {
			return addrErr(ip, "%w: %s is outside subnet %s", ErrUnusable, ip, subnetsOf(rs)[0])
		}
	}
	return nil
}

// choose picks an address from each range for want: the one want names
// in that range's family, else the first free one after hints[i]. taken
// says whether an address of range i is leased or held back; leased
// counts range i's leases, for the error of a full range.
func choose(rs []Range, want Lease, hints []netip.Addr, taken func(i int, ip netip.Addr) bool, leased func(i int) int) ([]netip.Addr, error) {
	if err := unknownFamily(rs, want); err != nil {
		return nil, err
	}
	ips := make([]netip.Addr, len(rs))
	for i, r := range rs {
		isTaken := func(ip netip.Addr) bool { return taken(i, ip) }
		if ip := r.wanted(want); ip.IsValid() {
			if err := r.Want(ip, isTaken); err != nil {
				return nil, err
			}
			ips[i] = ip
			continue
		}
		ip, ok := r.Next(hints[i], isTaken)
		if !ok {
			return nil, fmt.Errorf("%w in %s: %d of %s addresses leased", ErrExhausted, r.Prefix, leased(i), r.Size())
		}
		ips[i] = ip
	}
	return ips, nil
}

// leased is want with the addresses chosen for it, dated now unless it
// has a date (a lease rebuilt by gc keeps its own).
func leased(want Lease, ips []netip.Addr) Lease {
	l := want
	l.IP, l.IP6 = ips[0], netip.Addr{}
	if len(ips) > 1 {
		l.IP6 = ips[1]
	}
	if l.Created.IsZero() {
		l.Created = time.Now().UTC().Truncate(time.Second)
	}
	return l
}
