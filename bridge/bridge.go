// Package bridge wires containers to a Linux bridge with netlink: the
// bridge itself, the veth pair, and the container's side of it.
package bridge

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNotBridge: a link of the bridge's name exists and is something else.
var ErrNotBridge = errors.New("not a bridge")

// ErrOverlap: a new bridge's subnet overlaps a route the host has.
var ErrOverlap = errors.New("subnet overlaps a route")

// ErrOtherAddress: the bridge exists with another network's address.
var ErrOtherAddress = errors.New("bridge has another address")

// Host is a netlink connection to the network namespace of the thread
// that opened it, the host's: one socket for all of a hook's calls, where
// the library's package-level functions open and close one per call.
type Host struct{ nl *netlink.Handle }

// OpenHost connects to the calling thread's network namespace.
func OpenHost() (*Host, error) {
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &Host{nl: nl}, nil
}

// Close closes the connection.
func (h *Host) Close() { h.nl.Close() }

// Bridge is a bridge as found or created.
type Bridge struct {
	Name  string
	Index int
	MTU   int
}

// Ensure returns the bridge called name, creating it with addresses gws
// (the gateways, one per family, with their subnets' prefix lengths) and
// MTU mtu if it is missing (mtu 0 means that of the default route's
// interface, or 1500). A new bridge's subnets must not overlap a route the
// host already has. A present bridge is reused as it is, unless it
// carries some other address of a gateway's family: two networks on one
// bridge would share a broadcast domain without knowing it. created says
// whether this call made it, so that a failed setup can undo it with
// Remove.
func (h *Host) Ensure(name string, gws []netip.Prefix, mtu int) (br Bridge, created bool, err error) {
	link, err := h.nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		link, created, err = h.create(name, gws, mtu)
	}
	if err != nil {
		return Bridge{}, false, fmt.Errorf("bridge %s: %w", name, err)
	}
	defer func() {
		if err != nil && created {
			h.nl.LinkDel(link)
		}
	}()
	if link.Type() != "bridge" {
		return Bridge{}, false, fmt.Errorf("%w: %s exists and is a %s", ErrNotBridge, name, link.Type())
	}
	for _, gw := range gws {
		if err := h.ensureAddr(link, gw); err != nil {
			return Bridge{}, false, err
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.nl.LinkSetUp(link); err != nil {
			return Bridge{}, false, fmt.Errorf("bring up bridge %s: %w", name, err)
		}
	}
	return Bridge{Name: name, Index: link.Attrs().Index, MTU: link.Attrs().MTU}, created, nil
}

// Find returns the bridge called name if it exists and is up, without
// looking at its addresses: the warm path, for a bridge already verified.
func (h *Host) Find(name string) (Bridge, bool) {
	link, err := h.nl.LinkByName(name)
	if err != nil || link.Type() != "bridge" || link.Attrs().Flags&net.FlagUp == 0 {
		return Bridge{}, false
	}
	return Bridge{Name: name, Index: link.Attrs().Index, MTU: link.Attrs().MTU}, true
}

func (h *Host) create(name string, gws []netip.Prefix, mtu int) (netlink.Link, bool, error) {
	for _, gw := range gws {
		if err := h.checkOverlap(gw.Masked()); err != nil {
			return nil, false, err
		}
	}
	if mtu == 0 {
		mtu = h.hostMTU()
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	// A bridge takes the lowest MAC of its ports unless given one, so its
	// MAC would change as containers come and go and stale every
	// container's ARP entry for the gateway. Pin it.
	attrs.HardwareAddr = MAC(gws[0].Addr())
	err := h.nl.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
	created := err == nil
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, false, fmt.Errorf("create: %w", err)
	}
	if created && gws[len(gws)-1].Addr().Is6() {
		// The gateway takes no router advertisements from containers.
		if err := sysctl(name, "accept_ra", "0"); err != nil {
			h.nl.LinkDel(&netlink.Bridge{LinkAttrs: attrs})
			return nil, false, err
		}
	}
	// Another hook may have created it first: either way, use what is there.
	link, err := h.nl.LinkByName(name)
	if err != nil {
		return nil, false, err
	}
	return link, created, nil
}

// checkOverlap refuses a subnet that overlaps a route the host has: the
// bridge's connected route would hijack part of that network, or be
// hijacked by it.
func (h *Host) checkOverlap(subnet netip.Prefix) error {
	routes, err := h.nl.RouteList(nil, family(subnet.Addr()))
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		if !ok || ones == 0 || dst.Unmap().IsLinkLocalUnicast() || dst.IsMulticast() {
			// The default route overlaps everything, by design; every
			// interface has fe80::/64, and the multicast routes.
			continue
		}
		dst = dst.Unmap()
		if p := netip.PrefixFrom(dst, ones); p.Overlaps(subnet) {
			dev := fmt.Sprint("ifindex ", r.LinkIndex)
			if l, err := h.nl.LinkByIndex(r.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			return fmt.Errorf("%w: %s overlaps the route to %s on %s", ErrOverlap, subnet, p, dev)
		}
	}
	return nil
}

