package hook

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/firewalld"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/names"
	"github.com/bridgehook/bridgehook/nat"
	"github.com/bridgehook/bridgehook/port"
)

// Host is the kernel's side of networks as hook drives it: *bridge.Host
// over netlink, or a fake in unit tests.
type Host interface {
	Ensure(name string, gws []netip.Prefix, mtu int) (br bridge.Bridge, created bool, err error)
	Find(name string) (bridge.Bridge, bool)
	Remove(name string) error
	Attach(br bridge.Bridge, ns netns.NsHandle, ep bridge.Endpoint) error
	Detach(host, alias string) error
	State(host, alias string) (bridge.VethState, error)
	Ports(bridge string) ([]bridge.Port, error)
	Unlabelled() ([]string, error)
	Present(ns netns.NsHandle, iface string, addrs []netip.Prefix) bool
	DefaultGateways(ns netns.NsHandle) []netip.Addr
	PeerAddrs(ns netns.NsHandle, iface string, p bridge.Port, subnets []netip.Prefix) ([]netip.Addr, bool)
	Close()
}

// System is what hook asks of the machine about processes and their
// sockets: /proc and the host's own ports, or a fake in unit tests.
type System interface {
	// Netns opens the network namespace of pid and returns it with its
	// inode, refusing the namespaces that are not a container's.
	Netns(pid int) (netns.NsHandle, uint64, error)
	// NetnsInode is the inode of pid's network namespace.
	NetnsInode(pid int) (uint64, error)
	// NetnsAt opens the network namespace at path (a bind mount of one,
	// as CNI runtimes give), refusing the hook's own.
	NetnsAt(path string) (netns.NsHandle, uint64, error)
	// PathInode is the inode of the namespace at path.
	PathInode(path string) (uint64, error)
	// PortInUse reports whether a socket of the host's holds port p of
	// proto on addr (unspecified: any address of its family).
	PortInUse(proto string, addr netip.Addr, p uint16) (bool, error)
}

// Network is one network, connected: its configuration and the handles
// one command's steps share. Build it with Open; close it when done.
type Network struct {
	Config
	// Debug, when set, is told how long each step took.
	Debug *slog.Logger

	store ipam.Store
	host  Host
	fw    nat.Firewall
	guard nat.Guard // the spoof check's table
	// tenant is firewalld, when it runs: asked for on the slow paths only.
	tenant func() (Tenant, error)
	// fws opens each firewall backend once per command: networks seen
	// through on() may use either.
	fws    *firewalls
	sys    System
	opener ipam.Opener
	// namer makes sure the name server serves the network (names.Ensure).
	namer func(stateDir, store string) error
	// gen reads the nftables generation (nat.Generation); verifiedGen is
	// the one this command verified the network at (gen.go).
	gen         func() (uint32, error)
	verifiedGen uint32
}

// Option replaces a part of the world a Network drives: the kernel's
// links, the firewall backends, the lease stores, /proc. Each is the real
// one by default; tests and other faces' tests pass fakes.
type Option func(*world)

// world is what a command drives.
type world struct {
	host     func() (Host, error)
	firewall func(name, stateDir string) nat.Firewall
	guard    func() nat.Guard
	tenant   func() (Tenant, error)
	opener   ipam.Opener
	sys      System
	namer    func(stateDir, store string) error
	gen      func() (uint32, error)
	debug    *slog.Logger
}

// WithHost drives h in place of the kernel's links.
func WithHost(h Host) Option {
	return func(w *world) { w.host = func() (Host, error) { return h, nil } }
}

// WithFirewall puts every backend's rules into fw.
func WithFirewall(fw nat.Firewall) Option {
	return func(w *world) { w.firewall = func(string, string) nat.Firewall { return fw } }
}

// Tenant is the firewall daemon bridgehook shares the host with, firewalld
// over D-Bus, or a fake in unit tests: it puts a network's bridge in a
// zone of bridgehook's, and takes it out.
type Tenant interface {
	Join(bridge string) (reloaded bool, err error)
	Leave(bridge string) (reloaded bool, err error)
	Close()
}

// WithTenant makes t the firewall daemon, nil for none.
func WithTenant(t Tenant) Option {
	return func(w *world) { w.tenant = func() (Tenant, error) { return t, nil } }
}

