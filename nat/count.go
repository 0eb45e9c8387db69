package nat

import (
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ruleCount counts the rules of chain in the nf_tables table that
// iptables-nft keeps for family fam: what a warm setup's full check of
// the iptables backend reads of each of a network's chains. A missing
// chain counts none, as an empty one does.
//
// google/nftables reads rules only whole (GetRules), decoding every
// expression of every rule; in a hook's short life that cost 0.3-0.5 ms a
// chain here, most of it the first run of the decoders. A count is the
// same message, NFT_MSG_GETRULE as a dump filtered by table and chain, with
// nothing read of the answer but how many rules it holds: one message the
// library lacks, sent as the generation's is (exchange).
func ruleCount(fam Family, table, chain string) (int, error) {
	family := uint8(unix.NFPROTO_IPV4)
	if fam == IPv6 {
		family = unix.NFPROTO_IPV6
	}
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETRULE, unix.NLM_F_DUMP)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: family, Version: unix.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated(table)))
	req.AddData(nl.NewRtAttr(unix.NFTA_RULE_CHAIN, nl.ZeroTerminated(chain)))
	n := 0
	err := exchange(req, func(m syscall.NetlinkMessage) (done bool) {
		if m.Header.Type == unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE {
			n++
		}
		return false // to the end of the dump
	})
	return n, err
}
