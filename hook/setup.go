package hook

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/nat"
	"github.com/gofrs/flock"
)

// Request is one container asking to join a network, whichever face it
// came through.
type Request struct {
	ID string
	// The container's network namespace: that of its process PID (OCI),
	// or the one at path Netns (CNI).
	PID   int
	Netns string
	Ports []nat.Port
	// IP and IP6 are the static addresses asked for; invalid: any free
	// address of that family.
	IP, IP6 netip.Addr
	// Static names where IP and IP6 were asked for, for errors; empty:
	// the annotations.
	Static string
	// MAC is the container interface's address; nil: one derived from
	// its IP address.
	MAC net.HardwareAddr
	// Rootfs is the container's root, where resolv.conf is written when
	// the network has name servers to give.
	Rootfs string
}

// Result is what a setup or teardown did, for the log.
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
	ns, ino, err := n.openNetns(req)
	if err != nil {
		return res, err
	}
	defer ns.Close()
	tm.step("open netns")
	// The container's IPv6 defaults are set while the steps below run;
	// the veth waits for them (attach), and ns stays open until then.
	quiet := func() error { return nil }
	if n.has(true) {
		quiet = n.host.Quiet6(ns)
		defer quiet()
	}

	var undo undoStack
	defer func() { err = undo.onError(err) }()

	// Steps 1 and 2 hold the store's lock together: a container has its
	// lease by the time another hook can find the network without one
	// and take it down (the undo of a failed cold setup, network rm).
	unlockPorts := func() {}
	if len(req.Ports) > 0 {
		// Held from the check of the host ports until the lease that
		// claims them is written: see checkPorts.
		if unlockPorts, err = lockPorts(n.StateDir); err != nil {
			return res, err
		}
	}
	var br bridge.Bridge
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
		return err
	})
	unlockPorts()
	res.RulesRestored = restored
	if err != nil || res.Reused {
		return res, err
	}
	tm.step("lease " + res.Lease.IP.String())
	failpoint("leased")

	// 3. The veth pair, and the container's side of it.
	if err := quiet(); err != nil {
		return res, err
	}
	u, err := n.attach(br, ns, res.Lease, req.MAC, len(req.Ports) > 0)
	undo.push(u)
	if err != nil {
		return res, err
	}
	tm.step("attach veth")

	// 4. resolv.conf, if the network gives name servers.
	if len(n.DNS) > 0 || n.HostDNS {
		err = n.writeResolvConf(req.Rootfs)
		tm.step("write resolv.conf")
	}
	return res, err
}