// realTenant is firewalld where it runs; nil, and no D-Bus connection,
// where it does not.
func realTenant() (Tenant, error) {
	if !firewalld.Running() {
		return nil, nil
	}
	c, err := firewalld.Dial()
	if errors.Is(err, firewalld.ErrNotRunning) {
		return nil, nil
	}
	return c, err
}

// WithGuard keeps the spoof check in g.
func WithGuard(g nat.Guard) Option { return func(w *world) { w.guard = func() nat.Guard { return g } } }

// WithStores keeps leases in the stores o opens.
func WithStores(o ipam.Opener) Option { return func(w *world) { w.opener = o } }

// WithSystem asks s, in place of /proc, about processes and namespaces.
func WithSystem(s System) Option { return func(w *world) { w.sys = s } }

// WithNamer makes ensure the name server of networks with names, in place
// of names.Ensure.
func WithNamer(ensure func(stateDir, store string) error) Option {
	return func(w *world) { w.namer = ensure }
}

// WithGeneration reads the nftables generation with gen, in place of
// nat.Generation.
func WithGeneration(gen func() (uint32, error)) Option { return func(w *world) { w.gen = gen } }

// WithDebug tells debug how long each step took.
func WithDebug(debug *slog.Logger) Option { return func(w *world) { w.debug = debug } }

func worldOf(opts []Option) world {
	w := world{
		host:     func() (Host, error) { return bridge.OpenHost() },
		firewall: realFirewall,
		guard:    func() nat.Guard { return nat.NewGuard() },
		tenant:   realTenant,
		opener:   ipam.OnDisk{},
		sys:      procs{},
		namer:    names.Ensure,
		gen:      nat.Generation,
	}
	for _, o := range opts {
		o(&w)
	}
	return w
}

func realFirewall(name, stateDir string) nat.Firewall {
	if name == "nftables" {
		return nat.NewNFTables()
	}
	return nat.NewIPTables(filepath.Join(stateDir, "iptables.lock"))
}

// Open checks c and connects to its network: the lease store under
// c.StateDir (created if need be), netlink in the caller's network
// namespace, and the firewall.
func Open(c Config, opts ...Option) (*Network, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	w := worldOf(opts)
	store, err := w.opener.Open(c.StateDir, c.Bridge, c.Subnets...)
	if err != nil {
		return nil, hint(err)
	}
	host, err := w.host()
	if err != nil {
		return nil, err
	}
	fws := &firewalls{stateDir: c.StateDir, open: w.firewall}
	return &Network{
		Config: c,
		Debug:  w.debug,
		store:  store,
		host:   host,
		fw:     fws.get(c.Firewall),
		guard:  w.guard(),
		tenant: w.tenant,
		fws:    fws,
		sys:    w.sys,
		opener: w.opener,
		namer:  w.namer,
		gen:    w.gen,
	}, nil
}

// Close lets go of the store (leases this process allocated are no longer
// pending) and the netlink connection.
func (n *Network) Close() {
	n.store.Close()
	n.host.Close()
	n.guard.Close()
	n.fws.close()
}

// stores lists every network's store under the state directory, for the
// checks that look across networks.
func (n *Network) stores() ([]ipam.Store, error) { return n.opener.All(n.StateDir) }

// firewalls are the firewall backends one command has opened.
type firewalls struct {
	stateDir string
	open     func(name, stateDir string) nat.Firewall
	opened   map[string]nat.Firewall
}

func (f *firewalls) get(name string) nat.Firewall {
	if f.opened == nil {
		f.opened = map[string]nat.Firewall{}
	}
	if name == "" {
		name = "iptables"
	}
	fw, ok := f.opened[name]
	if !ok {
		fw = f.open(name, f.stateDir)
		f.opened[name] = fw
	}
	return fw
}

func (f *firewalls) close() {
	for _, fw := range f.opened {
		fw.Close()
	}
}

// on is network s seen through n's connections: for the commands and
// checks that go across networks. Its options are n's until adopt reads
// the network's own.
func (n *Network) on(s ipam.Store) *Network {
	o := *n
	o.Bridge, o.Subnets, o.store = s.Bridge(), s.Subnets(), s
	return &o
}

