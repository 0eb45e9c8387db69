package cli

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// networkFlags binds the flags that define the network, and the logging
// ones, to e: every command takes them.
func (e *env) networkFlags(fs *pflag.FlagSet) {
	cfg := &e.cfg
	fs.SortFlags = false
	fs.StringVar(&cfg.Bridge, "bridge", cfg.Bridge, "name of the bridge to attach containers to")
	fs.Func("subnet", "the network's `CIDR`; the bridge gets its first address, the gateway. Twice, an IPv4 and an IPv6 one, for dual-stack (default 172.19.0.0/16)", func(v string) error {
		e.subnets = append(e.subnets, v)
		return nil
	})
	fs.Func("mtu", "MTU of a new bridge and of the veths, in `bytes`; 0: the bridge's own, 1500 for a new bridge", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want a number of bytes, such as 1500")
		}
		cfg.MTU = n
		return nil
	})
	fs.StringVar(&cfg.Iface, "iface", cfg.Iface, "name of the interface inside the container")
	fs.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "where the lease store lives; under /run, leases die with a reboot as containers do")
	fs.StringVar(&e.logFile, "log-file", "", "append a JSON line per setup, teardown and failure to this `file` (crun discards hook output)")
	fs.BoolVar(&cfg.ICC, "icc", true, "let containers on the bridge reach each other; --icc=false isolates them (they still reach the gateway and beyond)")
	fs.Func("non-masquerade-cidr", "traffic to this `CIDR` leaves with the container's own address, not the host's (a cluster's pod CIDR, routed by its nodes); may be repeated", func(v string) error {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return fmt.Errorf("want a network such as 10.244.0.0/16")
		}
		cfg.NonMasquerade = append(cfg.NonMasquerade, p)
		return nil
	})
	fs.BoolVar(&cfg.Internal, "internal", false, "no way out: no MASQUERADE, no forwarding out of the bridge; containers reach each other and the gateway")
	fs.StringVar(&cfg.Firewall, "firewall", "", "where the network's rules go: `iptables` or nftables (a table of its own, over netlink); default: the network's own, iptables for a new one")
	fs.BoolVar(&cfg.SpoofCheck, "spoof-check", true, "drop what a container sends as another (another MAC or address, ARP and neighbour advertisements for others) and router advertisements and DHCP servers' replies; --spoof-check=false for containers that route others' traffic")
	fs.BoolVar(&cfg.DefaultRoute, "default-route", true, "give the container a default route via the gateway (skipped when an earlier network gave it one)")
	fs.Func("dns", "write `servers` (comma-separated) to the container's /etc/resolv.conf", func(v string) error {
		for _, s := range strings.Split(v, ",") {
			ip, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%q is not an IP address", s)
			}
			cfg.DNS = append(cfg.DNS, ip)
		}
		return nil
	})
	fs.BoolVar(&cfg.Names, "names", false, "give the network a name server on its gateways, where containers find each other by id, hostname, name and alias; --dns servers become its upstreams, before the host's")
	fs.BoolVar(&cfg.HostDNS, "resolv-conf", false, "write the host's name servers (loopback ones skipped) to the container's /etc/resolv.conf")
	fs.BoolVar(&e.debug, "debug", false, "report how long each step takes, on stderr")
}

// allFlag is --all, for the commands that can act on every network.
func (e *env) allFlag(fs *pflag.FlagSet) {
	fs.BoolVar(&e.all, "all", false, "every network under --state-dir")
}
