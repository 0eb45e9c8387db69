// Package fake has fakes of what the orchestration (package hook) drives:
// the kernel's links (Host), a firewall backend (Firewall) and /proc
// (System), so that hook's decisions, and the faces over it, are tested
// without root. Each fake keeps the state a test asserts on, and fails a
// named operation on request (Fails). With ipam.Memory for the store, a
// whole network runs in memory.
package fake

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/nat"
)

// ErrInjected is the failure Fails injects.
var ErrInjected = errors.New("injected failure")

// Fails is a set of operations to fail, shared by the fakes.
type Fails map[string]bool

// Check fails when op is to fail.
func (f Fails) Check(op string) error {
	if f[op] {
		return fmt.Errorf("%s: %w", op, ErrInjected)
	}
	return nil
}

// System is /proc: pids alive in namespaces (by inode). Netns hands out
// a real file descriptor (of /dev/null) per call, so that the code under
// test may close it, and remembers whose namespace it stands for.
type System struct {
	Inodes map[int]uint64
	fds    map[netns.NsHandle]int
	// Paths are namespaces bind-mounted at a path (CNI's), each standing
	// for the namespace of a pid.
	Paths map[string]int
	bound []bound // see Listen
}

// NewSystem is a machine with no containers.
func NewSystem() *System {
	return &System{Inodes: map[int]uint64{}, fds: map[netns.NsHandle]int{}, Paths: map[string]int{}}
}

// Container starts a container: pid in a namespace of its own.
func (s *System) Container(pid int) int {
	s.Inodes[pid] = uint64(1000 + pid)
	return pid
}

func (s *System) NetnsAt(path string) (netns.NsHandle, uint64, error) {
	pid, ok := s.Paths[path]
	if !ok {
		return -1, 0, input.Errorf(input.Netns, "%s: not a network namespace", path)
	}
	return s.Netns(pid)
}

func (s *System) PathInode(path string) (uint64, error) {
	if pid, ok := s.Paths[path]; ok {
		return s.NetnsInode(pid)
	}
	return 0, errors.New("no such file")
}

func (s *System) Netns(pid int) (netns.NsHandle, uint64, error) {
	ino, ok := s.Inodes[pid]
	if !ok {
		return -1, 0, input.Errorf(input.Netns, "pid %d: no such process", pid)
	}
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	s.fds[netns.NsHandle(fd)] = pid
	return netns.NsHandle(fd), ino, nil
}

func (s *System) NetnsInode(pid int) (uint64, error) {
	if ino, ok := s.Inodes[pid]; ok {
		return ino, nil
	}
	return 0, errors.New("no such process")
}

// Veth is a host veth: its alias, its bridge, and the container end.
type Veth struct {
	Alias    string
	Master   string
	PID      int // whose namespace holds the peer
	Iface    string
	Addrs    []netip.Prefix
	Gateways []netip.Addr
	State    bridge.VethState
	Index    int
	Quiet6   bool // the container's IPv6 was told to keep quiet
}

// Host is the kernel's links.
type Host struct {
	Sys     *System
	Fail    Fails
	Bridges map[string]bridge.Bridge
	Veths   map[string]*Veth
	nextIdx int
	Ensured int // Ensure calls, to tell warm setups from cold ones
}

// NewHost is a kernel with no bridge, whose containers are sys's.
func NewHost(sys *System, fail Fails) *Host {
	return &Host{Sys: sys, Fail: fail, Bridges: map[string]bridge.Bridge{}, Veths: map[string]*Veth{}}
}

// Kill ends container pid: its namespace goes, its veth with it unless
// dying says the kernel is still at it.
func (h *Host) Kill(pid int, dying bool) {
	delete(h.Sys.Inodes, pid)
	for name, v := range h.Veths {
		if v.PID == pid {
			if dying {
				v.State = bridge.Dying
			} else {
				delete(h.Veths, name)
			}
		}
	}
}

