package hook

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/nat"
	"github.com/gofrs/flock"
)

// Result is what a setup or teardown did, for the log.
type Result struct {
	Lease ipam.Lease
	// Found is false for a teardown of an id with no lease.
	Found bool
	// Reused is true for a setup of a container that was already wired.
	Reused bool
}

// Setup wires the container of st into network c: a lease, the bridge and
// its firewall rules if missing, a veth pair into the container, its
// published ports. If any step fails, the steps before it are undone.
func Setup(c Config, st specs.State) (res Result, err error) {
	if err := c.Check(); err != nil {
		return res, err
	}
	if err := CheckID(st.ID); err != nil {
		return res, err
	}
	if err := CheckPID(st); err != nil {
		return res, err
	}
	req, err := c.requestOf(st)
	if err != nil {
		return res, err
	}
	c, disconnect, err := c.connect()
	if err != nil {
		return res, err
	}
	defer disconnect()
	tm := c.timer()
	ns, ino, err := openNetns(st.Pid)
	if err != nil {
		return res, err
	}
	defer ns.Close()
	tm.step("open netns")
	store, err := ipam.Open(c.StateDir, c.Bridge, c.Subnet)
	if err != nil {
		return res, err
	}
	store.Free = c.freeDrained
	// Until this process exits or closes the store, gc sees the lease
	// it allocates as a setup in progress (see ipam.Tx.Pending).
	defer store.Close()
	tm.step("open store")
	unlockPorts := func() {}
	if len(req.ports) > 0 {
		// Held from the check of the host ports until the lease that
		// claims them is written: see checkPorts.
		if unlockPorts, err = lockPorts(c.StateDir); err != nil {
			return res, err
		}
	}

	var undo undoStack
	defer func() {
		if err != nil {
			if uerr := undo.run(); uerr != nil {
				err = fmt.Errorf("%w (and undoing it: %v)", err, uerr)
			}
		}
	}()
	locked := func(fn func(*ipam.Tx) error) func() error {
		return func() error { return store.Do(fn) }
	}

	var br bridge.Bridge
	err = store.Do(func(tx *ipam.Tx) error {
		old, ok, err := tx.Lookup(st.ID)
		if err != nil {
			return err
		}
		if ok {
			if old.NetnsInode == ino && bridge.Present(ns, old.Iface, c.prefix(old.IP)) {
				res = Result{Lease: old, Found: true, Reused: true}
				return nil
			}
			if old.NetnsInode != ino && alive(old) {
				return inputErr("container id %q already holds %s for a live network namespace (pid %d); container ids must be unique per network", st.ID, old.IP, old.PID)
			}
			// A setup that failed half-way, or an id whose container died
			// without a teardown: start afresh.
			if err := c.forget(tx, old); err != nil {
				return err
			}
		}
		if err := c.checkPorts(tx, st.ID, req.ports); err != nil {
			return err
		}
		failpoint("ports-checked")
		l, err := c.allocate(tx, ipam.Lease{
			ID: st.ID, IP: req.ip, PID: st.Pid, NetnsInode: ino,
			Veth: c.vethName(st.Pid), Iface: c.Iface, Ports: portStrings(req.ports),
		})
		if err != nil {
			return err
		}
		tm.step("allocate " + l.IP.String())
		res = Result{Lease: l, Found: true}
		var created bool
		undo.push(locked(func(tx *ipam.Tx) error {
			if _, _, err := tx.Release(st.ID); err != nil {
				return err
			}
			if created {
				return c.removeIfUnused(tx)
			}
			return nil
		}))
		var installed bool
		br, created, installed, err = c.ensureNetwork(tx)
		tm.step("ensure bridge and firewall")
		if err != nil || len(req.ports) == 0 || installed {
			return err // a fresh install carried this lease's ports already
		}
		pub := nat.Published{ID: st.ID, IP: l.IP, Ports: req.ports}
		if err := nat.New(c.runner()).Publish(c.network(), pub); err != nil {
			return err
		}
		undo.push(locked(func(*ipam.Tx) error { return nat.New(c.runner()).Unpublish(c.network(), pub) }))
		tm.step("publish ports")
		return nil
	})
	unlockPorts()
	if err != nil || res.Reused {
		return res, err
	}
	failpoint("leased")

	mtu := c.MTU
	if mtu == 0 {
		mtu = br.MTU
	}
	ep := bridge.Endpoint{
		Host:     res.Lease.Veth,
		Alias:    alias(st.ID),
		Iface:    c.Iface,
		Addr:     c.prefix(res.Lease.IP),
		MTU:      mtu,
		Hairpin:  len(req.ports) > 0,
		Isolated: !c.ICC,
	}
	if c.DefaultRoute {
		ep.Gateway = c.Subnet.Addr().Next()
	}
	err = c.host.Attach(br, ns, ep)
	if errors.Is(err, unix.EEXIST) {
		// The veth's name, or the container's interface, may still be
		// held by the pair of a container that is gone (a reused pid, or
		// a namespace that outlives its containers): delete those, and
		// try once more.
		if serr := store.Do(func(tx *ipam.Tx) error { _, err := c.settle(tx, true); return err }); serr != nil {
			return res, fmt.Errorf("%w (and clearing veths of gone containers: %v)", err, serr)
		}
		err = c.host.Attach(br, ns, ep)
	}
	if err != nil {
		return res, err
	}
	tm.step("attach veth")
	if len(c.DNS) > 0 || c.HostDNS {
		undo.push(func() error { return c.host.Detach(ep.Host, ep.Alias) })
		err = c.writeResolvConf(req.rootfs)
		tm.step("write resolv.conf")
	}
	return res, err
}

