package hook

import (
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/names"
	"github.com/bridgehook/bridgehook/nat"
)

// Config is one network and how containers join it: plain data, from the
// hook's flags.
type Config struct {
	Bridge string
	// Subnets are one prefix, or an IPv4 and an IPv6 one (dual-stack), in
	// that order (SetSubnets).
	Subnets  []netip.Prefix
	MTU      int // 0: the bridge's own, 1500 for a new bridge
	Iface    string
	StateDir string

	// ICC lets containers on the bridge reach each other (--icc).
	ICC bool
	// Internal networks have no way out (--internal).
	Internal bool
	// NonMasquerade are destinations reached without masquerade
	// (--non-masquerade-cidr): a cluster's pod CIDR.
	NonMasquerade []netip.Prefix
	// DefaultRoute adds a default route via the gateway, unless the
	// container has one already from an earlier network.
	DefaultRoute bool
	// DNS servers to write into the container's /etc/resolv.conf; with
	// HostDNS, the host's. With Names, they are the name server's
	// upstreams, asked before the host's.
	DNS     []netip.Addr
	HostDNS bool
	// Names gives the network a name server on its gateways (package
	// names), where its containers find each other by name; their
	// resolv.conf names it.
	Names bool
	// SpoofCheck drops what a container sends as another: another MAC
	// or address, ARP and neighbour advertisements for others, router
	// advertisements, DHCP servers' replies (--spoof-check).
	SpoofCheck bool
	// Firewall is the backend the network's rules go into: "iptables" or
	// "nftables" (--firewall); empty, the network's own, and iptables for
	// a new one. A network keeps the one it was made with.
	Firewall string
}

// timer reports the steps of one hook run to a debug log.
type timer struct {
	log  *slog.Logger
	last time.Time
}

func newTimer(log *slog.Logger) *timer { return &timer{log: log, last: time.Now()} }

// step reports that step just finished.
func (t *timer) step(step string) {
	if t.log == nil {
		return
	}
	t.log.Debug(step, "took", time.Since(t.last).String())
	t.last = time.Now() // not counting the logging itself
}

// Defaults are those of the netns hook of the runc networking write-up, so
// its users feel at home.
func Defaults() Config {
	return Config{
		Bridge:   "netns0",
		Subnets:  []netip.Prefix{netip.MustParsePrefix("172.19.0.0/16")},
		Iface:    "eth0",
		StateDir: "/run/bridgehook",
		ICC:      true,

		DefaultRoute: true,
		SpoofCheck:   true,
	}
}

