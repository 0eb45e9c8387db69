package hook

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/nat"
)

// Host is the kernel's side of networks as hook drives it: *bridge.Host
// over netlink, or a fake in unit tests.
type Host interface {
	Ensure(name string, gws []netip.Prefix, mtu int) (br bridge.Bridge, created bool, err error)
	Find(name string) (bridge.Bridge, bool)
	Remove(name string) error
	Attach(br bridge.Bridge, ns netns.NsHandle, ep bridge.Endpoint) error
	Quiet6(ns netns.NsHandle) (wait func() error)
	Detach(host, alias string) error
	State(host, alias string) (bridge.VethState, error)
	Ports(bridge string) ([]bridge.Port, error)
	Unlabelled() ([]string, error)
	Present(ns netns.NsHandle, iface string, addrs []netip.Prefix) bool
	DefaultGateways(ns netns.NsHandle) []netip.Addr
	PeerAddrs(ns netns.NsHandle, iface string, p bridge.Port, subnets []netip.Prefix) ([]netip.Addr, bool)
	Close()
}

// System is what hook asks of the machine about processes: /proc, or a
// fake in unit tests.
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
	// fws opens each firewall backend once per command: networks seen
	// through on() may use either.
	fws *firewalls
	sys System
	// stores lists every network's store under the state directory, for
	// the checks that look across networks.
	stores func() ([]ipam.Store, error)
}

// Open checks c and connects to its network: the lease store under
// c.StateDir (created if need be), netlink in the caller's network
// namespace, and the firewall.
func Open(c Config) (*Network, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	store, err := ipam.Open(c.StateDir, c.Bridge, c.Subnets...)
	if err != nil {
		return nil, hint(err)
	}
	host, err := bridge.OpenHost()
	if err != nil {
		return nil, err
	}
	fws := &firewalls{stateDir: c.StateDir}
	return &Network{
		Config: c,
		store:  store,
		host:   host,
		fw:     fws.get(c.Firewall),
		fws:    fws,
		sys:    procs{},
		stores: func() ([]ipam.Store, error) { return ipam.Stores(c.StateDir) },
	}, nil
}

// Close lets go of the store (leases this process allocated are no longer
// pending) and the netlink connection.
func (n *Network) Close() {
	n.store.Close()
	n.host.Close()
	n.fws.close()
}

// firewalls are the firewall backends one command has opened.
type firewalls struct {
	stateDir string
	open     map[string]nat.Firewall
}

func (f *firewalls) get(name string) nat.Firewall {
	if f.open == nil {
		f.open = map[string]nat.Firewall{}
	}
	if name == "" {
		name = "iptables"
	}
	fw, ok := f.open[name]
	if !ok {
		if name == "nftables" {
			fw = nat.NewNFTables()
		} else {
			fw = nat.NewIPTables(filepath.Join(f.stateDir, "iptables.lock"))
		}
		f.open[name] = fw
	}
	return fw
}

func (f *firewalls) close() {
	if f == nil {
		return
	}
	for _, fw := range f.open {
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
		n.ICC, n.Internal, n.NonMasquerade = rec.ICC, rec.Internal, rec.NonMasquerade
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
		return inputErr("network %s has its rules in %s: leave out --firewall %s, or move the network with \"bridgehook --firewall %s repair\"",
			n.Bridge, rec.firewall(), n.Firewall, n.Firewall)
	}
	return nil
}

// useFirewall makes n's rules go to the named backend.
func (n *Network) useFirewall(name string) {
	n.Firewall = name
	// Without fws (unit tests), the fake stands for every backend.
	if n.fws != nil {
		n.fw = n.fws.get(name)
	}
}

func (n *Network) timer() *timer { return newTimer(n.Debug) }