// hostMTU is the MTU of the interface of the default route, so that a new
// bridge does not send bigger packets than the way out carries (on VPN and
// cloud hosts that makes TLS hang); 1500 when there is none.
func (h *Host) hostMTU() int {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.nl.RouteList(nil, fam)
		if err != nil {
			continue
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				if l, err := h.nl.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU > 0 {
					return l.Attrs().MTU
				}
			}
		}
	}
	return 1500
}

func (h *Host) ensureAddr(link netlink.Link, gw netip.Prefix) error {
	name := link.Attrs().Name
	all, err := h.nl.AddrList(link, family(gw.Addr()))
	if err != nil {
		return fmt.Errorf("addresses of bridge %s: %w", name, err)
	}
	var addrs []netlink.Addr
	for _, a := range all {
		if !a.IP.IsLinkLocalUnicast() { // the kernel's own fe80::
			addrs = append(addrs, a)
		}
	}
	want := ipNet(gw)
	for _, a := range addrs {
		if a.IPNet.String() == want.String() {
			return nil
		}
	}
	if len(addrs) > 0 {
		return fmt.Errorf("%w: %s has %s, not %s", ErrOtherAddress, name, addrs[0].IPNet, want)
	}
	if err := h.nl.AddrAdd(link, address(gw)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add %s to bridge %s: %w", want, name, err)
	}
	return nil
}

// address is p as netlink adds it. An IPv6 address skips duplicate
// address detection, which would hold it "tentative", unusable, for a
// second or more (CNI's bridge once waited on it: plugins#680); the
// store guarantees no one else on the bridge has it.
func address(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func family(ip netip.Addr) int {
	if ip.Is6() {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// sysctl sets an IPv6 switch of interface iface in the calling thread's
// network namespace. Three system calls: an os.File would add the
// poller's registration and its undoing to each.
func sysctl(iface, key, value string) error {
	path := "/proc/sys/net/ipv6/conf/" + iface + "/" + key
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		_, err = unix.Write(fd, []byte(value+"\n"))
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("set %s: %w", path, err)
	}
	return nil
}

// Remove deletes the bridge called name; a missing bridge is not an error.
func (h *Host) Remove(name string) error {
	link, err := h.nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	if err := h.nl.LinkDel(link); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

// MAC derives a locally administered unicast MAC from an address (an
// IPv4 one, or an IPv6 one's last 32 bits), as CNI does, so a reused
// address keeps its MAC and neighbours' caches stay right.
func MAC(ip netip.Addr) net.HardwareAddr {
	a := ip.As16()
	return net.HardwareAddr{0x0a, 0x58, a[12], a[13], a[14], a[15]}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Endpoint is one container's interface on the bridge.
type Endpoint struct {
	Host  string // host end of the veth pair, on the bridge
	Alias string // set on the host end, to recognise it as ours later
	Iface string // name of the container end, inside its netns
	// Addrs are the container's addresses, IPv4 first, with their
	// subnets' prefix lengths.
	Addrs []netip.Prefix
	// Gateways get a default route each, one per family; none for no
	// default route.
	Gateways []netip.Addr
	// MAC of the container's interface; nil: MAC of its first address.
	MAC net.HardwareAddr
	MTU int
	// Hairpin lets traffic leave the port it came in on: a container
	// reaching its own published port through a host address.
	Hairpin bool
	// Isolated ports cannot talk to each other, only to the bridge.
	Isolated bool
	// Quiet6 turns off, in the container, what IPv6 does on its own (see
	// quiet6): for a container on an IPv6 network.
	Quiet6 bool
}

func (ep Endpoint) mac() net.HardwareAddr {
	if ep.MAC != nil {
		return ep.MAC
	}
	return MAC(ep.Addrs[0].Addr())
}

// Attach creates the veth pair with its host end on bridge br and its
// other end directly inside the network namespace ns, then configures that
// end: address, up, lo up, default route. If any step fails the pair is
// deleted again, which takes both ends with it.
func (h *Host) Attach(br Bridge, ns netns.NsHandle, ep Endpoint) (err error) {
	// Into the container's namespace once, before its end exists: for a
	// netlink handle there, and the IPv6 defaults the end copies when the
	// kernel makes it.
	c, err := enter(ns, func() error {
		if ep.Quiet6 {
			return quiet6()
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer c.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ep.Host
	attrs.MTU = ep.MTU
	attrs.MasterIndex = br.Index
	attrs.Flags = net.FlagUp
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         ep.Iface,
		PeerHardwareAddr: ep.mac(),
		PeerNamespace:    netlink.NsFd(ns),
		PeerTxQLen:       -1,
	}
	// Creating the peer inside the container saves the move and the rename
	// of the classic recipe: one netlink call instead of three.
	if err := h.nl.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create veth %s: %s or the container's %s already exists: %w", ep.Host, ep.Host, ep.Iface, err)
		}
		return fmt.Errorf("create veth %s: %w", ep.Host, err)
	}
	defer func() {
		if err != nil {
			h.nl.LinkDel(veth)
		}
	}()
	// The kernel ignores an alias given at creation, hence a second call.
	if ep.Alias != "" {
		if err := h.nl.LinkSetAlias(veth, ep.Alias); err != nil {
			return fmt.Errorf("label veth %s: %w", ep.Host, err)
		}
	}
	if ep.Hairpin {
		if err := h.nl.LinkSetHairpin(veth, true); err != nil {
			return fmt.Errorf("hairpin on %s: %w", ep.Host, err)
		}
	}
	if ep.Isolated {
		if err := h.nl.LinkSetIsolated(veth, true); err != nil {
			return fmt.Errorf("isolate %s: %w", ep.Host, err)
		}
	}
	return configure(c, ep)
}

// configure sets up the container's side through c, a netlink handle
// bound to its namespace (enter).
func configure(c *netlink.Handle, ep Endpoint) error {
	link, err := c.LinkByName(ep.Iface)
	if err != nil {
		return fmt.Errorf("find %s in container: %w", ep.Iface, err)
	}
	for _, a := range ep.Addrs {
		if err := c.AddrAdd(link, address(a)); err != nil {
			return fmt.Errorf("add %s to container %s: %w", a, ep.Iface, err)
		}
	}
	if err := c.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up container %s: %w", ep.Iface, err)
	}
	// Every namespace's loopback is ifindex 1, and setting an up link up
	// is a no-op: one round trip instead of a lookup and a change.
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}
	if err := c.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up container lo: %w", err)
	}
	for _, gw := range ep.Gateways {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()}
		err = c.RouteAdd(route)
		if errors.Is(err, unix.EEXIST) {
			// An earlier network gave the container its default route of
			// this family: the first network is the way out.
			continue
		}
		if err != nil {
			return fmt.Errorf("add default route via %s in container: %w", gw, err)
		}
	}
	return nil
}