// allocate leases an address, reclaiming the leases of dead containers
// before it declares the subnet exhausted.
func (c Config) allocate(tx *ipam.Tx, want ipam.Lease) (ipam.Lease, error) {
	l, err := tx.Allocate(want)
	if errors.Is(err, ipam.ErrExhausted) {
		// Containers that died without a poststop still hold leases.
		if _, rerr := c.reclaim(tx); rerr != nil {
			return l, fmt.Errorf("%w (and reclaiming stale leases: %v)", err, rerr)
		}
		l, err = tx.Allocate(want)
	}
	if err != nil && want.IP.IsValid() && !errors.Is(err, ipam.ErrExhausted) {
		return l, inputErr("annotation %s: %v", AnnotationIP, err)
	}
	return l, err
}

// checkPorts refuses host ports that a live container already publishes,
// on this network or another; a dead container's claim is reclaimed.
//
// The caller holds the ports lock (lockPorts) from this check until the
// lease that claims ports is written, so two setups cannot both find a
// port free. That makes reading other networks' stores under their locks
// safe: the ports lock is always taken first, by one hook at a time, and a
// hook that holds a store's lock without it never waits for another store.
func (c Config) checkPorts(tx *ipam.Tx, id string, ports []nat.Port) error {
	if len(ports) == 0 {
		return nil
	}
	if err := c.releasePorts(tx, id, ports, true); err != nil {
		return err
	}
	others, err := ipam.Stores(c.StateDir)
	if err != nil {
		return err
	}
	for _, s := range others {
		if s.Bridge() == c.Bridge && s.Subnet() == c.Subnet {
			continue
		}
		nc := c
		nc.Bridge, nc.Subnet = s.Bridge(), s.Subnet()
		nc.ICC, nc.Internal = true, false // of no matter to port rules
		if err := s.Do(func(tx *ipam.Tx) error { return nc.releasePorts(tx, id, ports, false) }); err != nil {
			return err
		}
	}
	return nil
}

// releasePorts fails if a live container of tx's network publishes one of
// ports, and forgets the dead ones that do. An id's own lease on its own
// network is no clash: it is being set up again.
func (c Config) releasePorts(tx *ipam.Tx, id string, ports []nat.Port, own bool) error {
	leases, _, err := tx.List()
	if err != nil {
		return err
	}
	for _, l := range leases {
		if l.ID == id && own {
			continue
		}
		clash := ""
		for _, s := range l.Ports {
			theirs, err := nat.ParsePorts(s)
			if err != nil {
				continue
			}
			for _, p := range ports {
				if p.Overlaps(theirs[0]) && clash == "" {
					clash = p.String()
				}
			}
		}
		if clash == "" {
			continue
		}
		if alive(l) {
			return inputErr("host port %s is already published by container %s (%s on %s); choose another host port",
				clash, l.ID, l.IP, l.Veth)
		}
		if err := c.forget(tx, l); err != nil {
			return err
		}
	}
	return nil
}

// lockPorts serialises the claims of host ports across every network
// under stateDir.
func lockPorts(stateDir string) (unlock func(), err error) {
	lock := flock.New(filepath.Join(stateDir, "ports.lock"))
	if err := lock.Lock(); err != nil {
		return nil, fmt.Errorf("lock host ports: %w", err)
	}
	return func() { lock.Unlock() }, nil
}