// adopt takes the options the network's rules were installed with from
// its record, if any: gc --all and the port checks act on networks whose
// flags they were not given.
func (n *Network) adopt(tx ipam.Tx) {
	if rec, ok := readRecord(tx); ok {
		n.ICC, n.Internal, n.NonMasquerade, n.SpoofCheck = rec.ICC, rec.Internal, rec.NonMasquerade, !rec.NoSpoofCheck
		n.Names = rec.Names != nil
		if n.Names {
			n.DNS = rec.Names.Upstreams
		}
	}
	n.adoptFirewall(tx)
}

// adoptFirewall makes n use the backend the network's rules are in, which
// may not be the --firewall a command was given: removing rules from the
// other one would leave them in place.
func (n *Network) adoptFirewall(tx ipam.Tx) {
	if rec, ok := readRecord(tx); ok {
		n.useFirewall(rec.firewall())
	}
}

// pickFirewall settles the backend a setup installs into: the network's
// own (rec, if known), which a --firewall given must match, or for a new
// network the one given, iptables by default.
func (n *Network) pickFirewall(rec record, known bool) error {
	switch {
	case !known && n.Firewall == "":
		n.useFirewall("iptables")
	case !known:
	case n.Firewall == "":
		n.useFirewall(rec.firewall())
	case n.Firewall != rec.firewall():
		return &input.Error{Field: input.Firewall,
			Msg: fmt.Sprintf("%s: network %s has its rules in %s: leave {firewall} out, or move the network", n.Firewall, n.Bridge, rec.firewall()),
			Run: "bridgehook --firewall " + n.Firewall + " repair"}
	}
	return nil
}

// useFirewall makes n's rules go to the named backend.
func (n *Network) useFirewall(name string) {
	n.Firewall = name
	n.fw = n.fws.get(name)
}

func (n *Network) timer() *timer { return newTimer(n.Debug) }

// alive reports whether the lease's container still runs: its pid exists
// and is in the namespace the lease was made for, not a reuse of the pid;
// or, for a namespace given by path (CNI), the path still holds that
// namespace (the runtime unmounts it when the pod sandbox goes).
func (n *Network) alive(l ipam.Lease) bool {
	var ino uint64
	var err error
	if ns := NetnsOf(l); ns.ByPath() {
		ino, err = n.sys.PathInode(ns.Path)
	} else {
		ino, err = n.sys.NetnsInode(l.PID)
	}
	return err == nil && ino == l.NetnsInode
}

// openNetns opens namespace ns: by path, or by pid.
func (n *Network) openNetns(ns Netns) (netns.NsHandle, uint64, error) {
	if ns.ByPath() {
		return n.sys.NetnsAt(ns.Path)
	}
	return n.sys.Netns(ns.PID)
}

// ErrInput marks errors in what the hook was given, as opposed to failures
// of the host: errors.Is(err, ErrInput).
var ErrInput = input.Err

// inputErr is bad input that no one setting is at fault for.
func inputErr(format string, a ...any) error { return input.Errorf("", format, a...) }

// hint adds to an error of a leaf package what a person running
// bridgehook can do about it: the leaves state facts, and only this face
// knows the flags and commands.
func hint(err error) error {
	var pathErr *os.PathError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ipam.ErrUnsafe):
		return input.Errorf(input.StateDir, ": %v (give a real directory, mode 0700)", err)
	case errors.Is(err, ipam.ErrExhausted):
		return input.Explain(err, "%v (remove stopped containers, run \"bridgehook gc\", or use a larger {subnet})", err)
	case errors.Is(err, ipam.ErrCorrupt):
		return fmt.Errorf("%w (run \"bridgehook gc\" to rebuild it)", err)
	case errors.Is(err, bridge.ErrNotBridge), errors.Is(err, bridge.ErrOtherAddress):
		return inputErr("%v (choose another {bridge}, or the bridge's own {subnet})", err)
	case errors.Is(err, bridge.ErrOverlap):
		return inputErr("%v; choose another {subnet}", err)
	case errors.As(err, &pathErr) && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES)):
		return input.Explain(err, "%v (is {state-dir} writable, with space left?)", err)
	}
	return err
}

// procs is the System of /proc.
type procs struct {
	// host is the host's network namespace, PID 1's: a field so that a
	// test can name a sandbox's in its place.
	host string
}

