package hook

// Fakes of what a Network drives (the kernel's links, the firewall, /proc)
// over an in-memory lease store, so that hook's decisions are tested
// without root. Each fake keeps the state a test asserts on, and fails a
// named operation on request.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/nat"
)

var errInjected = errors.New("injected failure")

// fails is a set of operations to fail, shared by the fakes.
type fails map[string]bool

func (f fails) check(op string) error {
	if f[op] {
		return fmt.Errorf("%s: %w", op, errInjected)
	}
	return nil
}

// fakeSystem is /proc: pids alive in namespaces (by inode). Netns hands out
// a real file descriptor (of /dev/null) per call, so that the code under
// test may close it, and remembers whose namespace it stands for.
type fakeSystem struct {
	t      *testing.T
	inodes map[int]uint64
	fds    map[netns.NsHandle]int
	// paths are namespaces bind-mounted at a path (CNI's), each standing
	// for the namespace of a pid.
	paths map[string]int
}

func (s *fakeSystem) NetnsAt(path string) (netns.NsHandle, uint64, error) {
	pid, ok := s.paths[path]
	if !ok {
		return -1, 0, fmt.Errorf("%w: %s", ErrNetns, path)
	}
	return s.Netns(pid)
}

func (s *fakeSystem) PathInode(path string) (uint64, error) {
	if pid, ok := s.paths[path]; ok {
		return s.NetnsInode(pid)
	}
	return 0, errors.New("no such file")
}

func (s *fakeSystem) Netns(pid int) (netns.NsHandle, uint64, error) {
	ino, ok := s.inodes[pid]
	if !ok {
		return -1, 0, inputErr("pid %d: no such process", pid)
	}
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	s.fds[netns.NsHandle(fd)] = pid
	return netns.NsHandle(fd), ino, nil
}

func (s *fakeSystem) NetnsInode(pid int) (uint64, error) {
	if ino, ok := s.inodes[pid]; ok {
		return ino, nil
	}
	return 0, errors.New("no such process")
}

// fakeVeth is a host veth: its alias, its bridge, and the container end.
type fakeVeth struct {
	alias    string
	master   string
	pid      int // whose namespace holds the peer
	iface    string
	addrs    []netip.Prefix
	gateways []netip.Addr
	state    bridge.VethState
	index    int
}

// fakeHost is the kernel's links.
type fakeHost struct {
	sys     *fakeSystem
	fail    fails
	bridges map[string]bridge.Bridge
	veths   map[string]*fakeVeth
	nextIdx int
	ensured int   // Ensure calls, to tell warm setups from cold ones
	quieted []int // the pids whose namespaces Quiet6 was asked to quiet
}

func (h *fakeHost) Ensure(name string, gws []netip.Prefix, mtu int) (bridge.Bridge, bool, error) {
	h.ensured++
	if err := h.fail.check("ensure"); err != nil {
		return bridge.Bridge{}, false, err
	}
	if br, ok := h.bridges[name]; ok {
		return br, false, nil
	}
	if mtu == 0 {
		mtu = 1500
	}
	h.nextIdx++
	br := bridge.Bridge{Name: name, Index: h.nextIdx, MTU: mtu}
	h.bridges[name] = br
	return br, true, nil
}

func (h *fakeHost) Find(name string) (bridge.Bridge, bool) {
	br, ok := h.bridges[name]
	return br, ok
}

func (h *fakeHost) Remove(name string) error {
	if err := h.fail.check("remove"); err != nil {
		return err
	}
	delete(h.bridges, name)
	return nil
}

func (h *fakeHost) Attach(br bridge.Bridge, ns netns.NsHandle, ep bridge.Endpoint) error {
	if err := h.fail.check("attach"); err != nil {
		return err
	}
	pid := h.sys.fds[ns]
	if _, ok := h.veths[ep.Host]; ok {
		return fmt.Errorf("create veth %s: %w", ep.Host, unix.EEXIST)
	}
	for _, v := range h.veths {
		if v.pid == pid && v.iface == ep.Iface && h.sys.inodes[pid] != 0 {
			return fmt.Errorf("container's %s exists: %w", ep.Iface, unix.EEXIST)
		}
	}
	h.nextIdx++
	h.veths[ep.Host] = &fakeVeth{alias: ep.Alias, master: br.Name, pid: pid, iface: ep.Iface, addrs: ep.Addrs, gateways: ep.Gateways, state: bridge.Live, index: h.nextIdx}
	return nil
}

func (h *fakeHost) Quiet6(ns netns.NsHandle) func() error {
	h.quieted = append(h.quieted, h.sys.fds[ns])
	return func() error { return h.fail.check("quiet6") }
}