// forget undoes a lease's setup from what the lease records: the veth, the
// port rules, the address. The veth of a container that is gone is left
// to the kernel, which deletes the pair with the container's namespace
// (deleting it ourselves would wait 15-30 ms for that same cleanup); until
// it is gone its address is drained, not released, so that no other
// container gets it meanwhile.
func (c Config) forget(tx *ipam.Tx, l ipam.Lease) error {
	state := bridge.Gone
	if alive(l) {
		if err := c.host.Detach(l.Veth, alias(l.ID)); err != nil {
			return err
		}
	} else {
		var err error
		if state, err = c.host.State(l.Veth, alias(l.ID)); err != nil {
			return err
		}
	}
	if len(l.Ports) > 0 {
		pub, err := published(l.ID, l.IP, l.Ports)
		if err != nil {
			return err
		}
		if err := nat.New(c.runner()).Unpublish(c.network(), pub); err != nil {
			return err
		}
	}
	if state != bridge.Gone {
		return tx.Drain(l)
	}
	return tx.Remove(l)
}

// freeDrained is the store's Free: a drained address may be leased again
// once its veth is gone, deleted now if need be (its namespace still dying,
// or kept alive by something else than the container, such as a bind
// mount).
func (c Config) freeDrained(l ipam.Lease) bool {
	return c.host.Detach(l.Veth, alias(l.ID)) == nil
}

