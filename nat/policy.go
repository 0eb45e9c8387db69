package nat

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bridgehook/bridgehook/port"
)

// Chain is where in a network's rules a Rule goes. Each backend maps it to
// a chain of its own.
type Chain int

const (
	// Forward judges traffic routed or bridged through the host.
	Forward Chain = iota
	// Masquerade rewrites the source of traffic as it leaves.
	Masquerade
	// Ports sends traffic for the host's own addresses to containers:
	// published ports, reached from outside and from the host itself.
	Ports
)

// Verdict is what a Rule does with the traffic it matches.
type Verdict int

const (
	Accept Verdict = iota
	Drop
	Masq
	DNAT
	// Return leaves the network's chain: the rules after it do not see
	// the traffic.
	Return
)

// Rule is one rule of a network's policy, in no backend's terms: the
// policy is written once, here, and iptables and nftables each render it.
// Zero fields match anything.
type Rule struct {
	Chain Chain
	// What the rule is for: its comment, after "bridgehook BRIDGE: ".
	What string
	// In and Out are the interfaces the traffic arrives on and leaves by;
	// NotOut an interface it must not leave by.
	In, Out, NotOut string
	Src, Dst        netip.Prefix
	// Replies matches conntrack state RELATED or ESTABLISHED: what answers
	// traffic that went the other way.
	Replies bool
	// DNATed matches connections a published port rewrote.
	DNATed bool
	// Proto and the port range DPort..DPortEnd match the transport.
	Proto           string
	DPort, DPortEnd uint16
	Verdict         Verdict
	// To is where DNAT sends the traffic; port 0 keeps the port.
	To netip.AddrPort
}

// Family is the IP version a rule applies to.
type Family int

const (
	// Both: a rule that matches no address applies to either.
	Both Family = iota
	IPv4
	IPv6
)

// Family is the IP version of the addresses r matches or rewrites to.
func (r Rule) Family() Family {
	for _, a := range []netip.Addr{r.Src.Addr(), r.Dst.Addr(), r.To.Addr()} {
		if a.IsValid() {
			return familyOf(a)
		}
	}
	return Both
}

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// in reports whether r belongs in the rules of family f.
func (r Rule) in(f Family) bool {
	fam := r.Family()
	return fam == Both || fam == f
}

// Families are the IP versions of n's subnets, IPv4 first.
func (n Network) Families() []Family {
	var fs []Family
	for _, p := range n.Subnets {
		fs = append(fs, familyOf(p.Addr()))
	}
	return fs
}

// Has reports whether n has a subnet of family f.
func (n Network) Has(f Family) bool {
	for _, p := range n.Subnets {
		if familyOf(p.Addr()) == f {
			return true
		}
	}
	return false
}

// Rules returns the policy of network n, without the published ports of
// its containers.
func (n Network) Rules() []Rule {
	br := n.Bridge
	fwd := func(what string, v Verdict, r Rule) Rule {
		r.Chain, r.What, r.Verdict = Forward, what, v
		return r
	}
	masq := func(what string, r Rule) Rule {
		r.Chain, r.What, r.Verdict = Masquerade, what, Masq
		return r
	}
	var rules []Rule
	// br_netfilter sends bridged frames through FORWARD, so a DROP policy
	// there would cut containers off from each other without this one.
	if n.Isolated {
		rules = append(rules, fwd("containers isolated", Drop, Rule{In: br, Out: br}))
	} else {
		rules = append(rules, fwd("between containers", Accept, Rule{In: br, Out: br}))
	}
	if n.Internal {
		return append(rules, fwd("internal, nothing leaves", Drop, Rule{In: br, NotOut: br}))
	}
	rules = append(rules,
		fwd("out of the bridge", Accept, Rule{In: br, NotOut: br}),
		// Into the bridge only what answers the containers' own traffic,
		// and what a published port sent there.
		fwd("replies into the bridge", Accept, Rule{Out: br, Replies: true}),
		fwd("published ports", Accept, Rule{Out: br, DNATed: true}),
	)
	for _, dst := range n.NonMasquerade {
		// Before the masquerade: traffic leaving for these keeps its
		// source (hairpin traffic goes back into the bridge: untouched).
		rules = append(rules, Rule{Chain: Masquerade, What: "not masqueraded to " + dst.String(), Dst: dst, NotOut: br, Verdict: Return})
	}
	for _, subnet := range n.Subnets {
		rules = append(rules,
			// Not for traffic that stays on the bridge: containers see
			// each other's real addresses. IPv6 too: a ULA subnet is not
			// routed outside, and a global one is rarely routed to this
			// host, as Docker and podman do by default.
			masq("masquerade", Rule{Src: subnet, NotOut: br}),
			// A container reaching a published port through a host
			// address and landing on the bridge again (hairpin): the
			// reply must come back through the host, so it must be
			// addressed to the host.
			masq("hairpin", Rule{Src: subnet, Dst: subnet, Out: br, DNATed: true}),
		)
	}
	if n.Has(IPv4) {
		// The host reaching a published port through 127.0.0.1: the
		// container cannot answer a loopback source. IPv6 has no
		// route_localnet, so ::1 is refused (port.Parse).
		rules = append(rules, masq("localhost", Rule{Src: netip.MustParsePrefix("127.0.0.0/8"), Out: br, DNATed: true}))
	}
	return rules
}

