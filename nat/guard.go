package nat

// The spoof check: what each container may send as, enforced where its
// frames enter the bridge, in a table of the bridge family of our own per
// network, "bridge bridgehook-BRIDGE". It works whichever backend holds
// the network's other rules: iptables cannot see ARP or the MAC of a
// bridged frame.
//
// A frame from a veth the table knows (set "ports") is dropped unless
//   - its source MAC is the container's ("macs": veth . MAC);
//   - it is ARP, IPv4 or IPv6 (no VLAN tags, no other protocols);
//   - ARP: its sender MAC and IPv4 are the container's (or 0.0.0.0, a
//     probe);
//   - IPv4: its source is the container's address ("ip4": veth . addr),
//     and it is no DHCP server's reply;
//   - IPv6: its source is the container's address or link-local address
//     ("ip6"), or :: (duplicate address detection); it is no router
//     advertisement, redirect or DHCPv6 server's reply; a neighbour
//     advertisement's target is the container's own address, and the
//     link-layer address of a neighbour solicitation or advertisement is
//     its MAC.
//
// Each check is one lookup in a set keyed by the input interface, so a
// packet costs the same with one container or ten thousand. Frames from
// ports the table does not know (the bridge itself, anything else
// enslaved to it) pass untouched.

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Sender is one container's veth and what it may send as.
type Sender struct {
	Veth string
	MAC  net.HardwareAddr
	// IPs are its leased addresses; its IPv6 link-local address, from
	// its MAC, is added when the network has IPv6.
	IPs []netip.Addr
}

// Guard keeps the spoof check of networks: GuardTable over nftables, or
// a fake in unit tests.
type Guard interface {
	// Install makes bridge's table hold the check and exactly senders, in
	// one transaction.
	Install(bridge string, senders []Sender) error
	// Verify reports whether bridge's table is in place: a flush of the
	// ruleset deletes it. One netlink read.
	Verify(bridge string) (bool, error)
	// Allow adds s to bridge's table, Forbid takes it out: one
	// transaction each. Forbid skips what is gone.
	Allow(bridge string, s Sender) error
	Forbid(bridge string, s Sender) error
	// Senders lists the veths bridge's table knows; Drop takes every
	// entry of veths out, whatever they allow (gc: their leases are lost).
	Senders(bridge string) ([]string, error)
	Drop(bridge string, veths []string) error
	// Uninstall deletes bridge's table, if any.
	Uninstall(bridge string) error
	Close()
}

// GuardTable is the Guard of the kernel's nftables.
type GuardTable struct{ c conn }

// NewGuard returns the Guard of the kernel's nftables.
func NewGuard() *GuardTable { return &GuardTable{} }

var _ Guard = (*GuardTable)(nil)

// The table's chains and sets.
const (
	guardChain = "guard"
	guardARP   = "arp"
	guardIP4   = "ip4"
	guardIP6   = "ip6"
	setPorts   = "ports"
	setMACs    = "macs"
	setIP4     = "ip4"
	setIP6     = "ip6"
)

func guardTable(bridge string) *nftables.Table {
	return &nftables.Table{Name: tablePrefix + bridge, Family: nftables.TableFamilyBridge}
}

// guardSets are the table's sets, keyed by the input interface.
func guardSets(t *nftables.Table) map[string]*nftables.Set {
	set := func(name string, key nftables.SetDatatype, concat bool) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: key, Concatenation: concat}
	}
	return map[string]*nftables.Set{
		setPorts: set(setPorts, nftables.TypeIFName, false),
		setMACs:  set(setMACs, nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr), true),
		setIP4:   set(setIP4, nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr), true),
		setIP6:   set(setIP6, nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr), true),
	}
}

// guardObjects is how many chains and sets the table has: what the
// kernel counts as its use.
const guardObjects = 8

// elements are s's entries in each set.
func (s Sender) elements() map[string][]nftables.SetElement {
	key := func(parts ...[]byte) nftables.SetElement {
		var k []byte
		for _, p := range parts {
			k = append(k, p...)
			for len(k)%4 != 0 { // each part of a concatenation fills whole registers
				k = append(k, 0)
			}
		}
		return nftables.SetElement{Key: k}
	}
	name := ifname(s.Veth)
	els := map[string][]nftables.SetElement{
		setPorts: {key(name)},
		setMACs:  {key(name, s.MAC)},
	}
	for _, ip := range s.addrs() {
		set := setIP4
		if ip.Is6() {
			set = setIP6
		}
		els[set] = append(els[set], key(name, ip.AsSlice()))
	}
	return els
}

// addrs are the addresses s may send from: its own, and with IPv6 its
// link-local address.
func (s Sender) addrs() []netip.Addr {
	addrs := slices.Clone(s.IPs)
	if slices.ContainsFunc(s.IPs, netip.Addr.Is6) {
		addrs = append(addrs, LinkLocal(s.MAC))
	}
	return addrs
}

