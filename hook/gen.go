package hook

// The nftables generation (nat.Generation) changes with every commit to
// any table. The record keeps the generation at which the network's
// nftables state (its table, when nftables holds its rules, and its spoof
// check) was last verified: a warm setup that reads the same generation
// knows nothing has changed since, and trusts it with that one read. Any
// other generation runs the full check, which records the new one.
//
// A command's own transactions move the generation too. After them it
// records the new generation, but only if it moved by exactly as many
// commits as the command made since the verified one: else someone else
// committed meanwhile, and the next setup checks in full. Legacy iptables
// has no generation; a network whose rules are there keeps its check.

import "github.com/bridgehook/bridgehook/ipam"

// fresh reports whether rec's generation is the kernel's now, and that
// generation; it reads it only where it can save a check.
func (n *Network) fresh(rec record) (uint32, bool) {
	if rec.Gen == 0 || !n.fw.Generational() && !n.SpoofCheck {
		return 0, false
	}
	g, err := n.gen()
	return g, err == nil && g == rec.Gen
}

// stamp records in rec the kernel's generation now, which the caller has
// just verified (or made), and remembers it for keepFresh.
func (n *Network) stamp(rec *record) {
	g, err := n.gen()
	if err != nil {
		g = 0 // unknown: the next setup checks in full
	}
	rec.Gen, n.verifiedGen = g, g
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
	rec, ok := readRecord(tx)
	if !ok || rec.Gen != n.verifiedGen {
		return nil // another command recorded since
	}
	rec.Gen = g
	return tx.SetRecord(rec)
}