// ParseSubnet parses a subnet as given: an IPv4 or an IPv6 network.
func ParseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return netip.Prefix{}, input.Errorf(input.Subnet, "%q: want a network such as 172.19.0.0/16 or fd19::/64", s)
	}
	ip := p.Addr()
	switch {
	case ip.IsMulticast():
		return netip.Prefix{}, input.Errorf(input.Subnet, "%s: a multicast range; want unicast addresses, e.g. 172.19.0.0/16 or fd19::/64", s)
	case ip.IsLoopback():
		return netip.Prefix{}, input.Errorf(input.Subnet, "%s: a loopback range; want e.g. 172.19.0.0/16 or fd19::/64", s)
	case ip.IsLinkLocalUnicast():
		return netip.Prefix{}, input.Errorf(input.Subnet, "%s: a link-local range, which every interface has of its own; want e.g. 172.19.0.0/16 or fd19::/64", s)
	case p.Bits() == 0 || ip.IsUnspecified() && p.Bits() < ip.BitLen():
		return netip.Prefix{}, input.Errorf(input.Subnet, "%s: the whole address space; want a network such as 172.19.0.0/16 or fd19::/64", s)
	case ip.Is4() && p.Bits() > 30:
		return netip.Prefix{}, input.Errorf(input.Subnet, "%s: too small; want /30 or larger to leave room for a gateway and a container", s)
	case ip.Is6() && p.Bits() > 120:
		return netip.Prefix{}, input.Errorf(input.Subnet, "%s: too small; want an IPv6 prefix of /120 or larger (/64 is usual)", s)
	case p != p.Masked():
		return netip.Prefix{}, input.Errorf(input.Subnet, "%s: not a network address (host bits set); did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// ParseSubnets makes the networks ss, as a face was given them, c's
// subnets.
func (c *Config) ParseSubnets(ss []string) error {
	var ps []netip.Prefix
	for _, s := range ss {
		p, err := ParseSubnet(s)
		if err != nil {
			return err
		}
		ps = append(ps, p)
	}
	return c.SetSubnets(ps)
}

// SetSubnets makes ps, the --subnet values given, c's subnets: one, or
// one of each family, IPv4 first.
func (c *Config) SetSubnets(ps []netip.Prefix) error {
	switch {
	case len(ps) == 0:
		return input.Errorf(input.Subnet, ": missing")
	case len(ps) > 2 || len(ps) == 2 && ps[0].Addr().Is4() == ps[1].Addr().Is4():
		return input.Errorf(input.Subnet, "%v: want one network, or one IPv4 and one IPv6 network (dual-stack)", ps)
	}
	c.Subnets = slices.Clone(ps)
	slices.SortFunc(c.Subnets, func(a, b netip.Prefix) int { return a.Addr().BitLen() - b.Addr().BitLen() })
	return nil
}

// has reports whether the network has an IPv6 subnet, with v6, or else
// an IPv4 one.
func (c Config) has(v6 bool) bool {
	return slices.ContainsFunc(c.Subnets, func(p netip.Prefix) bool { return p.Addr().Is6() == v6 })
}

// Check validates c.
func (c Config) Check() error {
	if err := checkIfName(input.Bridge, c.Bridge); err != nil {
		return err
	}
	if err := checkIfName(input.Iface, c.Iface); err != nil {
		return err
	}
	var set Config
	if err := set.SetSubnets(c.Subnets); err != nil {
		return err
	}
	if !slices.Equal(set.Subnets, c.Subnets) {
		return input.Errorf(input.Subnet, "%v: want the IPv4 network first", c.Subnets)
	}
	for _, p := range c.Subnets {
		if _, err := ParseSubnet(p.String()); err != nil {
			return err
		}
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		return input.Errorf(input.MTU, "%d: want 576 to 65535, or 0 for the bridge's", c.MTU)
	}
	if c.MTU != 0 && c.MTU < minMTU6 && c.has(true) {
		return input.Errorf(input.MTU, "%d: IPv6 needs 1280 at least; want 1280 to 65535 on a network with an IPv6 subnet", c.MTU)
	}
	for _, p := range c.NonMasquerade {
		if !p.IsValid() || p != p.Masked() {
			return input.Errorf(input.NonMasquerade, "%s: want a network address, e.g. 10.244.0.0/16", p)
		}
	}
	if c.Firewall != "" && c.Firewall != "iptables" && c.Firewall != "nftables" {
		return input.Errorf(input.Firewall, "%q: want iptables or nftables", c.Firewall)
	}
	if c.StateDir == "" || !strings.HasPrefix(c.StateDir, "/") {
		return input.Errorf(input.StateDir, "%q: want an absolute path", c.StateDir)
	}
	return nil
}

// checkIfName accepts names the kernel accepts and that are safe in file
// names and iptables chain names: 1 to 15 bytes of letters, digits, '_',
// '-', '.'.
func checkIfName(f input.Field, s string) error {
	if s == "" || len(s) > 15 {
		return input.Errorf(f, "%q: want an interface name of 1 to 15 bytes", s)
	}
	if s == "." || s == ".." {
		return input.Errorf(f, "%q: not a valid interface name", s)
	}
	if s == "lo" {
		return input.Errorf(f, "%q: the loopback interface, which every namespace has; want another name, e.g. eth0", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return input.Errorf(f, "%q: %q not allowed; use letters, digits, '_', '-', '.'", s, c)
		}
	}
	return nil
}

// minMTU6 is the smallest MTU IPv6 works with (RFC 8200).
const minMTU6 = 1280

// gateways are the bridge's addresses: each subnet's first host address,
// with the subnet's prefix length.
func (c Config) gateways() []netip.Prefix {
	gws := make([]netip.Prefix, len(c.Subnets))
	for i, p := range c.Subnets {
		gws[i] = netip.PrefixFrom(p.Addr().Next(), p.Bits())
	}
	return gws
}

// NameServers are the addresses of the network's name server, which its
// containers' resolv.conf name: none for a network without names.
func (c Config) NameServers() []netip.Addr {
	if !c.Names {
		return nil
	}
	return c.namesNetwork().Servers()
}

// namesNetwork is what the name server keeps of the network: nil for a
// network without names.
func (c Config) namesNetwork() *names.Network {
	if !c.Names {
		return nil
	}
	return &names.Network{Gateways: c.gateways(), Upstreams: c.DNS, Internal: c.Internal}
}

func (c Config) natNetwork() nat.Network {
	return nat.Network{Bridge: c.Bridge, Subnets: c.Subnets, Isolated: !c.ICC, Internal: c.Internal, NonMasquerade: c.NonMasquerade}
}

// vethName is the host end's name: netnsv0-PID for eth0, as the netns hook
// names it, netnsvN-PID for ethN, so that a container on two networks has
// two; other interface names get a hash, to stay within 15 bytes.
func (c Config) vethName(pid int) string {
	if n, ok := strings.CutPrefix(c.Iface, "eth"); ok && len(n) == 1 && n[0] >= '0' && n[0] <= '9' {
		return fmt.Sprintf("netnsv%s-%d", n, pid)
	}
	h := fnv.New32a()
	h.Write([]byte(c.Iface))
	return fmt.Sprintf("bh%s-%d", hex.EncodeToString(h.Sum(nil))[:5], pid)
}

// vethFor is the host end's name for the container of req: vethName's for
// a container known by its pid, cniVethName's for one known by its
// namespace's path.
func (c Config) vethFor(req Request) string {
	if req.Netns.ByPath() {
		return cniVethName(req.ID)
	}
	return c.vethName(req.Netns.PID)
}

// cniVethName names the host end of a CNI attachment (id: container id
// and interface): "bhc" and 48 bits of a hash of id, 15 bytes. It shares
// no form with vethName's names, which end in "-PID", so the two never
// collide.
func cniVethName(id string) string {
	h := fnv.New64a()
	h.Write([]byte(id))
	return "bhc" + hex.EncodeToString(h.Sum(nil))[:12]
}

// isCNIVeth reports whether s is a host veth name as cniVethName makes them.
func isCNIVeth(s string) bool {
	h, ok := strings.CutPrefix(s, "bhc")
	return ok && len(h) == 12 && strings.Trim(h, "0123456789abcdef") == ""
}

// isVethName reports whether s is a host veth name as vethName or
// cniVethName make them.
func isVethName(s string) bool {
	if isCNIVeth(s) {
		return true
	}
	head, pid, ok := strings.Cut(s, "-")
	if !ok || pid == "" || strings.Trim(pid, "0123456789") != "" {
		return false
	}
	if n, ok := strings.CutPrefix(head, "netnsv"); ok {
		return len(n) == 1 && n[0] >= '0' && n[0] <= '9'
	}
	h, ok := strings.CutPrefix(head, "bh")
	return ok && len(h) == 5 && strings.Trim(h, "0123456789abcdef") == ""
}