// settle frees the drained addresses whose veths are gone, deleting those
// still there whose namespace lives on; with all, it deletes the dying ones
// too rather than leave them to the kernel.
func (c Config) settle(tx *ipam.Tx, all bool) (int, error) {
	drained, err := tx.Draining()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range drained {
		state, err := c.host.State(l.Veth, alias(l.ID))
		if err != nil {
			return n, err
		}
		if state == bridge.Dying && !all {
			continue
		}
		if state != bridge.Gone {
			if err := c.host.Detach(l.Veth, alias(l.ID)); err != nil {
				return n, err
			}
		}
		if err := tx.Settle(l); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// ensureNetwork makes sure the bridge exists with its address and its
// firewall rules are in place. What was verified for this very bridge (same
// ifindex, same options, recorded in the store) is trusted, so a warm setup
// makes one netlink call and runs no iptables at all; after a firewall
// reload, run `bridgehook repair`. It runs under the store's lock, so one
// hook per network creates the bridge and installs its rules. installed
// says whether it (re)installed the rules, with every lease's ports.
func (c Config) ensureNetwork(tx *ipam.Tx) (br bridge.Bridge, created, installed bool, err error) {
	rec, recorded, err := tx.Network()
	if err != nil {
		return br, false, false, err
	}
	// A setup with other options than the record's re-installs the rules.
	if recorded && rec.ICC == c.ICC && rec.Internal == c.Internal {
		if br, ok := c.host.Find(c.Bridge); ok && br.Index == rec.BridgeIndex {
			return br, false, false, nat.EnableForwarding()
		}
	}
	br, created, err = c.host.Ensure(c.Bridge, c.gateway(), c.MTU)
	if err != nil {
		return br, false, false, err
	}
	defer func() {
		if err != nil && created {
			tx.ClearNetwork()
			c.uninstallFirewall()
			c.host.Remove(c.Bridge)
			created = false
		}
	}()
	if err := c.installFirewall(tx); err != nil {
		return br, created, false, err
	}
	return br, created, true, tx.SetNetwork(c.record(br))
}

// record is what the store keeps of a verified network.
func (c Config) record(br bridge.Bridge) ipam.Network {
	return ipam.Network{
		Bridge: c.Bridge, Subnet: c.Subnet, Gateway: c.Subnet.Addr().Next(),
		MTU: br.MTU, BridgeIndex: br.Index, ICC: c.ICC, Internal: c.Internal,
	}
}

// installFirewall installs the network's rules, with the ports of every
// lease in tx, under a lock of the whole state directory: networks share
// the built-in chains their jumps go in.
func (c Config) installFirewall(tx *ipam.Tx) error {
	leases, _, err := tx.List()
	if err != nil {
		return err
	}
	var pubs []nat.Published
	for _, l := range leases {
		if len(l.Ports) > 0 {
			pub, err := published(l.ID, l.IP, l.Ports)
			if err != nil {
				return err
			}
			pubs = append(pubs, pub)
		}
	}
	unlock, err := c.lockFirewall()
	if err != nil {
		return err
	}
	defer unlock()
	if err := nat.EnableForwarding(); err != nil {
		return err
	}
	if err := nat.EnableLocalnet(c.Bridge); err != nil {
		return err
	}
	return nat.New(c.runner()).Install(c.network(), pubs)
}

// removeIfUnused removes the network's bridge and rules when no lease is
// left: the undo of a setup that created them, which must not pull the
// bridge from under a container that joined it meanwhile.
func (c Config) removeIfUnused(tx *ipam.Tx) error {
	ls, bad, err := tx.List()
	if err != nil || len(ls)+len(bad) > 0 {
		return err
	}
	if err := tx.ClearNetwork(); err != nil {
		return err
	}
	if err := c.uninstallFirewall(); err != nil {
		return err
	}
	return c.host.Remove(c.Bridge)
}

// lockFirewall serialises firewall changes across networks and hooks.
func (c Config) lockFirewall() (unlock func(), err error) {
	lock := flock.New(filepath.Join(c.StateDir, "iptables.lock"))
	if err := lock.Lock(); err != nil {
		return nil, fmt.Errorf("lock firewall: %w", err)
	}
	return func() { lock.Unlock() }, nil
}

func (c Config) runner() nat.Runner {
	if c.Firewall != nil {
		return c.Firewall
	}
	return &nat.IPTables{}
}

func (c Config) prefix(ip netip.Addr) netip.Prefix { return netip.PrefixFrom(ip, c.Subnet.Bits()) }

// Teardown undoes the setup of container id, found again from its lease:
// the host veth goes (taking the container's end with it) and the address
// is released. An id with no lease is not an error: poststop also runs after
// a failed create, and may run twice.
func Teardown(c Config, id string) (res Result, err error) {
	if err := c.Check(); err != nil {
		return res, err
	}
	if err := CheckID(id); err != nil {
		return res, err
	}
	store, err := ipam.Open(c.StateDir, c.Bridge, c.Subnet)
	if err != nil {
		return res, err
	}
	tm := c.timer()
	err = store.Do(func(tx *ipam.Tx) error {
		l, ok, err := tx.Lookup(id)
		if err != nil || !ok {
			return err
		}
		tm.step("lookup")
		c, disconnect, err := c.connect()
		if err != nil {
			return err
		}
		defer disconnect()
		if err := c.forget(tx, l); err != nil {
			return err
		}
		tm.step("detach, unpublish, release")
		res = Result{Lease: l, Found: true}
		return nil
	})
	return res, err
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

// openNetns opens the network namespace of pid and returns it with its
// inode, refusing the namespaces that are not a container's.
func openNetns(pid int) (netns.NsHandle, uint64, error) {
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
	if err == nil {
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
	ns.Close()
	return ns, 0, fmt.Errorf("network namespace of pid %d: %w", pid, err)
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

// alive reports whether the lease's container still runs: its pid exists
// and is in the namespace the lease was made for, not a reuse of the pid.
func alive(l ipam.Lease) bool {
	ino, err := pathInode(fmt.Sprintf("/proc/%d/ns/net", l.PID))
	return err == nil && ino == l.NetnsInode
}

// undoStack holds the undo of each step done so far.
type undoStack []func() error

func (u *undoStack) push(f func() error) { *u = append(*u, f) }

// run undoes in reverse order, carrying on past failures so that as much as
// possible is undone, and returns the first failure.
func (u *undoStack) run() error {
	var first error
	for i := len(*u) - 1; i >= 0; i-- {
		if err := (*u)[i](); err != nil && first == nil {
			first = err
		}
	}
	*u = nil
	return first
}

// Repair re-creates what the network needs and re-installs its firewall
// rules: for after a firewall reload (firewalld, iptables-restore, a flush)
// removed them, which warm setups do not check.
func Repair(c Config) error {
	if err := c.Check(); err != nil {
		return err
	}
	c, disconnect, err := c.connect()
	if err != nil {
		return err
	}
	defer disconnect()
	store, err := ipam.Open(c.StateDir, c.Bridge, c.Subnet)
	if err != nil {
		return err
	}
	return store.Do(func(tx *ipam.Tx) error {
		br, _, err := c.host.Ensure(c.Bridge, c.gateway(), c.MTU)
		if err != nil {
			return err
		}
		if err := c.installFirewall(tx); err != nil {
			return err
		}
		return tx.SetNetwork(c.record(br))
	})
}

// failpoint stops the hook at the point called name when the environment
// asks for it, so that tests can hit a moment exactly:
// BRIDGEHOOK_FAILPOINT=name parks the hook there (it says so on stderr
// and waits to be killed, as by a runtime's timeout or the OOM killer);
// BRIDGEHOOK_FAILPOINT=name:DURATION pauses it there, widening a race.
func failpoint(name string) {
	fp := os.Getenv("BRIDGEHOOK_FAILPOINT")
	if fp == "" {
		return
	}
	at, pause, _ := strings.Cut(fp, ":")
	if at != name {
		return
	}
	if d, err := time.ParseDuration(pause); err == nil {
		time.Sleep(d)
		return
	}
	fmt.Fprintf(os.Stderr, "bridgehook: failpoint %s\n", name)
	for {
		time.Sleep(time.Hour)
	}
}