// LinkLocal is the IPv6 link-local address the kernel gives an interface
// with MAC mac (EUI-64, as addr_gen_mode 0, a namespace's default, does).
func LinkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	copy(a[8:], []byte{mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	return netip.AddrFrom16(a)
}

// Install replaces bridge's table with the check and senders. A table
// that is not there is not deleted first: a delete waits for the kernel's
// RCU grace period.
func (g *GuardTable) Install(bridge string, senders []Sender) error {
	t := guardTable(bridge)
	have, err := g.c.table(t)
	if err != nil {
		return fmt.Errorf("spoof check of %s: %w", bridge, err)
	}
	c, err := g.c.get()
	if err != nil {
		return err
	}
	if have != nil {
		c.DelTable(t)
	}
	c.AddTable(t)
	sets := guardSets(t)
	for _, name := range []string{setPorts, setMACs, setIP4, setIP6} {
		var els []nftables.SetElement
		for _, s := range senders {
			els = append(els, s.elements()[name]...)
		}
		if err := c.AddSet(sets[name], els); err != nil {
			return fmt.Errorf("spoof check of %s: %w", bridge, err)
		}
	}
	addGuardChains(c, t, sets)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("spoof check of %s: nftables: %w", bridge, err)
	}
	return nil
}

// addGuardChains adds the base chain, which checks the source MAC and
// sends each protocol to its chain, and the chains of ARP, IPv4 and IPv6.
func addGuardChains(c *nftables.Conn, t *nftables.Table, sets map[string]*nftables.Set) {
	accept := nftables.ChainPolicyAccept
	base := c.AddChain(&nftables.Chain{Name: guardChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-300), Policy: &accept})
	chains := map[string]*nftables.Chain{}
	for _, name := range []string{guardARP, guardIP4, guardIP6} {
		chains[name] = c.AddChain(&nftables.Chain{Name: name, Table: t})
	}
	rule := func(ch *nftables.Chain, parts ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: slices.Concat(parts...)})
	}
	drop := []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}
	lookup := func(set string, invert bool) []expr.Any {
		return []expr.Any{&expr.Lookup{SourceRegister: reg1, SetName: set, SetID: sets[set].ID, Invert: invert}}
	}
	notZero := func(n int) []expr.Any {
		return []expr.Any{&expr.Cmp{Op: expr.CmpOpNeq, Register: reg2, Data: make([]byte, n)}}
	}
	is := func(b byte) []expr.Any {
		return []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: reg2, Data: []byte{b}}}
	}

	// Not a container's port: none of ours to check.
	rule(base, iif(), lookup(setPorts, true), []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}})
	rule(base, iif(), linkSource(), lookup(setMACs, true), drop)
	for _, p := range []struct {
		ethertype uint16
		chain     string
	}{{unix.ETH_P_ARP, guardARP}, {unix.ETH_P_IP, guardIP4}, {unix.ETH_P_IPV6, guardIP6}} {
		rule(base, etherType(p.ethertype), []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: p.chain}})
	}
	rule(base, drop) // VLAN tags and other protocols

	// ARP: the sender's MAC and IPv4 are the container's, or 0.0.0.0.
	rule(chains[guardARP], iif(), network(8, 6), lookup(setMACs, true), drop)
	rule(chains[guardARP], network(14, 4), notZero(4), iif(), lookup(setIP4, true), drop)

	// IPv4: the source is the container's; no DHCP server's replies.
	rule(chains[guardIP4], iif(), network(12, 4), lookup(setIP4, true), drop)
	rule(chains[guardIP4], l4(unix.IPPROTO_UDP), sourcePort(67), drop)

	// IPv6: the source is the container's, its link-local or ::; no
	// router advertisements, redirects or DHCPv6 server's replies; what
	// it says of neighbours is about itself.
	rule(chains[guardIP6], network(8, 16), notZero(16), iif(), lookup(setIP6, true), drop)
	for _, typ := range []byte{134, 137} { // router advertisement, redirect
		rule(chains[guardIP6], icmp6(typ), drop)
	}
	rule(chains[guardIP6], l4(unix.IPPROTO_UDP), sourcePort(547), drop)
	rule(chains[guardIP6], icmp6(136), iif(), transport(8, 16), lookup(setIP6, true), drop)
	for _, o := range []struct{ typ, option byte }{{135, 1}, {136, 2}} { // source, target link-layer address
		rule(chains[guardIP6], icmp6(o.typ), transport(24, 1), is(o.option), iif(), transport(26, 6), lookup(setMACs, true), drop)
	}
}

// iif loads the input interface's name into register 1: the first part
// of every set's key, the second loaded into register 2 after it.
func iif() []expr.Any { return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1}} }

func linkSource() []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: reg2, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6}}
}

func network(offset, n uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: reg2, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n}}
}

func transport(offset, n uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: reg2, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: n}}
}

