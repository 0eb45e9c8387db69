package ipam

import (
	"fmt"
	"math/big"
	"net/netip"
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
		return fmt.Errorf("%w: %s is outside subnet %s", ErrUnusable, ip, p)
	case ip == p.Addr():
		return fmt.Errorf("%w: %s is the network address of %s", ErrUnusable, ip, p)
	case ip == r.Gateway():
		return fmt.Errorf("%w: %s is the gateway of %s", ErrUnusable, ip, p)
	case !r.Contains(ip):
		return fmt.Errorf("%w: %s is the broadcast address of %s", ErrUnusable, ip, p)
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
		return fmt.Errorf("%w: %s is already leased, or held back for a container being torn down", ErrTaken, ip)
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