func (h *Host) Ensure(name string, gws []netip.Prefix, mtu int) (bridge.Bridge, bool, error) {
	h.Ensured++
	if err := h.Fail.Check("ensure"); err != nil {
		return bridge.Bridge{}, false, err
	}
	if br, ok := h.Bridges[name]; ok {
		return br, false, nil
	}
	if mtu == 0 {
		mtu = 1500
	}
	h.nextIdx++
	br := bridge.Bridge{Name: name, Index: h.nextIdx, MTU: mtu}
	h.Bridges[name] = br
	return br, true, nil
}

func (h *Host) Find(name string) (bridge.Bridge, bool) {
	br, ok := h.Bridges[name]
	return br, ok
}

func (h *Host) Remove(name string) error {
	if err := h.Fail.Check("remove"); err != nil {
		return err
	}
	delete(h.Bridges, name)
	return nil
}

func (h *Host) Attach(br bridge.Bridge, ns netns.NsHandle, ep bridge.Endpoint) error {
	if err := h.Fail.Check("attach"); err != nil {
		return err
	}
	pid := h.Sys.fds[ns]
	if _, ok := h.Veths[ep.Host]; ok {
		return fmt.Errorf("create veth %s: %w", ep.Host, unix.EEXIST)
	}
	for _, v := range h.Veths {
		if v.PID == pid && v.Iface == ep.Iface && h.Sys.Inodes[pid] != 0 {
			return fmt.Errorf("container's %s exists: %w", ep.Iface, unix.EEXIST)
		}
	}
	h.nextIdx++
	h.Veths[ep.Host] = &Veth{Alias: ep.Alias, Master: br.Name, PID: pid, Iface: ep.Iface, Addrs: ep.Addrs, Gateways: ep.Gateways, State: bridge.Live, Index: h.nextIdx, Quiet6: ep.Quiet6}
	return nil
}

func (h *Host) Detach(host, alias string) error {
	if err := h.Fail.Check("detach"); err != nil {
		return err
	}
	if v, ok := h.Veths[host]; ok && v.Alias == alias {
		delete(h.Veths, host)
	}
	return nil
}

func (h *Host) State(host, alias string) (bridge.VethState, error) {
	if v, ok := h.Veths[host]; ok && v.Alias == alias {
		return v.State, nil
	}
	return bridge.Gone, nil
}

func (h *Host) Ports(name string) ([]bridge.Port, error) {
	var ps []bridge.Port
	for n, v := range h.Veths {
		if v.Master == name {
			ps = append(ps, bridge.Port{Name: n, Alias: v.Alias, Index: v.Index})
		}
	}
	return ps, nil
}

func (h *Host) Unlabelled() ([]string, error) {
	var names []string
	for n, v := range h.Veths {
		if v.Alias == "" {
			names = append(names, n)
		}
	}
	return names, nil
}

func (h *Host) Present(ns netns.NsHandle, iface string, addrs []netip.Prefix) bool {
	for _, v := range h.Veths {
		if v.PID == h.Sys.fds[ns] && v.Iface == iface && slices.Equal(v.Addrs, addrs) {
			return true
		}
	}
	return false
}

func (h *Host) DefaultGateways(ns netns.NsHandle) []netip.Addr {
	for _, v := range h.Veths {
		if v.PID == h.Sys.fds[ns] {
			return v.Gateways
		}
	}
	return nil
}

func (h *Host) PeerAddrs(ns netns.NsHandle, iface string, p bridge.Port, subnets []netip.Prefix) ([]netip.Addr, bool) {
	v, ok := h.Veths[p.Name]
	if !ok || v.PID != h.Sys.fds[ns] || v.Iface != iface || len(v.Addrs) != len(subnets) {
		return nil, false
	}
	var ips []netip.Addr
	for i, subnet := range subnets {
		if !subnet.Contains(v.Addrs[i].Addr()) {
			return nil, false
		}
		ips = append(ips, v.Addrs[i].Addr())
	}
	return ips, true
}

func (h *Host) Close() {}