// enter runs fn inside the network namespace ns and returns a netlink
// handle bound there: one trip into the namespace for both, made as
// netlink.NewHandleAt makes its own, on this thread, locked meanwhile. If
// the way back fails, the process ends there, its thread still locked,
// rather than run anything else in the container's namespace; a setup cut
// short is cleaned up as one killed (a lease with no veth is reclaimed).
func enter(ns netns.NsHandle, fn func() error) (*netlink.Handle, error) {
	runtime.LockOSThread()
	home, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("open own netns: %w", err)
	}
	defer home.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter container netns: %w", err)
	}
	h, err := inside(fn)
	if err := netns.Set(home); err != nil {
		panic(fmt.Sprintf("bridgehook: cannot leave the container's netns: %v", err))
	}
	runtime.UnlockOSThread()
	return h, err
}

// inside is what enter does inside the namespace.
func inside(fn func() error) (*netlink.Handle, error) {
	if err := fn(); err != nil {
		return nil, err
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in container netns: %w", err)
	}
	return h, nil
}

// quiet6 turns off, for the interfaces made next in the calling thread's
// namespace (the container's end of the veth), what IPv6 does on its own:
// accepting router advertisements, which another container could send to
// reroute this one, and duplicate address detection, which holds even the
// link-local address "tentative" for a second. They are the namespace's
// defaults, which an interface copies when made. They live in its
// /proc/sys/net, which only a thread inside it sees.
func quiet6() error {
	for _, key := range []string{"accept_ra", "accept_dad"} {
		if err := sysctl("default", key, "0"); err != nil {
			return err
		}
	}
	return nil
}

// Present reports whether the container's namespace ns already has iface
// with every address of addrs: a second setup of the same container is
// then a no-op.
func (h *Host) Present(ns netns.NsHandle, iface string, addrs []netip.Prefix) bool {
	c, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return false
	}
	defer c.Close()
	link, err := c.LinkByName(iface)
	if err != nil {
		return false
	}
	have, err := c.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return false
	}
	for _, want := range addrs {
		found := false
		for _, a := range have {
			found = found || a.IPNet.String() == ipNet(want).String()
		}
		if !found {
			return false
		}
	}
	return true
}

