// Package nat keeps a network's firewall rules: MASQUERADE for traffic that
// leaves the bridge, FORWARD accepts, published ports, and ip_forward.
//
// What rules a network gets is written once, as Rules (policy.go); a
// Firewall renders them for one backend: IPTables through iptables
// (iptables.go), NFTables over netlink (nftables.go). Either way every
// rule lives in chains (or a table) of our own, one set per network, and
// carries a comment naming its network, so installing is one atomic
// change, and checking, listing and removing never touch a rule that is
// not ours.
package nat

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// Network is what the rules of one network depend on.
type Network struct {
	Bridge string
	// Subnets are one prefix, or an IPv4 and an IPv6 one (dual-stack).
	Subnets []netip.Prefix
	// Isolated containers cannot reach each other (--icc=false).
	Isolated bool
	// Internal networks have no way out: no MASQUERADE, no forwarding
	// out of the bridge.
	Internal bool
	// NonMasquerade are destinations the containers' traffic reaches
	// with their own addresses: a cluster's pod CIDR, whose nodes route
	// it (--non-masquerade-cidr).
	NonMasquerade []netip.Prefix
}

func (n Network) comment(what string) string { return "bridgehook " + n.Bridge + ": " + what }

// Firewall holds the rules of networks.
type Firewall interface {
	// Install makes n's rules exactly n's policy plus the ports of pubs,
	// and turns on what they need of the kernel (IP forwarding, and
	// route_localnet on the bridge for ports reached through 127.0.0.1).
	// Running it again changes nothing.
	Install(n Network, pubs []Published) error
	// Uninstall removes n's rules; what is gone already is skipped.
	Uninstall(n Network) error
	// Verify reports whether n's rules (without ports) are in place, and
	// turns IP forwarding on if something turned it off. Every setup asks
	// it, so it is cheap: netlink reads, no process.
	Verify(n Network) (bool, error)
	// Generational reports whether the nftables generation (Generation)
	// moves with every change to the backend's rules: nftables, and
	// iptables on nf_tables; not legacy iptables.
	Generational() bool
	// Forward turns IP forwarding on if something turned it off: what
	// Verify checks beside the rules, for a setup that trusts the rules
	// by their generation.
	Forward(n Network) error
	// Publish adds p's port rules to an installed network, all or none.
	Publish(n Network, p Published) error
	// Unpublish removes p's port rules, and the UDP conntrack entries that
	// would keep sending its ports' traffic to a container that is gone.
	Unpublish(n Network, p Published) error
	// Published reads back the ports n's rules publish, an entry per
	// container address, its ID the Label the rules carry.
	Published(n Network) ([]Published, error)
	// Close lets go of the firewall's connections.
	Close()
}

const (
	ipForward  = "/proc/sys/net/ipv4/ip_forward"
	ip6Forward = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// enable turns on what n's rules need of the kernel: IP forwarding, and
// route_localnet on the bridge for ports reached through 127.0.0.1.
func (n Network) enable(sysctl func(path string) error) error {
	if err := n.forwarding(sysctl); err != nil {
		return err
	}
	if n.Internal || !n.Has(IPv4) {
		return nil
	}
	return sysctl(routeLocalnet(n.Bridge))
}

// forwarding turns on IP forwarding for n's families.
func (n Network) forwarding(sysctl func(path string) error) error {
	if n.Has(IPv4) {
		if err := sysctl(ipForward); err != nil {
			return err
		}
	}
	if n.Has(IPv6) {
		// Every interface's forwarding follows "all"; see keepRAs.
		return sysctl(ip6Forward)
	}
	return nil
}

// routeLocalnet is the switch that lets the host reach published ports
// through 127.0.0.1: the kernel drops loopback-sourced packets routed out
// of an interface unless it is on for that interface.
func routeLocalnet(bridge string) string {
	return "/proc/sys/net/ipv4/conf/" + bridge + "/route_localnet"
}

// sysctlOn writes only when needed: the read is cheaper than the write.
func sysctlOn(path string) error {
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if path == ip6Forward {
		if err := keepRAs(); err != nil {
			return err
		}
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable %s: %w", path, err)
	}
	return nil
}

// rtprotRA marks the routes the kernel learned from router advertisements
// (RTPROT_RA in linux/rtnetlink.h).
const rtprotRA = 9

// keepRAs runs before IPv6 forwarding is turned on. A forwarding host
// ignores router advertisements on interfaces whose accept_ra is 1, the
// default, so a host that learned its default route and addresses from
// them would lose both when they expire (moby#43466). The interfaces that
// hold routes learned that way get accept_ra 2, which keeps accepting
// them. Others keep 1: on a container's host veth, 2 would let the
// container's advertisements reroute the host.
func keepRAs() error {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Protocol: rtprotRA}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("list IPv6 routes learned from router advertisements: %w", err)
	}
	seen := map[int]bool{}
	for _, r := range routes {
		if seen[r.LinkIndex] {
			continue
		}
		seen[r.LinkIndex] = true
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue // gone meanwhile
		}
		path := "/proc/sys/net/ipv6/conf/" + link.Attrs().Name + "/accept_ra"
		if b, err := os.ReadFile(path); err != nil || strings.TrimSpace(string(b)) != "1" {
			continue
		}
		if err := os.WriteFile(path, []byte("2\n"), 0o644); err != nil {
			return fmt.Errorf("keep accepting router advertisements on %s before IPv6 forwarding is on: %w", link.Attrs().Name, err)
		}
	}
	return nil
}
