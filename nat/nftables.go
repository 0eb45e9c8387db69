package nat

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// NFTables is the Firewall of nftables, spoken over netlink: a table of
// our own per network, "inet bridgehook-BRIDGE", replaced whole in one
// transaction when installed, and deleted whole when removed.
//
// An accept in one base chain does not stop a DROP in another, so where
// iptables runs on nf_tables and its FORWARD chain exists, the table's
// accepts also set AcceptMark, and one rule at the head of iptables'
// FORWARD accepts what carries it: see coexistRule.
type NFTables struct {
	c      conn
	sysctl func(path string) error
}

// NewNFTables returns the nftables Firewall.
func NewNFTables() *NFTables { return &NFTables{sysctl: sysctlOn} }

var _ Firewall = (*NFTables)(nil)

// AcceptMark is the packet mark bit the nftables rules set on what they
// accept, for iptables' FORWARD to accept too. It is a bit no common
// tenant of the mark uses (kube-proxy 0x4000 and 0x8000, Cilium 0x0f00,
// Tailscale 0xff0000).
const AcceptMark = 0x01000000

// ipsDstNAT is the conntrack status bit of a connection DNAT rewrote
// (IPS_DST_NAT in linux/netfilter/nf_conntrack_common.h).
const ipsDstNAT = 1 << 5

// Chain names inside a network's table.
const (
	nftForward     = "forward"
	nftPostrouting = "postrouting"
	nftPrerouting  = "prerouting"
	nftOutput      = "output"
	nftPorts       = "ports"
)

// Registers the rules load into: an address or interface in 1, a port
// or a second value in 2.
const (
	reg1 = 1
	reg2 = 2
)

func (n Network) nftTable() *nftables.Table {
	return &nftables.Table{Name: tablePrefix + n.Bridge, Family: nftables.TableFamilyINet}
}

// tablePrefix names our tables, one per network and family: the inet
// table of the nftables backend, the bridge table of the spoof check.
const tablePrefix = "bridgehook-"

// iptForward is the chain of iptables (or ip6tables, for IPv6) on
// nf_tables that coexistRule goes into.
func iptForward(fam Family) *nftables.Chain {
	return &nftables.Chain{Name: "FORWARD", Table: &nftables.Table{Name: "filter", Family: nftFamily(fam)}}
}

func (n Network) coexistComment() string {
	return n.comment("accept what table inet bridgehook-" + n.Bridge + " accepts")
}

// nftChains returns the chains of n's table: base chains at the hooks and
// priorities iptables uses, the forward one just before iptables' so that
// AcceptMark is set by the time iptables' FORWARD looks for it.
func (n Network) nftChains() map[string]*nftables.Chain {
	t := n.nftTable()
	accept := nftables.ChainPolicyAccept
	base := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: &prio, Policy: &accept}
	}
	return map[string]*nftables.Chain{
		nftForward:     base(nftForward, nftables.ChainTypeFilter, nftables.ChainHookForward, *nftables.ChainPriorityFilter-10),
		nftPostrouting: base(nftPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, *nftables.ChainPriorityNATSource),
		nftPrerouting:  base(nftPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, *nftables.ChainPriorityNATDest),
		nftOutput:      base(nftOutput, nftables.ChainTypeNAT, nftables.ChainHookOutput, *nftables.ChainPriorityNATDest),
		nftPorts:       {Name: nftPorts, Table: t},
	}
}

// nftChainOf is the chain of n's table that a Rule of chain c goes into.
func nftChainOf(c Chain) string {
	switch c {
	case Masquerade:
		return nftPostrouting
	case Ports:
		return nftPorts
	}
	return nftForward
}

