// Package names is the name server of the networks that have names
// (--names): each container of such a network finds the others by name.
//
// One server process runs per state directory (Serve, "bridgehook dns"),
// serving every network under it that has names, on each network's
// gateway addresses, port 53, UDP and TCP. It learns of containers from
// the lease store itself (watch.go), and answers from tables built from
// the leases (table.go); what it answers is handler.go, and how it asks
// the upstream resolvers for the rest is forward.go. A setup starts it
// when it finds none running (Ensure, client.go).
package names

import (
	"bufio"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// Network is what the server knows of one network: the hook keeps it in
// the network's record (ipam.RecordFile) under "names", and the server
// reads it from there.
type Network struct {
	// Gateways are the bridge's addresses, with their subnets' prefix
	// lengths: where the server listens, and whom it answers.
	Gateways []netip.Prefix `json:"gateways"`
	// Upstreams are asked for other names before the host's resolvers
	// (--dns).
	Upstreams []netip.Addr `json:"upstreams,omitempty"`
	// Internal networks have no way out: no name is forwarded.
	Internal bool `json:"internal,omitempty"`
}

// Equal reports whether n and o serve alike.
func (n Network) Equal(o Network) bool {
	return slices.Equal(n.Gateways, o.Gateways) && slices.Equal(n.Upstreams, o.Upstreams) && n.Internal == o.Internal
}

// Servers are the addresses a container's resolv.conf names: the
// gateways, IPv4 first.
func (n Network) Servers() []netip.Addr {
	var s []netip.Addr
	for _, gw := range n.Gateways {
		s = append(s, gw.Addr())
	}
	return s
}

// has reports whether ip is in one of the network's subnets.
func (n Network) has(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, gw := range n.Gateways {
		if gw.Masked().Contains(ip) {
			return true
		}
	}
	return false
}

// HostResolvConfs are where the host's own resolvers are listed.
// systemd-resolved's upstream file comes first: /etc/resolv.conf there
// names 127.0.0.53, the host's loopback stub, which a container cannot
// reach and the server must not loop through.
var HostResolvConfs = []string{"/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"}

// HostResolvers reads the host's name servers from the first of paths
// that lists any, skipping loopback ones, and its search domains.
func HostResolvers(paths []string) (servers []netip.Addr, search []string) {
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		servers, search = parseResolvConf(bufio.NewScanner(f))
		f.Close()
		if len(servers) > 0 {
			return servers, search
		}
	}
	return nil, nil
}

func parseResolvConf(sc *bufio.Scanner) (servers []netip.Addr, search []string) {
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if ip, err := netip.ParseAddr(fields[1]); err == nil && !ip.IsLoopback() {
				servers = append(servers, ip)
			}
		case "search":
			search = fields[1:]
		}
	}
	return servers, search
}