// hostNetns is PID 1's network namespace, the host's, whatever namespace
// bridgehook itself runs in.
const hostNetns = "/proc/1/ns/net"

func (procs) NetnsInode(pid int) (uint64, error) {
	return pathInode(fmt.Sprintf("/proc/%d/ns/net", pid))
}

// notAContainers names the namespace of inode ino when it is bridgehook's
// own (self says whose: the hook's, the plugin's) or the host's, which are
// never a container's.
func (p procs) notAContainers(ino uint64, self string) string {
	host := p.host
	if host == "" {
		host = hostNetns
	}
	for _, other := range []struct{ who, path string }{
		{self, "/proc/self/ns/net"},
		{"the host's (PID 1's)", host},
	} {
		if o, err := pathInode(other.path); err == nil && o == ino {
			return other.who
		}
	}
	return ""
}

func (p procs) Netns(pid int) (netns.NsHandle, uint64, error) {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return ns, 0, input.Errorf(input.Netns, "pid %d: no such process; want the pid of the container's init, which runs while createRuntime and prestart hooks do", pid)
		}
		if errors.Is(err, os.ErrPermission) {
			return ns, 0, input.Errorf(input.Netns, "pid %d: its network namespace cannot be opened (%v); want the pid of a container's init", pid, err)
		}
		return ns, 0, fmt.Errorf("open network namespace of pid %d: %w", pid, err)
	}
	ino, err := fdInode(int(ns))
	if err != nil {
		ns.Close()
		return ns, 0, fmt.Errorf("network namespace of pid %d: %w", pid, err)
	}
	if who := p.notAContainers(ino, "the hook's own"); who != "" {
		ns.Close()
		return ns, 0, input.Errorf(input.Netns, "pid %d is in %s network namespace; refusing to touch it (give the container a network namespace of its own in config.json)", pid, who)
	}
	return ns, ino, nil
}

func (procs) PathInode(path string) (uint64, error) { return pathInode(path) }

func (procs) PortInUse(proto string, addr netip.Addr, p uint16) (bool, error) {
	return port.InUse(proto, addr, p)
}

func (p procs) NetnsAt(path string) (netns.NsHandle, uint64, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return ns, 0, input.Errorf(input.Netns, "%s: not a network namespace: %v", path, err)
	}
	ino, err := fdInode(int(ns))
	if err == nil && !isNetns(int(ns)) {
		err = input.Errorf(input.Netns, "%s: not a network namespace", path)
	}
	if who := p.notAContainers(ino, "the plugin's own"); err == nil && who != "" {
		err = input.Errorf(input.Netns, "%s is %s network namespace; refusing to touch it (want a pod's own)", path, who)
	}
	if err != nil {
		ns.Close()
		return ns, 0, err
	}
	return ns, ino, nil
}

// isNetns reports whether fd is a network namespace: a file of nsfs that
// answers the namespace-type ioctl with CLONE_NEWNET.
func isNetns(fd int) bool {
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	return err == nil && t == unix.CLONE_NEWNET
}

func fdInode(fd int) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

func pathInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// installFirewall installs the network's rules, with the ports of every
// lease in tx.
func (n *Network) installFirewall(tx ipam.Tx) error {
	leases, _, err := tx.List()
	if err != nil {
		return err
	}
	var pubs []nat.Published
	for _, l := range leases {
		if len(l.Ports) > 0 {
			pubs = append(pubs, published(l))
		}
	}
	return n.fw.Install(n.natNetwork(), pubs)
}

// joinTenant puts the network's bridge in firewalld's zone of ours, where
// firewalld runs. A reload that made the zone flushed the firewall: the
// caller installs the rules after this.
func (n *Network) joinTenant() error {
	t, err := n.tenant()
	if err != nil || t == nil {
		return err
	}
	defer t.Close()
	_, err = t.Join(n.Bridge)
	return err
}

// leaveTenant takes the network's bridge out of firewalld's zone.
func (n *Network) leaveTenant() error {
	t, err := n.tenant()
	if err != nil || t == nil {
		return err
	}
	defer t.Close()
	_, err = t.Leave(n.Bridge)
	return err
}