// nftRule renders r, a rule of network n, as nftables expressions with
// its comment, the way nft(8) would: what it matches, then its verdict.
func (n Network) nftRule(r Rule) *nftables.Rule {
	e := append(nftMatch(r), nftVerdict(r)...)
	return &nftables.Rule{
		Table:    n.nftTable(),
		Chain:    &nftables.Chain{Name: nftChainOf(r.Chain), Table: n.nftTable()},
		Exprs:    e,
		UserData: userdata.AppendString(nil, userdata.TypeComment, n.comment(r.What)),
	}
}

// familyProto is the NFPROTO value of r's family: IPv4 for a rule of both.
func familyProto(r Rule) byte {
	if r.Family() == IPv6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

// nftMatch is what r matches. In an inet table, network headers and NAT
// need the family checked first, as nft(8) does for "ip saddr" and "ip6
// saddr".
func nftMatch(r Rule) []expr.Any {
	var e []expr.Any
	if r.Family() != Both {
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{familyProto(r)}})
	}
	if r.Src.IsValid() {
		e = append(e, nftPrefix(r.Src, false)...)
	}
	if r.Dst.IsValid() {
		e = append(e, nftPrefix(r.Dst, true)...)
	}
	if r.In != "" {
		e = append(e, nftIface(expr.MetaKeyIIFNAME, expr.CmpOpEq, r.In)...)
	}
	if r.Out != "" {
		e = append(e, nftIface(expr.MetaKeyOIFNAME, expr.CmpOpEq, r.Out)...)
	}
	if r.NotOut != "" {
		e = append(e, nftIface(expr.MetaKeyOIFNAME, expr.CmpOpNeq, r.NotOut)...)
	}
	if r.Proto != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{protoNumber(r.Proto)}})
	}
	if r.DPort != 0 {
		e = append(e, nftDPort(r.DPort, r.DPortEnd)...)
	}
	if r.Replies {
		e = append(e, nftCtBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)...)
	}
	if r.DNATed {
		e = append(e, nftCtBits(expr.CtKeySTATUS, ipsDstNAT)...)
	}
	return e
}

// nftPrefix matches the source (or with dst the destination) address in
// p: at 12 and 16 in an IPv4 header, at 8 and 24 in an IPv6 one.
func nftPrefix(p netip.Prefix, dst bool) []expr.Any {
	size := uint32(p.Addr().BitLen() / 8)
	offset := uint32(12)
	switch {
	case size == 16 && dst:
		offset = 24
	case size == 16:
		offset = 8
	case dst:
		offset = 16
	}
	e := []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size}}
	if p.Bits() < p.Addr().BitLen() {
		mask := net.CIDRMask(p.Bits(), p.Addr().BitLen())
		e = append(e, &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: size, Mask: mask, Xor: make([]byte, size)})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: p.Masked().Addr().AsSlice()})
}

// nftIface compares the interface of key with name.
func nftIface(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: reg1}, &expr.Cmp{Op: op, Register: reg1, Data: ifname(name)}}
}

// nftDPort matches a destination port, or a range. Every protocol we
// publish (tcp, udp, sctp) has its destination port at offset 2.
func nftDPort(port, end uint16) []expr.Any {
	e := []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}}
	if end == port {
		return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(port)})
	}
	return append(e, &expr.Range{Op: expr.CmpOpEq, Register: reg1,
		FromData: binaryutil.BigEndian.PutUint16(port), ToData: binaryutil.BigEndian.PutUint16(end)})
}

// nftCtBits matches a conntrack field of key with any of bits set.
func nftCtBits(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{&expr.Ct{Register: reg1, Key: key},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)}}
}

// nftVerdict is what r does with what it matched.
func nftVerdict(r Rule) []expr.Any {
	switch r.Verdict {
	case Accept:
		if r.Chain == Forward {
			return append(setMark(AcceptMark), &expr.Verdict{Kind: expr.VerdictAccept})
		}
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	case Drop:
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}
	case Return:
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	case Masq:
		return []expr.Any{&expr.Masq{}}
	case DNAT:
		e := []expr.Any{&expr.Immediate{Register: reg1, Data: r.To.Addr().AsSlice()}}
		nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(familyProto(r)), RegAddrMin: reg1}
		if r.To.Port() != 0 {
			e = append(e, &expr.Immediate{Register: reg2, Data: binaryutil.BigEndian.PutUint16(r.To.Port())})
			nat.RegProtoMin, nat.Specified = reg2, true
		}
		return append(e, nat)
	}
	return nil
}