// Published is one container's published ports, to each of its
// addresses: IP, and IP6 on a dual-stack network. What a Firewall reads
// back has one entry per address, in IP.
type Published struct {
	ID    string
	IP    netip.Addr
	IP6   netip.Addr
	Ports []port.Mapping
}

func (p Published) addrs() []netip.Addr {
	if p.IP6.IsValid() {
		return []netip.Addr{p.IP, p.IP6}
	}
	return []netip.Addr{p.IP}
}

// maxPorts bounds the rules one container's ranges expand to.
const maxPorts = 1024

// PortRules returns the DNAT rules of one container's published ports: to
// each of its addresses, or with a host address to the one of that
// address's family. A range maps port by port, since DNAT to a port range
// would pick any port of it; a range mapped to the same ports needs one
// rule.
func (n Network) PortRules(p Published) ([]Rule, error) {
	var rules []Rule
	who := Label(p.ID)
	for _, m := range p.Ports {
		r := Rule{Chain: Ports, What: who + " " + m.String(), Proto: m.Proto, Verdict: DNAT}
		if m.HostIP.IsValid() {
			r.Dst = netip.PrefixFrom(m.HostIP, m.HostIP.BitLen())
		}
		if int(m.HostEnd-m.HostPort) >= maxPorts && m.HostPort != m.Container {
			return nil, fmt.Errorf("m %s: over %d ports to remap; publish a range on the same ports instead", m, maxPorts)
		}
		some := false
		for _, ip := range p.addrs() {
			if m.HostIP.IsValid() && m.HostIP.Is6() != ip.Is6() {
				continue
			}
			some = true
			if m.HostPort == m.Container {
				r.DPort, r.DPortEnd, r.To = m.HostPort, m.HostEnd, netip.AddrPortFrom(ip, 0)
				rules = append(rules, r)
				continue
			}
			for off := uint16(0); off <= m.HostEnd-m.HostPort; off++ {
				r.DPort, r.DPortEnd = m.HostPort+off, m.HostPort+off
				r.To = netip.AddrPortFrom(ip, m.Container+off)
				rules = append(rules, r)
			}
		}
		if !some {
			return nil, fmt.Errorf("m %s: the container has no address of the host address's family", m)
		}
	}
	if len(rules) > maxPorts {
		return nil, fmt.Errorf("%d m rules for one container; at most %d", len(rules), maxPorts)
	}
	return rules, nil
}

// withPorts returns n's policy followed by the port rules of pubs.
func (n Network) withPorts(pubs []Published) ([]Rule, error) {
	rules := n.Rules()
	for _, p := range pubs {
		pr, err := n.PortRules(p)
		if err != nil {
			return nil, err
		}
		rules = append(rules, pr...)
	}
	return rules, nil
}

// Label is how a port rule's comment names container id: ids may be 1024
// bytes, comments 256.
func Label(id string) string {
	if len(id) > 64 {
		return id[:64] + "..."
	}
	return id
}

// portComment reads what a port rule's comment says, "LABEL PORT", back
// into one port of a container at ip.
func (n Network) portComment(comment string, ip netip.Addr) (Published, bool) {
	who, mapping, ok := strings.Cut(strings.TrimPrefix(comment, n.comment("")), " ")
	if !ok || !strings.HasPrefix(comment, n.comment("")) {
		return Published{}, false
	}
	ports, err := port.Parse(mapping)
	if err != nil {
		return Published{}, false
	}
	return Published{ID: who, IP: ip, Ports: ports[:1]}, true
}

// addPublished adds one port rule read back to pubs, an entry per
// container address. A remapped range has a rule per port, each naming
// the whole range, so a port seen already is skipped.
func addPublished(pubs []Published, pub Published) []Published {
	for i := range pubs {
		if pubs[i].IP == pub.IP {
			if !slices.Contains(pubs[i].Ports, pub.Ports[0]) {
				pubs[i].Ports = append(pubs[i].Ports, pub.Ports[0])
			}
			return pubs
		}
	}
	return append(pubs, pub)
}
