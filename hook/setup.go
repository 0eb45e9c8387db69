package hook

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
)

// Result is what a setup or teardown did, for the log and the faces'
// answers.
type Result struct {
	Lease ipam.Lease
	// Found is false for a teardown of an id with no lease.
	Found bool
	// Reused is true for a setup of a container that was already wired.
	Reused bool
	// RulesRestored is true for a setup that found its network's rules
	// gone (a firewall reload took them) and installed them again.
	RulesRestored bool
}

// Setup wires the container of req into the network, one step after the
// other. Each step returns its undo as soon as it has changed anything,
// and when a step fails the undos run in reverse, so a failed setup leaves
// nothing behind; an undo that fails is reported in the error.
func (n *Network) Setup(req Request) (res Result, err error) {
	tm := n.timer()
	if err := req.Check(n.Config); err != nil {
		return res, err
	}
	ns, ino, err := n.openNetns(req.Netns)
	if err != nil {
		return res, err
	}
	defer ns.Close()
	tm.step("open netns")

	var undo undoStack
	defer func() { err = undo.onError(err) }()

	br, res, err := n.admit(req, ns, ino, &undo, tm)
	if err != nil || res.Reused {
		return res, err
	}
	failpoint("leased")

	// 4. The spoof check knows the veth before the veth exists, so its
	// first frame is checked.
	u, err := n.allow(res.Lease)
	undo.push(u)
	if err != nil {
		return res, err
	}
	tm.step("spoof check")

	// 5. The veth pair, and the container's side of it.
	u, err = n.attach(br, ns, res.Lease, req.MAC, len(req.Ports) > 0)
	undo.push(u)
	if err != nil {
		return res, err
	}
	tm.step("attach veth")
	n.leaveFresh(len(req.Ports) > 0)

	// 6. resolv.conf, if the network gives name servers and the face a
	// root to write it in (a CNI runtime writes it from the result).
	if n.writesResolvConf() && req.Rootfs != "" {
		err = n.writeResolvConf(req.Rootfs)
		tm.step("write resolv.conf")
	}
	return res, err
}

// admit runs the steps that hold the store's lock together: a container
// has its lease by the time another hook can find the network without one
// and take it down (the undo of a failed cold setup, network rm), or the
// name server can find it with no container and end.
func (n *Network) admit(req Request, ns netns.NsHandle, ino uint64, undo *undoStack, tm *timer) (br bridge.Bridge, res Result, err error) {
	unlockPorts, err := lockPorts(n.StateDir, req.Ports)
	if err != nil {
		return br, res, err
	}
	defer unlockPorts()
	var restored bool
	err = n.store.Do(func(tx ipam.Tx) error {
		// 1. The bridge and its firewall rules, unless recorded as in place.
		b, r, u, err := n.ensureNetwork(tx)
		undo.push(u)
		if err != nil {
			return err
		}
		br, restored = b, r
		tm.step("ensure bridge and firewall")

		// 2. The lease, and the host ports it claims.
		res, u, err = n.claim(tx, req, ns, ino)
		undo.push(u)
		if err != nil || !n.Names {
			return err
		}
		tm.step("lease " + res.Lease.IP.String())

		// 3. The name server, which finds the lease by itself.
		return n.namer(n.StateDir, ipam.StoreDir(n.StateDir, n.Bridge, n.Subnets...))
	})
	res.RulesRestored = restored
	if n.Names {
		tm.step("name server")
	} else {
		tm.step("lease " + res.Lease.IP.String())
	}
	return br, res, err
}

// ensureNetwork makes sure the bridge exists with its address and its
// firewall rules and spoof check are in place. What a setup verified for
// this very bridge (same ifindex, same options, recorded in the store) is
// trusted, and only its rules are checked, cheaply (Firewall.Verify,
// Guard.Verify): a warm setup makes one netlink call for the bridge and a
// read or two of the firewall. Rules found gone (a firewall reload or a
// flush of the ruleset took them) are installed again with every
// container's ports and spoof check, so the first setup after a reload
// brings the whole network back. It runs under the store's lock, so that one hook per
// network creates the bridge and installs its rules. Its undo removes the
// network again if this call created the bridge and no container has
// joined it meanwhile.
func (n *Network) ensureNetwork(tx ipam.Tx) (br bridge.Bridge, restored bool, undo func() error, err error) {
	found, exists := n.host.Find(n.Bridge)
	st := readStamp(tx)
	if exists && n.vouches(st, found) {
		n.useFirewall(st.firewall)
		restored, err := n.checkWarm(tx, st, found.Index)
		return found, restored, nil, err
	}
	rec, known := readRecord(tx)
	if err := n.pickFirewall(rec, known); err != nil {
		return br, false, nil, err
	}
	if known && exists && n.trusts(rec, found) {
		restored, err := n.checkWarm(tx, st, found.Index)
		return found, restored, nil, err
	}
	if err := n.checkBridgeFree(); err != nil {
		return br, false, nil, err
	}
	br, created, err := n.host.Ensure(n.Bridge, n.gateways(), n.MTU)
	if err != nil {
		return br, false, nil, hint(err)
	}
	if created {
		undo = func() error { return n.store.Do(n.removeIfUnused) }
	}
	if err := n.joinTenant(); err != nil {
		return br, false, undo, err
	}
	if err := n.installFirewall(tx); err != nil {
		return br, false, undo, err
	}
	if err := n.installGuard(tx); err != nil {
		return br, false, undo, err
	}
	if err := tx.SetRecord(n.recordOf(br)); err != nil {
		return br, false, undo, err
	}
	return br, false, undo, n.stamp(tx, stamp{}, br.Index)
}

