package hook

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/nat"
	"github.com/bridgehook/bridgehook/port"
	"github.com/gofrs/flock"
	"github.com/vishvananda/netns"
)

// A container's lease and the host ports it claims: how an address is
// chosen for it, refused to it, reclaimed from containers that are gone,
// and given back.

// claim leases an address to the container, with the host ports it asks
// for: a second setup of a container that is wired already is a no-op
// (Reused), an id held for a live namespace is refused, and what a dead
// or half-set-up holder of the id left is undone first. Its undo withdraws
// the ports and releases the lease.
func (n *Network) claim(tx ipam.Tx, req Request, ns netns.NsHandle, ino uint64) (Result, func() error, error) {
	old, ok, err := tx.Lookup(req.ID)
	if err != nil {
		return Result{}, nil, hint(err)
	}
	if ok {
		if old.NetnsInode == ino && n.host.Present(ns, old.Iface, n.prefixes(old)) {
			return Result{Lease: old, Found: true, Reused: true}, nil, nil
		}
		if old.NetnsInode != ino && n.alive(old) {
			return Result{}, nil, inputErr("container id %q already holds %s for a live network namespace (%s); container ids must be unique per network", req.ID, old.IP, NetnsOf(old))
		}
		// A setup that failed half-way, or an id whose container died
		// without a teardown: start afresh.
		if err := n.forget(tx, old); err != nil {
			return Result{}, nil, err
		}
	}
	if err := n.checkPorts(tx, req.ID, req.Ports); err != nil {
		return Result{}, nil, err
	}
	if err := n.checkHostPorts(req.Ports); err != nil {
		return Result{}, nil, err
	}
	failpoint("ports-checked")
	l, err := n.allocate(tx, ipam.Lease{
		ID: req.ID, IP: req.IP, IP6: req.IP6, PID: req.Netns.PID, Netns: req.Netns.Path, NetnsInode: ino,
		Veth: n.vethFor(req), Iface: n.Iface, Ports: req.Ports, MAC: req.MAC,
		Names: req.Names,
	})
	if err != nil {
		return Result{}, nil, err
	}
	res := Result{Lease: l, Found: true}
	release := func(tx ipam.Tx) error { _, _, err := tx.Release(req.ID); return err }
	if len(req.Ports) == 0 {
		return res, func() error { return n.store.Do(release) }, nil
	}
	pub := published(l)
	withdraw := func() error {
		return n.store.Do(func(tx ipam.Tx) error {
			return errors.Join(n.fw.Unpublish(n.natNetwork(), pub), release(tx))
		})
	}
	if err := n.fw.Publish(n.natNetwork(), pub); err != nil {
		return res, func() error { return n.store.Do(release) }, err
	}
	return res, withdraw, nil
}

// allocate leases an address. A subnet that seems full first gets back
// what containers that are gone still hold, and a drained address asked
// for by name is settled if its veth is gone: both need the kernel's word,
// so both run here, under the lock, rather than in the store.
func (n *Network) allocate(tx ipam.Tx, want ipam.Lease) (ipam.Lease, error) {
	l, err := tx.Allocate(want)
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		if _, rerr := n.reclaim(tx); rerr != nil {
			return l, fmt.Errorf("%w (and reclaiming stale leases: %v)", err, rerr)
		}
		if _, serr := n.settle(tx, true); serr != nil {
			return l, fmt.Errorf("%w (and freeing drained addresses: %v)", err, serr)
		}
		l, err = tx.Allocate(want)
	case errors.Is(err, ipam.ErrTaken):
		if _, serr := n.settle(tx, false); serr != nil {
			return l, fmt.Errorf("%w (and freeing drained addresses: %v)", err, serr)
		}
		l, err = tx.Allocate(want)
	}
	if ae := (*ipam.AddrError)(nil); errors.As(err, &ae) {
		f := input.IP
		if ae.Addr.Is6() {
			f = input.IP6
		}
		return l, input.Errorf(f, ": %v", err)
	}
	return l, hint(err)
}