// alive reports whether the lease's container still runs: its pid exists
// and is in the namespace the lease was made for, not a reuse of the pid;
// or, for a namespace given by path (CNI), the path still holds that
// namespace (the runtime unmounts it when the pod sandbox goes).
func (n *Network) alive(l ipam.Lease) bool {
	var ino uint64
	var err error
	if l.Netns != "" {
		ino, err = n.sys.PathInode(l.Netns)
	} else {
		ino, err = n.sys.NetnsInode(l.PID)
	}
	return err == nil && ino == l.NetnsInode
}

// ErrNetns marks a network namespace path that names none.
var ErrNetns = errors.New("not a network namespace")

// openNetns opens the namespace of the container req names: by path, or
// by pid.
func (n *Network) openNetns(req Request) (netns.NsHandle, uint64, error) {
	if req.Netns != "" {
		return n.sys.NetnsAt(req.Netns)
	}
	return n.sys.Netns(req.PID)
}

// hint adds to an error of a leaf package what a person running
// bridgehook can do about it: the leaves state facts, and only this face
// knows the flags and commands.
func hint(err error) error {
	var pathErr *os.PathError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ipam.ErrUnsafe):
		return inputErr("--state-dir: %v (give a real directory, mode 0700)", err)
	case errors.Is(err, ipam.ErrExhausted):
		return fmt.Errorf("%w (remove stopped containers, run \"bridgehook gc\", or use a larger --subnet)", err)
	case errors.Is(err, ipam.ErrCorrupt):
		return fmt.Errorf("%w (run \"bridgehook gc\" to rebuild it)", err)
	case errors.Is(err, bridge.ErrNotBridge), errors.Is(err, bridge.ErrOtherAddress):
		return inputErr("%v (choose another --bridge, or the bridge's own --subnet)", err)
	case errors.Is(err, bridge.ErrOverlap):
		return inputErr("%v; choose another --subnet", err)
	case errors.As(err, &pathErr) && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES)):
		return fmt.Errorf("%w (is --state-dir writable, with space left?)", err)
	}
	return err
}

// procs is the System of /proc.
type procs struct{}

func (procs) NetnsInode(pid int) (uint64, error) {
	return pathInode(fmt.Sprintf("/proc/%d/ns/net", pid))
}

func (procs) Netns(pid int) (netns.NsHandle, uint64, error) {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return ns, 0, inputErr("pid %d: no such process; want the pid of the container's init, which runs while createRuntime and prestart hooks do", pid)
		}
		if errors.Is(err, os.ErrPermission) {
			return ns, 0, inputErr("pid %d: its network namespace cannot be opened (%v); want the pid of a container's init", pid, err)
		}
		return ns, 0, fmt.Errorf("open network namespace of pid %d: %w", pid, err)
	}
	ino, err := fdInode(int(ns))
	if err != nil {
		ns.Close()
		return ns, 0, fmt.Errorf("network namespace of pid %d: %w", pid, err)
	}
	for _, other := range []struct{ who, path string }{
		{"the hook's own", "/proc/self/ns/net"},
		{"PID 1's", "/proc/1/ns/net"},
	} {
		if o, err := pathInode(other.path); err == nil && o == ino {
			ns.Close()
			return ns, 0, inputErr("pid %d is in %s network namespace; refusing to touch it (give the container a network namespace of its own in config.json)", pid, other.who)
		}
	}
	return ns, ino, nil
}

func (procs) PathInode(path string) (uint64, error) { return pathInode(path) }

func (procs) NetnsAt(path string) (netns.NsHandle, uint64, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return ns, 0, fmt.Errorf("%w: %s: %v", ErrNetns, path, err)
	}
	ino, err := fdInode(int(ns))
	if err == nil && !isNetns(int(ns)) {
		err = fmt.Errorf("%w: %s", ErrNetns, path)
	}
	if own, oerr := pathInode("/proc/self/ns/net"); err == nil && oerr == nil && own == ino {
		err = inputErr("%s is the plugin's own network namespace; refusing to touch it", path)
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
