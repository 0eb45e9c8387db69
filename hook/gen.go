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

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
)

// stamp is the line the store keeps beside the network's record: the
// generation at which the network's nftables state was last verified (0:
// unknown), and the backend and warmKey of the configuration and bridge
// the record vouched for then. A warm setup whose configuration and
// bridge give the same key trusts the bridge on the stamp alone, without
// decoding the record: the store clears the stamp with every new record.
type stamp struct {
	gen      uint32
	firewall string
	key      string
}

// readStamp reads tx's stamp; one that does not read (none, or one of an
// older version) is the zero stamp, which vouches for nothing.
func readStamp(tx ipam.Tx) stamp {
	f := strings.SplitN(tx.Stamp(), " ", 3)
	if len(f) != 3 {
		return stamp{}
	}
	g, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return stamp{}
	}
	return stamp{uint32(g), f[1], f[2]}
}

func (s stamp) String() string { return fmt.Sprintf("%d %s %s", s.gen, s.firewall, s.key) }

// warmKey is what trusts compares of a record, for n's configuration on
// the bridge of the given index.
func (n *Network) warmKey(index int) string {
	return fmt.Sprintf("bridge=%d icc=%t internal=%t spoof-check=%t non-masquerade=%v names=%v",
		index, n.ICC, n.Internal, n.SpoofCheck, n.NonMasquerade, n.namesNetwork())
}

// vouches reports whether st was written for n's configuration on br, in
// the backend n was told to use, if any.
func (n *Network) vouches(st stamp, br bridge.Bridge) bool {
	return st.key != "" && (n.Firewall == "" || n.Firewall == st.firewall) && st.key == n.warmKey(br.Index)
}

// fresh reports whether the generation of st is the kernel's now, and
// that generation; it reads it only where it can save a check.
func (n *Network) fresh(st stamp) (uint32, bool) {
	if !n.fw.Generational() && !n.SpoofCheck {
		return 0, false
	}
	if st.gen == 0 {
		return 0, false
	}
	g, err := n.gen()
	return g, err == nil && g == st.gen
}

// stamp records in tx the kernel's generation now, which the caller has
// just verified (or made) for n on the bridge of the given index, and
// remembers it for keepFresh. old is the stamp tx holds: the caller has
// read it, or just wrote a record, which cleared it.
func (n *Network) stamp(tx ipam.Tx, old stamp, index int) error {
	g, err := n.gen()
	if err != nil {
		g = 0 // unknown: the next setup checks in full
	}
	n.verifiedGen = g
	return n.restamp(tx, old, g, index)
}

// restamp writes the stamp of generation g for n on the bridge of the
// given index, unless old says just that already. A setup that trusted
// the record restamps a fresh stamp too, so the next one needs no record.
func (n *Network) restamp(tx ipam.Tx, old stamp, g uint32, index int) error {
	st := stamp{g, n.Firewall, n.warmKey(index)}
	if st == old {
		return nil
	}
	return tx.SetStamp(st.String())
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
	st := readStamp(tx)
	if st.gen != n.verifiedGen {
		return nil // another command stamped since
	}
	st.gen = g
	return tx.SetStamp(st.String())
}