// installGuard installs the network's spoof check with what every lease
// in tx may send as, or with the check off takes it away.
func (n *Network) installGuard(tx ipam.Tx) error {
	if !n.SpoofCheck {
		return n.guard.Uninstall(n.Bridge)
	}
	leases, _, err := tx.List()
	if err != nil {
		return err
	}
	var senders []nat.Sender
	for _, l := range leases {
		senders = append(senders, senderOf(l))
	}
	return n.guard.Install(n.Bridge, senders)
}

// senderOf is what lease l's container may send as.
func senderOf(l ipam.Lease) nat.Sender {
	return nat.Sender{Veth: l.Veth, MAC: macOf(l), IPs: l.Addrs()}
}

// macOf is the MAC of lease l's container: the one it asked for, or the
// one derived from its address.
func macOf(l ipam.Lease) net.HardwareAddr {
	if l.MAC != nil {
		return l.MAC
	}
	return bridge.MAC(l.IP)
}

// removeIfUnused removes the network's bridge and rules when no lease is
// left: the undo of a setup that created them, which must not pull the
// bridge from under a container that joined it meanwhile.
func (n *Network) removeIfUnused(tx ipam.Tx) error {
	ls, bad, err := tx.List()
	if err != nil || len(ls)+len(bad) > 0 {
		return err
	}
	return n.removeNetwork(tx)
}

// removeNetwork clears the record first: a command killed half-way then
// leaves a network that the next setup verifies rather than trusts.
func (n *Network) removeNetwork(tx ipam.Tx) error {
	if err := tx.ClearRecord(); err != nil {
		return err
	}
	if err := n.leaveTenant(); err != nil {
		return err
	}
	if err := n.fw.Uninstall(n.natNetwork()); err != nil {
		return err
	}
	if err := n.guard.Uninstall(n.Bridge); err != nil {
		return err
	}
	return n.host.Remove(n.Bridge)
}

// prefixes are lease l's addresses with their subnets' prefix lengths.
func (n *Network) prefixes(l ipam.Lease) []netip.Prefix {
	var ps []netip.Prefix
	for _, ip := range l.Addrs() {
		for _, p := range n.Subnets {
			if p.Contains(ip) {
				ps = append(ps, netip.PrefixFrom(ip, p.Bits()))
			}
		}
	}
	return ps
}

// same reports whether store s is n's network's.
func (n *Network) same(s ipam.Store) bool {
	return s.Bridge() == n.Bridge && slices.Equal(s.Subnets(), n.Subnets)
}

// checkBridgeFree refuses a bridge that another network under the state
// directory uses (it has leases, or its bridge and rules were set up):
// two stores handing out addresses on one bridge (say an IPv4 network and
// the same one made dual-stack) could lease one address twice. It runs
// where a setup cannot trust its record, never on the warm path.
func (n *Network) checkBridgeFree() error {
	stores, err := n.stores()
	if err != nil {
		return err
	}
	for _, s := range stores {
		if s.Bridge() != n.Bridge || n.same(s) {
			continue
		}
		// A store that a refused setup left empty is no network.
		if ls, err := s.Peek(); err == nil && len(ls) == 0 && !s.Recorded() {
			continue
		}
		return &input.Error{
			Msg: fmt.Sprintf("bridge %s is network %v's; use another {bridge}, or remove that network first", n.Bridge, s.Subnets()),
			Run: "bridgehook --bridge " + n.Bridge + " " + subnetFlags(s.Subnets()) + " network rm"}
	}
	return nil
}

// subnetFlags are the --subnet flags naming subnets.
func subnetFlags(subnets []netip.Prefix) string {
	var fs []string
	for _, p := range subnets {
		fs = append(fs, "--subnet "+p.String())
	}
	return strings.Join(fs, " ")
}

// alias labels a host veth with its container, so that teardown and gc
// delete only veths that are ours, even when a pid (and so a veth name) has
// been reused. An alias holds at most 255 bytes; long ids are hashed.
func alias(id string) string {
	if len(id) <= 200 {
		return "bridgehook:" + id
	}
	h := fnv.New128a() // not crypto/sha256: see ipam's idPath
	h.Write([]byte(id))
	return "bridgehook:fnv128a:" + hex.EncodeToString(h.Sum(nil))
}