func etherType(t uint16) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(t)}}
}

func l4(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}}}
}

func sourcePort(p uint16) []expr.Any {
	return append(transport(0, 2), &expr.Cmp{Op: expr.CmpOpEq, Register: reg2, Data: binaryutil.BigEndian.PutUint16(p)})
}

func icmp6(typ byte) []expr.Any {
	return append(append(l4(unix.IPPROTO_ICMPV6), transport(0, 1)...),
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg2, Data: []byte{typ}})
}

// Verify reports whether bridge's table is there with its chains and sets.
func (g *GuardTable) Verify(bridge string) (bool, error) {
	t, err := g.c.table(guardTable(bridge))
	if err != nil || t == nil {
		return false, err
	}
	return chainsIn(t) == guardObjects, nil
}

// Allow adds s to bridge's table.
func (g *GuardTable) Allow(bridge string, s Sender) error {
	return g.elements(bridge, s, (*nftables.Conn).SetAddElements, "allow")
}

// Forbid takes s out of bridge's table. What is gone already (the whole
// table, after a flush; an element) is no error: the kernel refuses a
// transaction that deletes what is not there, so then each element goes
// on its own.
func (g *GuardTable) Forbid(bridge string, s Sender) error {
	err := g.elements(bridge, s, (*nftables.Conn).SetDeleteElements, "forbid")
	if err == nil || !missing(err) {
		return err
	}
	if t, terr := g.c.table(guardTable(bridge)); terr != nil || t == nil {
		return terr
	}
	for name, els := range s.elements() {
		for _, el := range els {
			if err := g.apply(bridge, s.Veth, map[string][]nftables.SetElement{name: {el}}, (*nftables.Conn).SetDeleteElements, "forbid"); err != nil && !missing(err) {
				return err
			}
		}
	}
	return nil
}

func (g *GuardTable) elements(bridge string, s Sender, op func(*nftables.Conn, *nftables.Set, []nftables.SetElement) error, verb string) error {
	return g.apply(bridge, s.Veth, s.elements(), op, verb)
}

// apply runs op on the elements of each set named in els, in one
// transaction.
func (g *GuardTable) apply(bridge, veth string, els map[string][]nftables.SetElement, op func(*nftables.Conn, *nftables.Set, []nftables.SetElement) error, verb string) error {
	c, err := g.c.get()
	if err != nil {
		return err
	}
	sets := guardSets(guardTable(bridge))
	for name, els := range els {
		if err := op(c, sets[name], els); err != nil {
			return fmt.Errorf("spoof check of %s: %s %s: %w", bridge, verb, veth, err)
		}
	}
	if err := c.Flush(); err != nil {
		g.c.close()
		return fmt.Errorf("spoof check of %s: %s %s: nftables: %w", bridge, verb, veth, err)
	}
	return nil
}

// Senders lists the veths bridge's table knows; none without a table.
func (g *GuardTable) Senders(bridge string) ([]string, error) {
	c, err := g.c.get()
	if err != nil {
		return nil, err
	}
	els, err := c.GetSetElements(guardSets(guardTable(bridge))[setPorts])
	if err != nil {
		g.c.close()
		if missing(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("spoof check of %s: %w", bridge, err)
	}
	var veths []string
	for _, e := range els {
		veths = append(veths, string(trimNUL(e.Key)))
	}
	return veths, nil
}

// Drop takes every entry of veths out of bridge's table, in one
// transaction.
func (g *GuardTable) Drop(bridge string, veths []string) error {
	c, err := g.c.get()
	if err != nil {
		return err
	}
	doomed := 0
	for _, set := range guardSets(guardTable(bridge)) {
		els, err := c.GetSetElements(set)
		if err != nil {
			g.c.close()
			if missing(err) {
				return nil
			}
			return fmt.Errorf("spoof check of %s: %w", bridge, err)
		}
		els = slices.DeleteFunc(els, func(e nftables.SetElement) bool {
			return !slices.Contains(veths, string(trimNUL(e.Key[:min(len(e.Key), unix.IFNAMSIZ)])))
		})
		if len(els) > 0 {
			if err := c.SetDeleteElements(set, els); err != nil {
				return fmt.Errorf("spoof check of %s: %w", bridge, err)
			}
			doomed += len(els)
		}
	}
	if doomed == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("spoof check of %s: drop %v: nftables: %w", bridge, veths, err)
	}
	return nil
}

func trimNUL(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

// Uninstall deletes bridge's table.
func (g *GuardTable) Uninstall(bridge string) error {
	t := guardTable(bridge)
	have, err := g.c.table(t)
	if err != nil || have == nil {
		return err
	}
	c, err := g.c.get()
	if err != nil {
		return err
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove spoof check of %s: nftables: %w", bridge, err)
	}
	return nil
}

// Close lets go of the netlink connection.
func (g *GuardTable) Close() { g.c.close() }