// Gen is the kernel's nftables generation: each transaction of the fake
// Firewall and Guard that share it moves it on, as any table's commit
// does in the kernel.
type Gen struct {
	N     uint32
	Reads int
}

// Get is nat.Generation.
func (g *Gen) Get() (uint32, error) {
	g.Reads++
	return g.N, nil
}

func (g *Gen) commit() {
	if g != nil {
		g.N++
	}
}

// Firewall keeps each network's rules as a flag and its published
// ports by container address.
type Firewall struct {
	Gen *Gen
	// Legacy makes it legacy iptables, which no generation covers;
	// Forwards counts the checks of IP forwarding.
	Legacy   bool
	Forwards int
	// Verifies lists the networks Verify was asked about; Reloaded marks
	// those whose rules a reload took.
	Verifies    []string
	VerifyFails bool
	Reloaded    map[string]bool

	Fail      Fails
	Installed map[string]nat.Network
	Ports     map[string]map[netip.Addr]nat.Published
	Calls     []string
}

// NewFirewall is a firewall with no rules.
func NewFirewall(fail Fails) *Firewall {
	return &Firewall{Fail: fail, Installed: map[string]nat.Network{}, Ports: map[string]map[netip.Addr]nat.Published{}}
}

func (f *Firewall) Install(n nat.Network, pubs []nat.Published) error {
	f.Calls = append(f.Calls, "install "+n.Bridge)
	if err := f.Fail.Check("install"); err != nil {
		return err
	}
	f.Gen.commit()
	f.Installed[n.Bridge] = n
	delete(f.Reloaded, n.Bridge)
	f.Ports[n.Bridge] = map[netip.Addr]nat.Published{}
	for _, p := range pubs {
		f.Ports[n.Bridge][p.IP] = p
	}
	return nil
}

func (f *Firewall) Uninstall(n nat.Network) error {
	f.Calls = append(f.Calls, "uninstall "+n.Bridge)
	if err := f.Fail.Check("uninstall"); err != nil {
		return err
	}
	f.Gen.commit()
	delete(f.Installed, n.Bridge)
	delete(f.Ports, n.Bridge)
	return nil
}

// Reload takes network br's rules away, as a firewall reload does.
func (f *Firewall) Reload(br string) {
	if f.Reloaded == nil {
		f.Reloaded = map[string]bool{}
	}
	f.Gen.commit()
	f.Reloaded[br] = true
	delete(f.Installed, br)
	delete(f.Ports, br)
}

func (f *Firewall) Verify(n nat.Network) (bool, error) {
	f.Verifies = append(f.Verifies, n.Bridge)
	if f.VerifyFails {
		return false, ErrInjected
	}
	return !f.Reloaded[n.Bridge], nil
}

func (f *Firewall) Close() {}

// Generational: the fake's rules move Gen.
func (f *Firewall) Generational() bool { return !f.Legacy }

func (f *Firewall) Forward(n nat.Network) error {
	f.Forwards++
	return nil
}

func (f *Firewall) Publish(n nat.Network, p nat.Published) error {
	f.Calls = append(f.Calls, "publish "+p.ID)
	if err := f.Fail.Check("publish"); err != nil {
		return err
	}
	if _, ok := f.Installed[n.Bridge]; !ok {
		return fmt.Errorf("publish on %s: no rules installed", n.Bridge)
	}
	f.Gen.commit()
	f.Ports[n.Bridge][p.IP] = p
	return nil
}

func (f *Firewall) Unpublish(n nat.Network, p nat.Published) error {
	f.Calls = append(f.Calls, "unpublish "+p.ID)
	if err := f.Fail.Check("unpublish"); err != nil {
		return err
	}
	f.Gen.commit()
	delete(f.Ports[n.Bridge], p.IP)
	return nil
}

func (f *Firewall) Published(n nat.Network) ([]nat.Published, error) {
	if err := f.Fail.Check("published"); err != nil {
		return nil, err
	}
	var ps []nat.Published
	for _, p := range f.Ports[n.Bridge] {
		p.ID = nat.Label(p.ID)
		ps = append(ps, p)
	}
	return ps, nil
}

