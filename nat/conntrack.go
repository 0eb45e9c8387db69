package nat

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// flushUDP deletes the UDP conntrack entries NATed to p's container. UDP
// has no end of connection, so without this a client that keeps sending
// (a DNS resolver, a game) stays pinned to the old container after a
// restart: a long-standing complaint against other engines.
func flushUDP(p Published) error {
	hasUDP := false
	for _, port := range p.Ports {
		hasUDP = hasUDP || port.Proto == "udp"
	}
	if !hasUDP {
		return nil
	}
	for _, ip := range p.addrs() {
		f := &netlink.ConntrackFilter{}
		if err := f.AddIP(netlink.ConntrackReplySrcIP, ip.AsSlice()); err != nil {
			return err
		}
		if err := f.AddProtocol(unix.IPPROTO_UDP); err != nil {
			return err
		}
		family := netlink.InetFamily(unix.AF_INET)
		if ip.Is6() {
			family = unix.AF_INET6
		}
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, family, f); err != nil {
			return fmt.Errorf("flush UDP conntrack of %s: %w", ip, err)
		}
	}
	return nil
}