// ifname is an interface name as the kernel compares it: IFNAMSIZ bytes,
// zero-padded, so that "br" does not match "br0".
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func protoNumber(proto string) byte {
	switch proto {
	case "udp":
		return unix.IPPROTO_UDP
	case "sctp":
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

// setMark ORs bits into the packet mark, leaving the others' bits alone.
func setMark(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^bits), Xor: binaryutil.NativeEndian.PutUint32(bits)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// toPorts is the rule of the prerouting and output chains: traffic for
// one of the host's own addresses goes through the published ports.
func (n Network) toPorts(chain string) *nftables.Rule {
	return &nftables.Rule{
		Table: n.nftTable(),
		Chain: &nftables.Chain{Name: chain, Table: n.nftTable()},
		Exprs: []expr.Any{
			&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: nftPorts},
		},
		UserData: userdata.AppendString(nil, userdata.TypeComment, n.comment("to published ports")),
	}
}

// coexistRule goes at the head of iptables' (or for IPv6 ip6tables')
// FORWARD: it accepts what n's table accepted. It is written the way
// iptables-nft writes "-m mark --mark M/M -m comment --comment C -j
// ACCEPT", so iptables-save shows it as that and iptables keeps working on
// the chain.
func (n Network) coexistRule(fam Family) *nftables.Rule {
	mark := binaryutil.NativeEndian.PutUint32(AcceptMark)
	chain := iptForward(fam)
	return &nftables.Rule{
		Table: chain.Table,
		Chain: chain,
		Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: mark, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: mark},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
		UserData: userdata.AppendString(nil, userdata.TypeComment, n.coexistComment()),
	}
}

// commentOf returns the comment a rule carries.
func commentOf(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// Install replaces n's table with one holding exactly n's policy and the
// ports of pubs, and puts coexistRule in iptables' FORWARD if that chain
// exists: one transaction.
func (f *NFTables) Install(n Network, pubs []Published) error {
	if err := n.enable(f.sysctl); err != nil {
		return err
	}
	rules, err := n.withPorts(pubs)
	if err != nil {
		return err
	}
	// Read first: a failed read drops the connection (conn.rules).
	coexist := map[Family]coexistence{}
	for _, fam := range n.Families() {
		if coexist[fam], err = f.coexisting(&f.c, n, fam); err != nil {
			return err
		}
	}
	t := n.nftTable()
	// A table that is not there is not deleted first: a delete waits for
	// the kernel's RCU grace period (13 ms here), the most of a cold setup.
	have, err := f.c.table(t)
	if err != nil {
		return fmt.Errorf("install rules for %s: %w", n.Bridge, err)
	}
	c, err := f.c.get()
	if err != nil {
		return err
	}
	if have != nil {
		c.DelTable(t)
	}
	c.AddTable(t)
	chains := n.nftChains()
	for _, name := range []string{nftForward, nftPostrouting, nftPrerouting, nftOutput, nftPorts} {
		c.AddChain(chains[name])
	}
	for _, r := range rules {
		c.AddRule(n.nftRule(r))
	}
	c.AddRule(n.toPorts(nftPrerouting))
	c.AddRule(n.toPorts(nftOutput))
	for fam, co := range coexist {
		if !co.present {
			continue
		}
		for _, old := range co.ours {
			if err := c.DelRule(old); err != nil {
				return fmt.Errorf("install rules for %s: %w", n.Bridge, err)
			}
		}
		c.InsertRule(n.coexistRule(fam))
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install rules for %s: nftables: %w", n.Bridge, err)
	}
	return nil
}

// coexistence is what iptables' (or ip6tables') FORWARD holds for a
// network.
type coexistence struct {
	present bool             // iptables on nf_tables has a FORWARD chain
	ours    []*nftables.Rule // the network's coexistRules in it
}

func (f *NFTables) coexisting(c *conn, n Network, fam Family) (coexistence, error) {
	chain := iptForward(fam)
	rules, err := c.rules(chain.Table, chain.Name)
	if err != nil {
		return coexistence{}, fmt.Errorf("read iptables' FORWARD chain: %w", err)
	}
	var co coexistence
	for _, r := range rules {
		if commentOf(r) == n.coexistComment() {
			r.Table, r.Chain = chain.Table, chain
			co.ours = append(co.ours, r)
		}
	}
	if len(co.ours) > 0 {
		co.present = true
		return co, nil
	}
	// The dump of a chain that does not exist is as empty as that of an
	// empty chain (with a DROP policy, say).
	co.present, err = c.exists(chain.Table, chain.Name)
	return co, err
}

// missing reports whether err says a table or chain does not exist. The
// library formats some netlink errors with %v, so errors.Is alone misses
// them.
func missing(err error) bool {
	return errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), unix.ENOENT.Error())
}