// Listen makes port p of proto on addr (unspecified: every address of its
// family) held by a process of the host's.
func (s *System) Listen(proto string, addr netip.Addr, p uint16) {
	s.bound = append(s.bound, bound{proto, netip.AddrPortFrom(addr, p)})
}

type bound struct {
	proto string
	at    netip.AddrPort
}

// PortInUse: a port is held on its address, and on the wildcard of its
// family that covers it, as the kernel's bind sees it.
func (s *System) PortInUse(proto string, addr netip.Addr, p uint16) (bool, error) {
	for _, b := range s.bound {
		a := b.at.Addr()
		if b.proto == proto && b.at.Port() == p && a.Is6() == addr.Is6() && (a == addr || a.IsUnspecified() || addr.IsUnspecified()) {
			return true, nil
		}
	}
	return false, nil
}

// Guard keeps each network's spoof check: which veths it knows, and
// what each may send as.
type Guard struct {
	Gen *Gen
	// Verifies counts the checks of a table.
	Verifies int
	Fail     Fails
	Tables   map[string]map[string]nat.Sender // by bridge, by veth
}

// NewGuard is a kernel with no spoof check.
func NewGuard(fail Fails) *Guard {
	return &Guard{Fail: fail, Tables: map[string]map[string]nat.Sender{}}
}

func (g *Guard) Install(bridge string, senders []nat.Sender) error {
	if err := g.Fail.Check("guard"); err != nil {
		return err
	}
	g.Gen.commit()
	g.Tables[bridge] = map[string]nat.Sender{}
	for _, s := range senders {
		g.Tables[bridge][s.Veth] = s
	}
	return nil
}

func (g *Guard) Verify(bridge string) (bool, error) {
	g.Verifies++
	_, ok := g.Tables[bridge]
	return ok, nil
}

func (g *Guard) Allow(bridge string, s nat.Sender) error {
	if err := g.Fail.Check("allow"); err != nil {
		return err
	}
	t, ok := g.Tables[bridge]
	if !ok {
		return fmt.Errorf("spoof check of %s: no table", bridge)
	}
	g.Gen.commit()
	t[s.Veth] = s
	return nil
}

func (g *Guard) Forbid(bridge string, s nat.Sender) error {
	if err := g.Fail.Check("forbid"); err != nil {
		return err
	}
	g.Gen.commit()
	delete(g.Tables[bridge], s.Veth)
	return nil
}

func (g *Guard) Senders(bridge string) ([]string, error) {
	var veths []string
	for v := range g.Tables[bridge] {
		veths = append(veths, v)
	}
	slices.Sort(veths)
	return veths, nil
}

func (g *Guard) Drop(bridge string, veths []string) error {
	g.Gen.commit()
	for _, v := range veths {
		delete(g.Tables[bridge], v)
	}
	return nil
}

func (g *Guard) Uninstall(bridge string) error {
	if err := g.Fail.Check("unguard"); err != nil {
		return err
	}
	g.Gen.commit()
	delete(g.Tables, bridge)
	return nil
}

func (g *Guard) Close() {}

// Tenant is firewalld: the bridges in bridgehook's zone.
type Tenant struct {
	Fail  Fails
	Zone  map[string]bool
	Joins int // Join calls, to tell slow paths from warm ones
}

// NewTenant is a firewalld whose zone of ours holds nothing.
func NewTenant(fail Fails) *Tenant { return &Tenant{Fail: fail, Zone: map[string]bool{}} }

func (t *Tenant) Join(bridge string) (bool, error) {
	t.Joins++
	if err := t.Fail.Check("join"); err != nil {
		return false, err
	}
	reloaded := len(t.Zone) == 0
	t.Zone[bridge] = true
	return reloaded, nil
}

func (t *Tenant) Leave(bridge string) (bool, error) {
	delete(t.Zone, bridge)
	return len(t.Zone) == 0, nil
}

func (t *Tenant) Close() {}