func (h *fakeHost) Detach(host, alias string) error {
	if err := h.fail.check("detach"); err != nil {
		return err
	}
	if v, ok := h.veths[host]; ok && v.alias == alias {
		delete(h.veths, host)
	}
	return nil
}

func (h *fakeHost) State(host, alias string) (bridge.VethState, error) {
	if v, ok := h.veths[host]; ok && v.alias == alias {
		return v.state, nil
	}
	return bridge.Gone, nil
}

func (h *fakeHost) Ports(name string) ([]bridge.Port, error) {
	var ps []bridge.Port
	for n, v := range h.veths {
		if v.master == name {
			ps = append(ps, bridge.Port{Name: n, Alias: v.alias, Index: v.index})
		}
	}
	return ps, nil
}

func (h *fakeHost) Unlabelled() ([]string, error) {
	var names []string
	for n, v := range h.veths {
		if v.alias == "" {
			names = append(names, n)
		}
	}
	return names, nil
}

func (h *fakeHost) Present(ns netns.NsHandle, iface string, addrs []netip.Prefix) bool {
	for _, v := range h.veths {
		if v.pid == h.sys.fds[ns] && v.iface == iface && slices.Equal(v.addrs, addrs) {
			return true
		}
	}
	return false
}

func (h *fakeHost) DefaultGateways(ns netns.NsHandle) []netip.Addr {
	for _, v := range h.veths {
		if v.pid == h.sys.fds[ns] {
			return v.gateways
		}
	}
	return nil
}

func (h *fakeHost) PeerAddrs(ns netns.NsHandle, iface string, p bridge.Port, subnets []netip.Prefix) ([]netip.Addr, bool) {
	v, ok := h.veths[p.Name]
	if !ok || v.pid != h.sys.fds[ns] || v.iface != iface || len(v.addrs) != len(subnets) {
		return nil, false
	}
	var ips []netip.Addr
	for i, subnet := range subnets {
		if !subnet.Contains(v.addrs[i].Addr()) {
			return nil, false
		}
		ips = append(ips, v.addrs[i].Addr())
	}
	return ips, true
}

func (h *fakeHost) Close() {}

// fakeFirewall keeps each network's rules as a flag and its published
// ports by container address.
type fakeFirewall struct {
	// verifies lists the networks Verify was asked about; reloaded marks
	// those whose rules a reload took.
	verifies    []string
	verifyFails bool
	reloaded    map[string]bool

	fail      fails
	installed map[string]nat.Network
	ports     map[string]map[netip.Addr]nat.Published
	calls     []string
}

func (f *fakeFirewall) Install(n nat.Network, pubs []nat.Published) error {
	f.calls = append(f.calls, "install "+n.Bridge)
	if err := f.fail.check("install"); err != nil {
		return err
	}
	f.installed[n.Bridge] = n
	delete(f.reloaded, n.Bridge)
	f.ports[n.Bridge] = map[netip.Addr]nat.Published{}
	for _, p := range pubs {
		f.ports[n.Bridge][p.IP] = p
	}
	return nil
}

func (f *fakeFirewall) Uninstall(n nat.Network) error {
	f.calls = append(f.calls, "uninstall "+n.Bridge)
	if err := f.fail.check("uninstall"); err != nil {
		return err
	}
	delete(f.installed, n.Bridge)
	delete(f.ports, n.Bridge)
	return nil
}

// reload takes network br's rules away, as a firewall reload does.
func (f *fakeFirewall) reload(br string) {
	if f.reloaded == nil {
		f.reloaded = map[string]bool{}
	}
	f.reloaded[br] = true
	delete(f.installed, br)
	delete(f.ports, br)
}

func (f *fakeFirewall) Verify(n nat.Network) (bool, error) {
	f.verifies = append(f.verifies, n.Bridge)
	if f.verifyFails {
		return false, errInjected
	}
	return !f.reloaded[n.Bridge], nil
}

func (f *fakeFirewall) Close() {}

func (f *fakeFirewall) Publish(n nat.Network, p nat.Published) error {
	f.calls = append(f.calls, "publish "+p.ID)
	if err := f.fail.check("publish"); err != nil {
		return err
	}
	if _, ok := f.installed[n.Bridge]; !ok {
		return fmt.Errorf("publish on %s: no rules installed", n.Bridge)
	}
	f.ports[n.Bridge][p.IP] = p
	return nil
}

func (f *fakeFirewall) Unpublish(n nat.Network, p nat.Published) error {
	f.calls = append(f.calls, "unpublish "+p.ID)
	if err := f.fail.check("unpublish"); err != nil {
		return err
	}
	delete(f.ports[n.Bridge], p.IP)
	return nil
}

