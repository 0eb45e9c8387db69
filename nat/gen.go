package nat

import (
	"encoding/binary"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Generation is the kernel's nftables ruleset generation: it changes with
// every transaction committed to any table, iptables-nft's and
// firewalld's included, and with nothing else. A setup that finds the
// generation it recorded after its network's rules were last verified
// knows that nothing has touched any rule since, and trusts them with this
// one round trip.
//
// google/nftables has no call for it (v0.3.0); it is one message,
// NFT_MSG_GETGEN, answered by NFT_MSG_NEWGEN with NFTA_GEN_ID, sent
// through vishvananda/netlink's request machinery.
func Generation() (uint32, error) {
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN, 0)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: unix.NFNETLINK_V0})
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	for _, m := range msgs {
		if gen, ok := genOf(m); ok {
			return gen, nil
		}
	}
	return 0, fmt.Errorf("nftables generation: no NFTA_GEN_ID in the kernel's answer")
}

// genOf reads NFTA_GEN_ID (big-endian) from a NEWGEN message's payload:
// an nfgenmsg, then attributes.
func genOf(m []byte) (uint32, bool) {
	if len(m) < nl.SizeofNfgenmsg {
		return 0, false
	}
	attrs, err := nl.ParseRouteAttr(m[nl.SizeofNfgenmsg:])
	if err != nil {
		return 0, false
	}
	for _, a := range attrs {
		if a.Attr.Type&^unix.NLA_F_NESTED == unix.NFTA_GEN_ID && len(a.Value) == 4 {
			return binary.BigEndian.Uint32(a.Value), true
		}
	}
	return 0, false
}