// checkWarm checks the rules and the spoof check of a network whose
// record vouches for its bridge, and installs again what a reload or a
// flush took. Where the nftables generation is the one recorded, what
// nftables holds is trusted without a look (gen.go).
func (n *Network) checkWarm(tx ipam.Tx, st stamp, index int) (restored bool, err error) {
	g, fresh := n.fresh(st)
	if fresh && n.fw.Generational() {
		n.verifiedGen = g
		if err := n.fw.Forward(n.natNetwork()); err != nil {
			return false, err
		}
		return false, n.restamp(tx, st, g, index)
	}
	// A check that cannot run counts as rules gone: the install says
	// what is wrong.
	rules, _ := n.fw.Verify(n.natNetwork())
	guard := !n.SpoofCheck || fresh
	if !guard {
		guard, _ = n.guard.Verify(n.Bridge)
	}
	if !rules {
		// What took the rules may have been firewalld: check the zone
		// too, on this slow path only.
		if err := n.joinTenant(); err != nil {
			return true, err
		}
		if err := n.installFirewall(tx); err != nil {
			return true, err
		}
	}
	if !guard {
		if err := n.installGuard(tx); err != nil {
			return true, err
		}
	}
	if fresh && rules {
		n.verifiedGen = g
		return false, n.restamp(tx, st, g, index)
	}
	return !rules || !guard, n.stamp(tx, st, index)
}

// allow tells the spoof check what lease l's container may send as. Its
// undo takes that back.
func (n *Network) allow(l ipam.Lease) (undo func() error, err error) {
	if !n.SpoofCheck {
		return nil, nil
	}
	s := senderOf(l)
	if err := n.guard.Allow(n.Bridge, s); err != nil {
		return nil, err
	}
	return func() error { return n.guard.Forbid(n.Bridge, s) }, nil
}

// attach creates the veth pair into the container and configures its side
// (bridge.Attach is all or nothing). Its undo deletes the pair.
func (n *Network) attach(br bridge.Bridge, ns netns.NsHandle, l ipam.Lease, mac net.HardwareAddr, hairpin bool) (undo func() error, err error) {
	mtu := n.MTU
	if mtu == 0 {
		mtu = br.MTU
	}
	if mtu < minMTU6 && n.has(true) {
		return nil, inputErr("bridge %s has MTU %d: IPv6 needs 1280 at least; give {mtu} 1280 or more", n.Bridge, mtu)
	}
	ep := bridge.Endpoint{
		Host:     l.Veth,
		Alias:    alias(l.ID),
		Iface:    n.Iface,
		Addrs:    n.prefixes(l),
		MAC:      mac,
		MTU:      mtu,
		Hairpin:  hairpin,
		Isolated: !n.ICC,
		Quiet6:   n.has(true),
	}
	if n.DefaultRoute {
		for _, gw := range n.gateways() {
			ep.Gateways = append(ep.Gateways, gw.Addr())
		}
	}
	err = n.host.Attach(br, ns, ep)
	if errors.Is(err, unix.EEXIST) {
		// The veth's name, or the container's interface, may still be
		// held by the pair of a container that is gone (a reused pid, or
		// a namespace that outlives its containers), or by the unlabelled
		// pair of an earlier setup of this pid killed half-way (no other
		// lease can name a veth named for this pid): delete those, and try
		// once more.
		serr := n.store.Do(func(tx ipam.Tx) error { _, err := n.settle(tx, true); return err })
		if serr == nil {
			serr = n.host.Detach(ep.Host, "")
		}
		if serr != nil {
			return nil, fmt.Errorf("%w (and clearing veths of gone containers: %v)", err, serr)
		}
		err = n.host.Attach(br, ns, ep)
	}
	if err != nil {
		return nil, err
	}
	return func() error { return n.host.Detach(ep.Host, ep.Alias) }, nil
}

// leaveFresh records the generation after a setup's own commits, so that
// the next setup trusts its network with one read (gen.go). The record is
// a cache: failing to write it costs the next setup a full check, and
// fails nothing.
func (n *Network) leaveFresh(ports bool) {
	if k := n.commits(ports); n.verifiedGen != 0 && k > 0 {
		n.store.Do(func(tx ipam.Tx) error { return n.keepFresh(tx, k) })
	}
}

// Teardown undoes the setup of container id, found again from its lease.
// An id with no lease is not an error: poststop also runs after a failed
// create, and may run twice.
func (n *Network) Teardown(id string) (res Result, err error) {
	tm := n.timer()
	err = n.store.Do(func(tx ipam.Tx) error {
		l, ok, err := tx.Lookup(id)
		if err != nil || !ok {
			return hint(err)
		}
		tm.step("lookup")
		// Where the teardown's own commits cannot be counted, or it makes
		// none, there is no generation to keep: it reads none.
		k := n.commits(len(l.Ports) > 0)
		if k > 0 {
			if g, fresh := n.fresh(readStamp(tx)); fresh {
				n.verifiedGen = g
			}
		}
		if err := n.forget(tx, l); err != nil {
			return err
		}
		n.keepFresh(tx, k) // a cache: see leaveFresh
		tm.step("detach, unpublish, release")
		res = Result{Lease: l, Found: true}
		return nil
	})
	return res, err
}
