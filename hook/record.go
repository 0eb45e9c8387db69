package hook

import (
	"net/netip"
	"slices"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/names"
)

// record is what a setup last verified about the network's bridge and
// firewall, kept in the network's store: a warm setup that finds the same
// bridge (same ifindex, same options) trusts it instead of asking iptables
// again. It is a cache of what the kernel holds, cleared before the
// network is taken down, so a command killed half-way leaves a network
// that is verified again, never trusted wrongly.
type record struct {
	Bridge      string         `json:"bridge"`
	Subnets     []netip.Prefix `json:"subnets"`
	MTU         int            `json:"mtu"`
	BridgeIndex int            `json:"bridge_index"`
	// The options the rules were installed with.
	ICC           bool           `json:"icc"`
	Internal      bool           `json:"internal"`
	NonMasquerade []netip.Prefix `json:"non_masquerade,omitempty"`
	// NoSpoofCheck is set for a network whose spoof check is off; records
	// older than the check have none, and their networks get it.
	NoSpoofCheck bool `json:"no_spoof_check,omitempty"`
	// Names is what the name server serves of the network (it reads it
	// from here); none for a network without names.
	Names *names.Network `json:"names,omitempty"`
	// The backend that holds them; records older than the choice have
	// none, and theirs is iptables.
	Firewall string `json:"firewall,omitempty"`
}

// firewall is the backend rec's rules are in.
func (rec record) firewall() string {
	if rec.Firewall == "" {
		return "iptables"
	}
	return rec.Firewall
}

func readRecord(tx ipam.Tx) (record, bool) {
	var r record
	ok, err := tx.Record(&r)
	return r, ok && err == nil
}

// recordOf is what the store keeps of a verified network.
func (n *Network) recordOf(br bridge.Bridge) record {
	return record{
		Bridge: n.Bridge, Subnets: n.Subnets,
		MTU: br.MTU, BridgeIndex: br.Index, ICC: n.ICC, Internal: n.Internal, NonMasquerade: n.NonMasquerade,
		NoSpoofCheck: !n.SpoofCheck, Firewall: n.Firewall, Names: n.namesNetwork(),
	}
}

// trusts reports whether rec vouches for network n's bridge br.
func (n *Network) trusts(rec record, br bridge.Bridge) bool {
	return rec.ICC == n.ICC && rec.Internal == n.Internal && slices.Equal(rec.NonMasquerade, n.NonMasquerade) &&
		rec.NoSpoofCheck == !n.SpoofCheck && rec.BridgeIndex == br.Index && sameNames(rec.Names, n.namesNetwork())
}

func sameNames(a, b *names.Network) bool {
	return a == nil && b == nil || a != nil && b != nil && a.Equal(*b)
}
