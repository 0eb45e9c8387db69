package hook

// The nftables generation (nat.Generation) changes with every commit to
// any table. The store's stamp, beside the network's record, keeps the
// generation at which the network's nftables state (its table, when
// nftables holds its rules, and its spoof check) was last verified: a warm setup that reads the same generation
// knows nothing has changed since, and trusts it with that one read. Any
// other generation runs the full check, which records the new one.
//
// A command's own transactions move the generation too. After them it
// records the new generation, but only if it moved by exactly as many
// commits as the command made since the verified one: else someone else
// committed meanwhile, and the next setup checks in full. Legacy iptables
// has no generation; a network whose rules are there keeps its check.

import "github.com/bridgehook/bridgehook/ipam"

// fresh reports whether the generation stamped in tx is the kernel's
// now, and that generation; it reads it only where it can save a check.
func (n *Network) fresh(tx ipam.Tx) (uint32, bool) {
	if !n.fw.Generational() && !n.SpoofCheck {
		return 0, false
	}
	st := tx.Stamp()
	if st == 0 {
		return 0, false
	}
	g, err := n.gen()
	return g, err == nil && g == st
}

// stamp records in tx the kernel's generation now, which the caller has
// just verified (or made), and remembers it for keepFresh.
func (n *Network) stamp(tx ipam.Tx) error {
	g, err := n.gen()
	if err != nil {
		g = 0 // unknown: the next setup checks in full
	}
	n.verifiedGen = g
	if tx.Stamp() == g {
		return nil
	}
	return tx.SetStamp(g)
}

// commits is how many nftables commits a setup or teardown of a lease
// with ports makes after the network's check (the spoof check's, and the
// ports' on nftables); -1 where it cannot say (iptables-nft commits ports
// in several).
func (n *Network) commits(ports bool) int {
	k := 0
	if n.SpoofCheck {
		k++
	}
	if ports {
		if n.Firewall != "nftables" {
			return -1
		}
		k++
	}
	return k
}

// keepFresh records the generation after the command's own k commits,
// when they are all that happened since the generation it verified.
func (n *Network) keepFresh(tx ipam.Tx, k int) error {
	if n.verifiedGen == 0 || k <= 0 {
		return nil // none made, or none countable
	}
	g, err := n.gen()
	if err != nil || g != n.verifiedGen+uint32(k) {
		return nil
	}
	if tx.Stamp() != n.verifiedGen {
		return nil // another command stamped since
	}
	return tx.SetStamp(g)
}