// DefaultGateways lists the gateways of the default routes in the
// namespace ns, of both families.
func (h *Host) DefaultGateways(ns netns.NsHandle) []netip.Addr {
	c, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil
	}
	defer c.Close()
	routes, err := c.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil
	}
	var gws []netip.Addr
	for _, r := range routes {
		ones := 0
		if r.Dst != nil {
			ones, _ = r.Dst.Mask.Size()
		}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok && ones == 0 {
			gws = append(gws, gw.Unmap())
		}
	}
	return gws
}

// VethState is what is left of a container's host veth.
type VethState int

const (
	// Gone: no such veth, or it belongs to someone else (the pid in its
	// name may have been reused).
	Gone VethState = iota
	// Live: there, its peer in a namespace that lives.
	Live
	// Dying: there, but its peer's namespace is being deleted, and the
	// kernel deletes the pair with it.
	Dying
)

// State finds the veth called host that carries alias.
func (h *Host) State(host, alias string) (VethState, error) {
	link, err := h.veth(host, alias)
	switch {
	case err != nil || link == nil:
		return Gone, err
	case peerDying(link):
		return Dying, nil
	}
	return Live, nil
}

// Detach deletes the host end of a container's veth pair, which takes the
// container's end with it. It acts only on a link carrying alias, so a
// veth of the same name that belongs to a newer container (the pid in the
// name may have been reused) is left alone. A missing link is not an error.
// Deleting a veth costs 15-30 ms here, most of it the kernel waiting for
// RCU; a pair whose namespace dies anyway need not be deleted (see State).
func (h *Host) Detach(host, alias string) error {
	link, err := h.veth(host, alias)
	if err != nil || link == nil {
		return err
	}
	// The kernel may be deleting it with its namespace meanwhile: gone is
	// as good as deleted.
	if err := h.nl.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete veth %s: %w", host, err)
	}
	return nil
}

// veth returns the link called host if it carries alias, else nil.
func (h *Host) veth(host, alias string) (netlink.Link, error) {
	link, err := h.nl.LinkByName(host)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find veth %s: %w", host, err)
	}
	if link.Attrs().Alias != alias {
		return nil, nil
	}
	return link, nil
}

// peerDying reports whether the other end of veth link is in a network
// namespace that has begun to die. The kernel reports a peer namespace by
// its id relative to ours (IFLA_LINK_NETNSID); once the namespace's last
// reference is gone, cleanup withdraws that id first and only then deletes
// the namespace's interfaces, and in between the id reads as "not
// assigned" (-1). A live namespace, even one only a bind mount keeps, has
// an id; the attribute is absent (and the library's -1 is the default)
// only for a peer in our own namespace.
func peerDying(link netlink.Link) bool {
	// The library decodes the attribute as unsigned: -1 arrives as 2^32-1.
	return int64(link.Attrs().NetNsID) == math.MaxUint32
}

// Port is a veth whose host end is on a bridge.
type Port struct {
	Name  string
	Alias string
	Index int
}

// Ports lists the veths attached to the bridge called name. A missing
// bridge has none.
func (h *Host) Ports(name string) ([]Port, error) {
	br, err := h.nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	links, err := h.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var ports []Port
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex == br.Attrs().Index && l.Type() == "veth" {
			ports = append(ports, Port{Name: a.Name, Alias: a.Alias, Index: a.Index})
		}
	}
	return ports, nil
}

// Unlabelled lists the veths that carry no alias, wherever they are
// attached: a setup killed half-way leaves its veth like that.
func (h *Host) Unlabelled() ([]string, error) {
	links, err := h.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var names []string
	for _, l := range links {
		if l.Type() == "veth" && l.Attrs().Alias == "" {
			names = append(names, l.Attrs().Name)
		}
	}
	return names, nil
}

// PeerAddrs finds, in the namespace ns, the interface iface that is the
// other end of the host veth p, and returns its address in each of
// subnets, in their order: how gc recovers a lease the store lost.
func (h *Host) PeerAddrs(ns netns.NsHandle, iface string, p Port, subnets []netip.Prefix) ([]netip.Addr, bool) {
	c, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, false
	}
	defer c.Close()
	link, err := c.LinkByName(iface)
	// A veth's IFLA_LINK is its peer's index: this proves the pairing.
	if err != nil || link.Attrs().ParentIndex != p.Index {
		return nil, false
	}
	addrs, err := c.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, false
	}
	found := make([]netip.Addr, len(subnets))
	for i, subnet := range subnets {
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && subnet.Contains(ip.Unmap()) {
				found[i] = ip.Unmap()
			}
		}
		if !found[i].IsValid() {
			return nil, false
		}
	}
	return found, true
}