// Verify asks for n's table, which a flush of the ruleset deletes, and
// reads iptables' FORWARD, which a reload of iptables flushes: two netlink
// reads, three where iptables has no FORWARD chain. A read that fails
// says "not in place"; the Install that follows reports why.
func (f *NFTables) Verify(n Network) (bool, error) {
	if err := n.forwarding(f.sysctl); err != nil {
		return false, err
	}
	t, err := f.c.table(n.nftTable())
	if err != nil || t == nil || chainsIn(t) != len(n.nftChains()) {
		return false, nil
	}
	for _, fam := range n.Families() {
		co, err := f.coexisting(&f.c, n, fam)
		if err != nil || (co.present && len(co.ours) != 1) {
			return false, nil
		}
	}
	return true, nil
}

func (f *NFTables) Generational() bool { return true }

func (f *NFTables) Forward(n Network) error { return n.forwarding(f.sysctl) }

// Uninstall deletes n's table and its rule in iptables' FORWARD.
func (f *NFTables) Uninstall(n Network) error {
	var ours []*nftables.Rule
	for _, fam := range n.Families() {
		co, err := f.coexisting(&f.c, n, fam)
		if err != nil {
			return err
		}
		ours = append(ours, co.ours...)
	}
	table, err := f.c.table(n.nftTable())
	if err != nil {
		return fmt.Errorf("remove rules of %s: %w", n.Bridge, err)
	}
	c, err := f.c.get()
	if err != nil {
		return err
	}
	if table != nil {
		c.DelTable(n.nftTable())
	}
	for _, r := range ours {
		if err := c.DelRule(r); err != nil {
			return fmt.Errorf("remove rules of %s: %w", n.Bridge, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove rules of %s: nftables: %w", n.Bridge, err)
	}
	return nil
}

// Publish adds the port rules of p in one transaction.
func (f *NFTables) Publish(n Network, p Published) error {
	rules, err := n.PortRules(p)
	if err != nil {
		return err
	}
	c, err := f.c.get()
	if err != nil {
		return err
	}
	for _, r := range rules {
		c.AddRule(n.nftRule(r))
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("publish ports of %s: nftables: %w", p.ID, err)
	}
	return nil
}

// Unpublish deletes the port rules of p, found by their comment and
// address, in one transaction.
func (f *NFTables) Unpublish(n Network, p Published) error {
	rules, err := f.c.rules(n.nftTable(), nftPorts)
	if err != nil && !missing(err) {
		return fmt.Errorf("unpublish ports of %s: %w", p.ID, err)
	}
	c, err := f.c.get()
	if err != nil {
		return err
	}
	doomed := 0
	for _, r := range rules {
		if pub, ok := n.publishedBy(r); ok && pub.ID == Label(p.ID) && slices.Contains(p.addrs(), pub.IP) {
			r.Table, r.Chain = n.nftTable(), &nftables.Chain{Name: nftPorts, Table: n.nftTable()}
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("unpublish ports of %s: %w", p.ID, err)
			}
			doomed++
		}
	}
	if doomed > 0 {
		if err := c.Flush(); err != nil {
			return fmt.Errorf("unpublish ports of %s: nftables: %w", p.ID, err)
		}
	}
	return flushUDP(p)
}

// Published reads the port rules of n's table back.
func (f *NFTables) Published(n Network) ([]Published, error) {
	rules, err := f.c.rules(n.nftTable(), nftPorts)
	if err != nil {
		if missing(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read firewall: %w", err)
	}
	var pubs []Published
	for _, r := range rules {
		if pub, ok := n.publishedBy(r); ok {
			pubs = addPublished(pubs, pub)
		}
	}
	return pubs, nil
}

// publishedBy reads one port rule back: its comment names the container
// and the port, its first immediate the container's address.
func (n Network) publishedBy(r *nftables.Rule) (Published, bool) {
	for _, e := range r.Exprs {
		if im, ok := e.(*expr.Immediate); ok && im.Register == reg1 {
			if ip, ok := netip.AddrFromSlice(im.Data); ok {
				return n.portComment(commentOf(r), ip)
			}
		}
	}
	return Published{}, false
}

// Close lets go of the netlink connection.
func (f *NFTables) Close() { f.c.close() }

// conn is a netlink connection to nftables, dialled on first use and kept
// for the command's life: a dial costs more than a read.
type conn struct {
	c   *nftables.Conn
	err error
	// opts are the connection's options beyond AsLasting: none but in
	// tests, which dial a fake kernel.
	opts []nftables.ConnOption
}

func (c *conn) get() (*nftables.Conn, error) {
	if c.c == nil && c.err == nil {
		c.c, c.err = nftables.New(append([]nftables.ConnOption{nftables.AsLasting()}, c.opts...)...)
		if c.err != nil {
			c.err = fmt.Errorf("connect to nftables: %w", c.err)
		}
	}
	return c.c, c.err
}

// rules reads the rules of a chain. A read that fails leaves the reply's
// tail on a lasting socket, where the next transaction would read it as
// its own answer, so the socket goes with the error.
func (c *conn) rules(t *nftables.Table, chain string) ([]*nftables.Rule, error) {
	nc, err := c.get()
	if err != nil {
		return nil, err
	}
	rules, err := nc.GetRules(t, &nftables.Chain{Name: chain, Table: t})
	if err != nil {
		c.close()
	}
	return rules, err
}

// table returns table t as the kernel has it (Use: its number of chains),
// or nil if there is none.
func (c *conn) table(t *nftables.Table) (*nftables.Table, error) {
	nc, err := c.get()
	if err != nil {
		return nil, err
	}
	got, err := nc.ListTableOfFamily(t.Name, t.Family)
	if err != nil {
		c.close()
		if missing(err) {
			return nil, nil
		}
		return nil, err
	}
	return got, nil
}

// chainsIn is the number of chains in table t. google/nftables v0.3.0
// decodes the kernel's big-endian count in host order; a later version
// that fixes it gives small numbers, which are taken as they are.
func chainsIn(t *nftables.Table) int {
	if t.Use > 0xffff {
		return int(bits.ReverseBytes32(t.Use))
	}
	return int(t.Use)
}

// exists reports whether table t has a chain named chain.
func (c *conn) exists(t *nftables.Table, chain string) (bool, error) {
	nc, err := c.get()
	if err != nil {
		return false, err
	}
	if _, err := nc.ListChain(t, chain); err != nil {
		c.close()
		if missing(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

func (c *conn) close() {
	if c.c != nil {
		c.c.CloseLasting()
		c.c = nil
	}
}