// ensureNetwork makes sure the bridge exists with its address and its
// firewall rules are in place. What a setup verified for this very bridge
// (same ifindex, same options, recorded in the store) is trusted, and only
// its rules are checked, cheaply (Firewall.Verify): a warm setup makes one
// netlink call for the bridge and a read or two of the firewall. Rules
// found gone (a firewall reload took them) are installed again with every
// container's ports, so the first setup after a reload brings the whole
// network back. It runs under the store's lock, so that one hook per
// network creates the bridge and installs its rules. Its undo removes the
// network again if this call created the bridge and no container has
// joined it meanwhile.
func (n *Network) ensureNetwork(tx ipam.Tx) (br bridge.Bridge, restored bool, undo func() error, err error) {
	rec, known := readRecord(tx)
	if err := n.pickFirewall(rec, known); err != nil {
		return br, false, nil, err
	}
	if known {
		if found, ok := n.host.Find(n.Bridge); ok && n.trusts(rec, found) {
			// A check that cannot run counts as rules gone: the install
			// says what is wrong.
			if ok, _ := n.fw.Verify(n.natNetwork()); ok {
				return found, false, nil, nil
			}
			return found, true, nil, n.installFirewall(tx)
		}
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
	if err := n.installFirewall(tx); err != nil {
		return br, false, undo, err
	}
	return br, false, undo, tx.SetRecord(n.recordOf(br))
}

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
			return Result{}, nil, inputErr("container id %q already holds %s for a live network namespace (%s); container ids must be unique per network", req.ID, old.IP, holder(old))
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
	failpoint("ports-checked")
	l, err := n.allocate(tx, ipam.Lease{
		ID: req.ID, IP: req.IP, IP6: req.IP6, PID: req.PID, Netns: req.Netns, NetnsInode: ino,
		Veth: n.vethFor(req), Iface: n.Iface, Ports: portStrings(req.Ports),
	}, req.Static)
	if err != nil {
		return Result{}, nil, err
	}
	res := Result{Lease: l, Found: true}
	release := func(tx ipam.Tx) error { _, _, err := tx.Release(req.ID); return err }
	if len(req.Ports) == 0 {
		return res, func() error { return n.store.Do(release) }, nil
	}
	pub := nat.Published{ID: req.ID, IP: l.IP, IP6: l.IP6, Ports: req.Ports}
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

// attach creates the veth pair into the container and configures its side
// (bridge.Attach is all or nothing). Its undo deletes the pair.
func (n *Network) attach(br bridge.Bridge, ns netns.NsHandle, l ipam.Lease, mac net.HardwareAddr, hairpin bool) (undo func() error, err error) {
	mtu := n.MTU
	if mtu == 0 {
		mtu = br.MTU
	}
	if mtu < minMTU6 && n.has(true) {
		return nil, inputErr("bridge %s has MTU %d: IPv6 needs 1280 at least; give --mtu 1280 or more", n.Bridge, mtu)
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

// allocate leases an address. A subnet that seems full first gets back
// what containers that are gone still hold, and a drained address asked
// for by name is settled if its veth is gone: both need the kernel's word,
// so both run here, under the lock, rather than in the store.
func (n *Network) allocate(tx ipam.Tx, want ipam.Lease, static string) (ipam.Lease, error) {
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
	if err != nil && (want.IP.IsValid() || want.IP6.IsValid()) && (errors.Is(err, ipam.ErrTaken) || errors.Is(err, ipam.ErrUnusable)) {
		if static == "" {
			static = "annotation " + staticAnnotation(want, err)
		}
		return l, inputErr("%s: %v", static, err)
	}
	return l, hint(err)
}

// checkPorts refuses host ports that a live container already publishes,
// on this network or another; a dead container's claim is reclaimed.
//
// The caller holds the ports lock (lockPorts) from this check until the
// lease that claims ports is written, so two setups cannot both find a
// port free. That makes reading other networks' stores under their locks
// safe: the ports lock is always taken first, by one hook at a time, and a
// hook that holds a store's lock without it never waits for another store.
func (n *Network) checkPorts(tx ipam.Tx, id string, ports []nat.Port) error {
	if len(ports) == 0 {
		return nil
	}
	if err := n.releasePorts(tx, id, ports, true); err != nil {
		return err
	}
	others, err := n.stores()
	if err != nil {
		return err
	}
	for _, s := range others {
		if n.same(s) {
			continue
		}
		o := n.on(s)
		err := s.Do(func(tx ipam.Tx) error {
			o.adopt(tx)
			return o.releasePorts(tx, id, ports, false)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// releasePorts fails if a live container of tx's network publishes one of
// ports, and forgets the dead ones that do. An id's own lease on its own
// network is no clash: it is being set up again.
func (n *Network) releasePorts(tx ipam.Tx, id string, ports []nat.Port, own bool) error {
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
// under stateDir.
func lockPorts(stateDir string) (unlock func(), err error) {
	lock := flock.New(filepath.Join(stateDir, "ports.lock"))
	if err := lock.Lock(); err != nil {
		return nil, fmt.Errorf("lock host ports: %w", err)
	}
	return func() { lock.Unlock() }, nil
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
		if err := n.forget(tx, l); err != nil {
			return err
		}
		tm.step("detach, unpublish, release")
		res = Result{Lease: l, Found: true}
		return nil
	})
	return res, err
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
	if len(l.Ports) > 0 {
		n.adoptFirewall(tx)
		pub, err := published(l)
		if err != nil {
			return err
		}
		if err := n.fw.Unpublish(n.natNetwork(), pub); err != nil {
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
			pub, err := published(l)
			if err != nil {
				return err
			}
			pubs = append(pubs, pub)
		}
	}
	return n.fw.Install(n.natNetwork(), pubs)
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
	if err := n.fw.Uninstall(n.natNetwork()); err != nil {
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

// holder names the namespace a lease was made for: its process's pid, or
// its path (CNI).
func holder(l ipam.Lease) string {
	if l.Netns != "" {
		return l.Netns
	}
	return fmt.Sprintf("pid %d", l.PID)
}

// staticAnnotation names the annotation that asked for the address err
// is about.
func staticAnnotation(want ipam.Lease, err error) string {
	if want.IP6.IsValid() && (!want.IP.IsValid() || strings.Contains(err.Error(), want.IP6.String())) {
		return AnnotationIP6
	}
	return AnnotationIP
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
		return inputErr("bridge %s is network %v's; use another --bridge, or remove that network first (bridgehook --bridge %s %s network rm)",
			n.Bridge, s.Subnets(), n.Bridge, subnetFlags(s.Subnets()))
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

// undoStack holds the undo of each step done so far.
type undoStack []func() error

// push adds a step's undo; nil, for a step that changed nothing, is
// skipped.
func (u *undoStack) push(f func() error) {
	if f != nil {
		*u = append(*u, f)
	}
}

// run undoes in reverse order, carrying on past failures so that as much as
// possible is undone, and returns every failure.
func (u *undoStack) run() error {
	var errs []error
	for i := len(*u) - 1; i >= 0; i-- {
		if err := (*u)[i](); err != nil {
			errs = append(errs, err)
		}
	}
	*u = nil
	return errors.Join(errs...)
}

// onError undoes everything when err is set, and returns err with any
// failure to undo added to it.
func (u *undoStack) onError(err error) error {
	if err == nil {
		return nil
	}
	if uerr := u.run(); uerr != nil {
		return fmt.Errorf("%w (and undoing it: %v)", err, strings.ReplaceAll(uerr.Error(), "\n", "; "))
	}
	return err
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