// checkPorts refuses host ports that a live container already publishes,
// on this network or another; a dead container's claim is reclaimed. It
// reads the store's index of claims for the ports asked for, and the
// leases it names: the same cost at ten leases and at sixty thousand.
//
// The caller holds the ports lock (lockPorts) from this check until the
// lease that claims ports is written, so two setups cannot both find a
// port free. That makes reading other networks' stores under their locks
// safe: the ports lock is always taken first, by one hook at a time, and a
// hook that holds a store's lock without it never waits for another store.
func (n *Network) checkPorts(tx ipam.Tx, id string, ports []port.Mapping) error {
	if len(ports) == 0 {
		return nil
	}
	claims, err := n.claims(ports)
	if err != nil {
		return err
	}
	for _, c := range claims {
		if c.Bridge == n.Bridge && slices.Equal(c.Subnets, n.Subnets) {
			if err := n.releasePorts(tx, id, ports, true, c.IPs); err != nil {
				return err
			}
			continue
		}
		if !n.opener.Exists(n.StateDir, c.Bridge, c.Subnets...) {
			continue // a claim left by a network since removed
		}
		s, err := n.opener.Open(n.StateDir, c.Bridge, c.Subnets...)
		if err != nil {
			return err
		}
		o := n.on(s)
		err = s.Do(func(tx ipam.Tx) error {
			o.adopt(tx)
			return o.releasePorts(tx, id, ports, false, c.IPs)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// storeClaims are the leases of one network that claim ports.
type storeClaims struct {
	Bridge  string
	Subnets []netip.Prefix
	IPs     []netip.Addr
}

// claims lists, by network, the leases the index says claim one of ports.
func (n *Network) claims(ports []port.Mapping) ([]storeClaims, error) {
	var out []storeClaims
	for _, m := range ports {
		for p := uint32(m.HostPort); p <= uint32(m.HostEnd); p++ {
			cs, err := n.opener.Claims(n.StateDir, m.Proto, uint16(p))
			if err != nil {
				return nil, err
			}
			for _, c := range cs {
				if !c.Mapping.Overlaps(m) {
					continue
				}
				i := slices.IndexFunc(out, func(s storeClaims) bool { return s.Bridge == c.Bridge && slices.Equal(s.Subnets, c.Subnets) })
				if i < 0 {
					out = append(out, storeClaims{Bridge: c.Bridge, Subnets: c.Subnets})
					i = len(out) - 1
				}
				if !slices.Contains(out[i].IPs, c.IP) {
					out[i].IPs = append(out[i].IPs, c.IP)
				}
			}
		}
	}
	return out, nil
}

// checkHostPorts refuses host ports that a process on the host holds, on
// the address asked for or, with none, on any address of each of the
// network's families, for every port of a range: published, the port
// would take that service's traffic. It holds no port once it returns (see
// the README on services that start later).
func (n *Network) checkHostPorts(ports []port.Mapping) error {
	for _, m := range ports {
		addrs := []netip.Addr{m.HostIP}
		if !m.HostIP.IsValid() {
			addrs = nil
			for _, p := range n.Subnets {
				if p.Addr().Is4() {
					addrs = append(addrs, netip.IPv4Unspecified())
				} else {
					addrs = append(addrs, netip.IPv6Unspecified())
				}
			}
		}
		for _, addr := range addrs {
			for p := uint32(m.HostPort); p <= uint32(m.HostEnd); p++ {
				inUse, err := n.sys.PortInUse(m.Proto, addr, uint16(p))
				if err != nil {
					return err
				}
				if inUse {
					return input.Errorf(input.Ports, ": host port %d/%s on %s is in use by a process on the host; choose another host port, or publish on another host address",
						p, m.Proto, hostAddrName(addr))
				}
			}
		}
	}
	return nil
}

// hostAddrName names a host address for a person: the unspecified ones
// stand for every address of their family.
func hostAddrName(addr netip.Addr) string {
	if addr.IsUnspecified() {
		return addr.String() + " (every address)"
	}
	return addr.String()
}

// releasePorts fails if a live container of tx's network, among the
// leases of ips, publishes one of ports, and forgets the dead ones that
// do. An id's own lease on its own network is no clash: it is being set
// up again. A lease no longer there, or claiming other ports now, is a
// stale claim of the index, and no clash.
func (n *Network) releasePorts(tx ipam.Tx, id string, ports []port.Mapping, own bool, ips []netip.Addr) error {
	for _, ip := range ips {
		l, ok, err := tx.Lease(ip)
		if err != nil {
			return err
		}
		if !ok || l.ID == id && own {
			continue
		}
		clash := ""
		for _, theirs := range l.Ports {
			for _, p := range ports {
				if p.Overlaps(theirs) && clash == "" {
					clash = p.String()
				}
			}
		}
		if clash == "" {
			continue
		}
		if n.alive(l) {
			return inputErr("host port %s is already published by container %s (%s on %s); choose another host port",
				clash, l.ID, l.IP, l.Veth)
		}
		if err := n.forget(tx, l); err != nil {
			return err
		}
	}
	return nil
}

// lockPorts serialises the claims of host ports across every network
// under stateDir: a setup that publishes ports holds it from the check of
// the host ports until the lease that claims them is written (see
// checkPorts). A setup that publishes none takes no lock.
func lockPorts(stateDir string, ports []port.Mapping) (unlock func(), err error) {
	if len(ports) == 0 {
		return func() {}, nil
	}
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
func (n *Network) forget(tx ipam.Tx, l ipam.Lease) error {
	state := bridge.Gone
	if n.alive(l) {
		if err := n.host.Detach(l.Veth, alias(l.ID)); err != nil {
			return err
		}
	} else {
		var err error
		if state, err = n.host.State(l.Veth, alias(l.ID)); err != nil {
			return err
		}
	}
	if n.SpoofCheck {
		if err := n.guard.Forbid(n.Bridge, senderOf(l)); err != nil {
			return err
		}
	}
	if len(l.Ports) > 0 {
		n.adoptFirewall(tx)
		if err := n.fw.Unpublish(n.natNetwork(), published(l)); err != nil {
			return err
		}
	}
	if state != bridge.Gone {
		return tx.Drain(l)
	}
	return tx.Remove(l)
}

// settle frees the drained addresses whose veths are gone, deleting those
// still there whose namespace lives on; with all, it deletes the dying ones
// too rather than leave them to the kernel.
func (n *Network) settle(tx ipam.Tx, all bool) (int, error) {
	drained, err := tx.Draining()
	if err != nil {
		return 0, err
	}
	settled := 0
	for _, l := range drained {
		state, err := n.host.State(l.Veth, alias(l.ID))
		if err != nil {
			return settled, err
		}
		if state == bridge.Dying && !all {
			continue
		}
		if state != bridge.Gone {
			if err := n.host.Detach(l.Veth, alias(l.ID)); err != nil {
				return settled, err
			}
		}
		if err := tx.Settle(l); err != nil {
			return settled, err
		}
		settled++
	}
	return settled, nil
}

// reclaim releases the leases whose container is gone, and those of live
// containers whose setup died before it wired them (killed between the
// lease and the veth): no interface, and no process holding the lease
// (ipam.Tx.Pending). Setup runs it before declaring the subnet exhausted.
func (n *Network) reclaim(tx ipam.Tx) ([]string, error) {
	leases, _, err := tx.List()
	if err != nil {
		return nil, err
	}
	var report []string
	for _, l := range leases {
		why := fmt.Sprintf("pid %d is gone or in another namespace", l.PID)
		if n.alive(l) {
			// Pending first: a setup that finishes between the two checks
			// has its veth by the time it lets go of the lease.
			if tx.Pending(l) {
				continue
			}
			state, err := n.host.State(l.Veth, alias(l.ID))
			if err != nil {
				return report, err
			}
			if state != bridge.Gone {
				continue
			}
			why = fmt.Sprintf("its setup died before pid %d got its veth", l.PID)
		}
		if err := n.forget(tx, l); err != nil {
			return report, err
		}
		report = append(report, fmt.Sprintf("%s: reclaimed %s from %s (%s)", n.Bridge, l.IP, l.ID, why))
	}
	return report, nil
}

// published is what nat needs to add or remove a lease's port rules.
func published(l ipam.Lease) nat.Published {
	return nat.Published{ID: l.ID, IP: l.IP, IP6: l.IP6, Ports: l.Ports}
}
