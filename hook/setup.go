package hook

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netns"

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
// its firewall rules if missing, and a veth pair into the container. If any
// step fails, the steps before it are undone.
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
	tm.step("open store")

	var undo undoStack
	defer func() {
		if err != nil {
			if uerr := undo.run(); uerr != nil {
				err = fmt.Errorf("%w (and undoing it: %v)", err, uerr)
			}
		}
	}()

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
			if _, err := bridge.Detach(old.Veth, alias(old.ID)); err != nil {
				return err
			}
			if err := tx.Remove(old); err != nil {
				return err
			}
		}
		want := ipam.Lease{
			ID: st.ID, PID: st.Pid, NetnsInode: ino,
			Veth: vethName(st.Pid), Iface: c.Iface,
		}
		l, err := tx.Allocate(want)
		if errors.Is(err, ipam.ErrExhausted) {
			// Containers that died without a poststop still hold leases.
			if _, rerr := c.reclaim(tx); rerr != nil {
				return fmt.Errorf("%w (and reclaiming stale leases: %v)", err, rerr)
			}
			l, err = tx.Allocate(want)
		}
		if err != nil {
			return err
		}
		tm.step("allocate " + l.IP.String())
		res = Result{Lease: l, Found: true}
		var created bool
		undo.push(func() error {
			return store.Do(func(tx *ipam.Tx) error {
				if _, _, err := tx.Release(st.ID); err != nil {
					return err
				}
				if created {
					return c.removeIfUnused(tx)
				}
				return nil
			})
		})
		br, created, err = c.ensureNetwork(tx)
		tm.step("ensure bridge and firewall")
		return err
	})
	if err != nil || res.Reused {
		return res, err
	}

	mtu := c.MTU
	if mtu == 0 {
		mtu = br.MTU
	}
	err = bridge.Attach(br, ns, bridge.Endpoint{
		Host:    res.Lease.Veth,
		Alias:   alias(st.ID),
		Iface:   c.Iface,
		Addr:    c.prefix(res.Lease.IP),
		Gateway: c.Subnet.Addr().Next(),
		MTU:     mtu,
	})
	tm.step("attach veth")
	return res, err
}

// ensureNetwork makes sure the bridge exists with its address and its
// firewall rules are in place. What was verified for this very bridge (same
// ifindex, recorded in the store) is trusted, so a warm setup makes one
// netlink call and runs no iptables at all; after a firewall reload, run
// `bridgehook repair`. It runs under the store's lock, so one hook per
// network creates the bridge and installs its rules.
func (c Config) ensureNetwork(tx *ipam.Tx) (br bridge.Bridge, created bool, err error) {
	rec, recorded, err := tx.Network()
	if err != nil {
		return br, false, err
	}
	if recorded {
		if br, ok := bridge.Find(c.Bridge); ok && br.Index == rec.BridgeIndex {
			return br, false, nat.EnableForwarding()
		}
	}
	br, created, err = bridge.Ensure(c.Bridge, c.gateway(), c.MTU)
	if err != nil {
		return br, false, err
	}
	defer func() {
		if err != nil && created {
			bridge.Remove(c.Bridge)
			created = false
		}
	}()
	if err := c.installFirewall(); err != nil {
		return br, created, err
	}
	return br, created, tx.SetNetwork(c.record(br))
}

// record is what the store keeps of a verified network.
func (c Config) record(br bridge.Bridge) ipam.Network {
	return ipam.Network{
		Bridge: c.Bridge, Subnet: c.Subnet, Gateway: c.Subnet.Addr().Next(),
		MTU: br.MTU, BridgeIndex: br.Index,
	}
}

// installFirewall installs the network's rules under a lock of the whole
// state directory: networks share the built-in chains their jumps go in.
func (c Config) installFirewall() error {
	unlock, err := c.lockFirewall()
	if err != nil {
		return err
	}
	defer unlock()
	if err := nat.EnableForwarding(); err != nil {
		return err
	}
	return nat.New(c.runner()).Install(c.network())
}

// removeIfUnused removes the network's bridge and rules when no lease is
// left: the undo of a setup that created them, which must not pull the
// bridge from under a container that joined it meanwhile.
func (c Config) removeIfUnused(tx *ipam.Tx) error {
	ls, bad, err := tx.List()
	if err != nil || len(ls)+len(bad) > 0 {
		return err
	}
	if err := c.uninstallFirewall(); err != nil {
		return err
	}
	return bridge.Remove(c.Bridge)
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
		if _, err := bridge.Detach(l.Veth, alias(id)); err != nil {
			return err
		}
		tm.step("detach veth")
		if _, _, err := tx.Release(id); err != nil {
			return err
		}
		tm.step("release")
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
	sum := sha256.Sum256([]byte(id))
	return "bridgehook:sha256:" + hex.EncodeToString(sum[:])
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
	store, err := ipam.Open(c.StateDir, c.Bridge, c.Subnet)
	if err != nil {
		return err
	}
	return store.Do(func(tx *ipam.Tx) error {
		br, _, err := bridge.Ensure(c.Bridge, c.gateway(), c.MTU)
		if err != nil {
			return err
		}
		if err := c.installFirewall(); err != nil {
			return err
		}
		return tx.SetNetwork(c.record(br))
	})
}