func (f *fakeFirewall) Published(n nat.Network) ([]nat.Published, error) {
	var ps []nat.Published
	for _, p := range f.ports[n.Bridge] {
		p.ID = nat.Label(p.ID)
		ps = append(ps, p)
	}
	return ps, nil
}

// world is a network over the fakes, with the fakes at hand.
type world struct {
	t     *testing.T
	n     *Network
	store *ipam.Memory
	host  *fakeHost
	fw    *fakeFirewall
	sys   *fakeSystem
	fail  fails
	// others are further networks' stores under the same state directory.
	others []ipam.Store
}

func newWorld(t *testing.T, subnets ...string) *world {
	t.Helper()
	c := Defaults()
	c.Subnets = nil
	for _, s := range subnets {
		c.Subnets = append(c.Subnets, netip.MustParsePrefix(s))
	}
	c.StateDir = t.TempDir()
	store, err := ipam.NewMemory(c.Bridge, c.Subnets...)
	if err != nil {
		t.Fatal(err)
	}
	f := fails{}
	sys := &fakeSystem{t: t, inodes: map[int]uint64{}, fds: map[netns.NsHandle]int{}, paths: map[string]int{}}
	w := &world{
		t: t, store: store, fail: f, sys: sys,
		host: &fakeHost{sys: sys, fail: f, bridges: map[string]bridge.Bridge{}, veths: map[string]*fakeVeth{}},
		fw:   &fakeFirewall{fail: f, installed: map[string]nat.Network{}, ports: map[string]map[netip.Addr]nat.Published{}},
	}
	store.Fail = f.check
	w.n = &Network{Config: c, store: store, host: w.host, fw: w.fw, sys: sys}
	w.n.stores = func() ([]ipam.Store, error) { return append([]ipam.Store{store}, w.others...), nil }
	return w
}

// container starts a fake container: pid in a namespace of its own.
func (w *world) container(pid int) int {
	w.sys.inodes[pid] = uint64(1000 + pid)
	return pid
}

// kill ends container pid: its namespace goes, its veth with it unless
// dying says the kernel is still at it.
func (w *world) kill(pid int, dying bool) {
	delete(w.sys.inodes, pid)
	for name, v := range w.host.veths {
		if v.pid == pid {
			if dying {
				v.state = bridge.Dying
			} else {
				delete(w.host.veths, name)
			}
		}
	}
}

func (w *world) setup(id string, pid int, ports string) (Result, error) {
	w.t.Helper()
	req := Request{ID: id, PID: pid}
	if ports != "" {
		p, err := nat.ParsePorts(ports)
		if err != nil {
			w.t.Fatal(err)
		}
		req.Ports = p
	}
	res, err := w.n.Setup(req)
	w.store.Close() // the hook process ends
	return res, err
}

func (w *world) mustSetup(id string, pid int, ports string) ipam.Lease {
	w.t.Helper()
	res, err := w.setup(id, pid, ports)
	if err != nil {
		w.t.Fatalf("setup %s: %v", id, err)
	}
	return res.Lease
}

func (w *world) leases() []ipam.Lease {
	w.t.Helper()
	ls, err := w.store.Peek()
	if err != nil {
		w.t.Fatal(err)
	}
	slices.SortFunc(ls, func(a, b ipam.Lease) int { return a.IP.Compare(b.IP) })
	return ls
}

func (w *world) draining() []ipam.Lease {
	var d []ipam.Lease
	w.store.Do(func(tx ipam.Tx) (err error) { d, err = tx.Draining(); return err })
	return d
}

func (w *world) gc() []string {
	w.t.Helper()
	var report []string
	err := w.store.Do(func(tx ipam.Tx) (err error) { report, err = w.n.gc(tx); return err })
	if err != nil {
		w.t.Fatalf("gc: %v", err)
	}
	return report
}

// assertEmpty checks that nothing of the network is left: no lease, no
// veth, no bridge, no rules, no record.
func (w *world) assertEmpty() {
	w.t.Helper()
	if ls := w.leases(); len(ls) != 0 {
		w.t.Errorf("leases left: %+v", ls)
	}
	if len(w.host.veths) != 0 {
		w.t.Errorf("veths left: %v", w.host.veths)
	}
	if len(w.host.bridges) != 0 {
		w.t.Errorf("bridges left: %v", w.host.bridges)
	}
	if len(w.fw.installed) != 0 {
		w.t.Errorf("rules left for %v", w.fw.installed)
	}
	w.store.Do(func(tx ipam.Tx) error {
		if _, ok := readRecord(tx); ok {
			w.t.Error("network record left")
		}
		return nil
	})
}
