package hook

// The commands that look after networks: ls, inspect, gc, repair,
// network rm.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/nat"
)

// NetworkView is one network as `ls --json` shows it.
type NetworkView struct {
	Bridge string `json:"bridge"`
	// Subnet and Gateway are the first subnet's, as before dual-stack;
	// Subnets and Gateways have both families'.
	Subnet   string   `json:"subnet"`
	Gateway  string   `json:"gateway"`
	Subnets  []string `json:"subnets"`
	Gateways []string `json:"gateways"`
	MTU      int      `json:"mtu"`
	NAT      bool     `json:"nat"`
	ICC      bool     `json:"icc"`
	Internal bool     `json:"internal"`
	// SpoofCheck: what containers send as others is dropped.
	SpoofCheck bool `json:"spoof_check"`
	// Names: the network's name server answers its containers' names.
	Names bool `json:"names"`
	// NonMasquerade are the destinations reached without masquerade.
	NonMasquerade []string   `json:"non_masquerade,omitempty"`
	Firewall      string     `json:"firewall"`
	Endpoints     []Endpoint `json:"endpoints"`
	// Unreadable names lease files gc will rebuild or discard.
	Unreadable []string `json:"unreadable,omitempty"`
}

// Endpoint is one container on a network.
type Endpoint struct {
	ID         string   `json:"id"`
	IP         string   `json:"ip"`
	IP6        string   `json:"ip6,omitempty"`
	MAC        string   `json:"mac"`
	Iface      string   `json:"iface"`
	Veth       string   `json:"veth"`
	PID        int      `json:"pid"`
	NetnsInode uint64   `json:"netns_inode"`
	Ports      []string `json:"ports"`
	// Names are what it answers to besides its id, on a network with
	// names.
	Names   []string  `json:"names,omitempty"`
	Created time.Time `json:"created"`
	// Status is "running" while the recorded namespace lives, else
	// "stale": gc reclaims stale leases.
	Status  string `json:"status"`
	Network string `json:"network"`
}

func endpoint(l ipam.Lease, bridgeName string, alive bool) Endpoint {
	status := "stale"
	if alive {
		status = "running"
	}
	ports := []string{}
	for _, p := range l.Ports {
		ports = append(ports, p.String())
	}
	ip6 := ""
	if l.IP6.IsValid() {
		ip6 = l.IP6.String()
	}
	return Endpoint{
		ID: l.ID, IP: l.IP.String(), IP6: ip6, MAC: macOf(l).String(), Iface: l.Iface, Veth: l.Veth,
		PID: l.PID, NetnsInode: l.NetnsInode, Ports: ports, Names: l.Names, Created: l.Created, Status: status, Network: bridgeName,
	}
}

// stores returns the store of c's network, or with all every store under
// the state directory. Looking creates nothing.
func (w world) stores(c Config, all bool) ([]ipam.Store, error) {
	if all {
		return w.opener.All(c.StateDir)
	}
	if !w.opener.Exists(c.StateDir, c.Bridge, c.Subnets...) {
		return nil, nil // nothing set up yet: nothing to show
	}
	s, err := w.opener.Open(c.StateDir, c.Bridge, c.Subnets...)
	if err != nil {
		return nil, hint(err)
	}
	return []ipam.Store{s}, nil
}

// List returns c's network, or with all every network, with its endpoints.
func List(c Config, all bool, opts ...Option) ([]NetworkView, error) {
	w := worldOf(opts)
	stores, err := w.stores(c, all)
	if err != nil {
		return nil, err
	}
	n := &Network{sys: w.sys}
	views := []NetworkView{}
	for _, s := range stores {
		v := NetworkView{
			Bridge: s.Bridge(), NAT: true, ICC: true, SpoofCheck: true, Firewall: record{}.firewall(), Endpoints: []Endpoint{},
		}
		for _, p := range s.Subnets() {
			v.Subnets = append(v.Subnets, p.String())
			v.Gateways = append(v.Gateways, p.Addr().Next().String())
		}
		v.Subnet, v.Gateway = v.Subnets[0], v.Gateways[0]
		err := s.Do(func(tx ipam.Tx) error {
			if rec, ok := readRecord(tx); ok {
				v.MTU, v.ICC, v.Internal, v.NAT, v.SpoofCheck = rec.MTU, rec.ICC, rec.Internal, !rec.Internal, !rec.NoSpoofCheck
				v.Names = rec.Names != nil
				for _, p := range rec.NonMasquerade {
					v.NonMasquerade = append(v.NonMasquerade, p.String())
				}
				v.Firewall = rec.firewall()
			}
			ls, bad, err := tx.List()
			for _, l := range ls {
				v.Endpoints = append(v.Endpoints, endpoint(l, s.Bridge(), n.alive(l)))
			}
			v.Unreadable = bad
			return err
		})
		if err != nil {
			return nil, err
		}
		sort.Slice(v.Endpoints, func(i, j int) bool {
			a, _ := netip.ParseAddr(v.Endpoints[i].IP)
			b, _ := netip.ParseAddr(v.Endpoints[j].IP)
			return a.Less(b)
		})
		views = append(views, v)
	}
	return views, nil
}

// Inspect finds container id's endpoint on any network under the state
// directory.
func Inspect(c Config, id string, opts ...Option) (Endpoint, error) {
	if err := checkLeaseID(id); err != nil {
		return Endpoint{}, err
	}
	w := worldOf(opts)
	stores, err := w.opener.All(c.StateDir)
	if err != nil {
		return Endpoint{}, err
	}
	n := &Network{sys: w.sys}
	for _, s := range stores {
		var ep Endpoint
		var found bool
		err := s.Do(func(tx ipam.Tx) error {
			l, ok, err := tx.Lookup(id)
			if ok {
				ep, found = endpoint(l, s.Bridge(), n.alive(l)), true
			}
			return hint(err)
		})
		if err != nil || found {
			return ep, err
		}
	}
	return Endpoint{}, inputErr("no endpoint for container %q under %s (see bridgehook ls --all)", id, c.StateDir)
}

// GC runs gc on c's network, or with all on every network under the state
// directory, each with the options its rules were installed with.
func GC(c Config, all bool, opts ...Option) ([]string, error) {
	if !all && !worldOf(opts).opener.Exists(c.StateDir, c.Bridge, c.Subnets...) {
		return nil, nil // nothing set up yet: nothing to collect
	}
	return eachNetwork(c, all, true, "gc", (*Network).gc, opts)
}

// eachNetwork runs fn under each network's store lock: c's, or with all
// every network under the state directory (then c's network need not
// exist, and no store is made for it). With adopt, or with all, each
// network takes the options its record holds rather than c's.
func eachNetwork(c Config, all, adopt bool, verb string, fn func(*Network, ipam.Tx) ([]string, error), opts []Option) ([]string, error) {
	if w := worldOf(opts); all && !w.opener.Exists(c.StateDir, c.Bridge, c.Subnets...) {
		stores, err := w.opener.All(c.StateDir)
		if err != nil || len(stores) == 0 {
			return nil, err
		}
		c.Bridge, c.Subnets = stores[0].Bridge(), stores[0].Subnets()
	}
	n, err := Open(c, opts...)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	stores := []ipam.Store{n.store}
	if all {
		if stores, err = n.stores(); err != nil {
			return nil, err
		}
	}
	var report []string
	for _, s := range stores {
		o := n.on(s)
		err := s.Do(func(tx ipam.Tx) error {
			if adopt || all {
				o.adopt(tx)
			}
			r, err := fn(o, tx)
			report = append(report, r...)
			return err
		})
		if all && errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile (network rm)
		}
		if err != nil {
			return report, fmt.Errorf("%s %s: %w", verb, s.Bridge(), err)
		}
	}
	return report, nil
}

// gc brings the store and the kernel back into agreement, and says what it
// did, a line per action:
//   - a lease whose namespace is gone (pid gone, or reused by a process in
//     another namespace) is released, and so is the lease of a live
//     container whose setup was killed before it made the veth;
//   - the veths of containers that are gone are deleted, whether their
//     namespace is still dying or something else keeps it alive, and their
//     addresses freed;
//   - an unreadable lease file is rebuilt from the kernel when a live
//     container still holds its address, else discarded;
//   - a veth on the bridge that no lease accounts for is adopted when a
//     live container is behind it (the store lost its lease; its published
//     ports are read back from the rules), else deleted;
//   - a veth left unlabelled by a setup killed half-way is deleted;
//   - port rules that no lease accounts for are removed;
//   - the store's own upkeep: temp files of interrupted writes, the index.
//
// So when it returns, nothing is left of a container that is gone: no
// lease, no veth, no rule, and its address is free. It holds the store's
// lock throughout, so it is safe while hooks run, and it leaves the leases
// of setups still in progress alone.
func (n *Network) gc(tx ipam.Tx) ([]string, error) {
	report, err := n.reclaim(tx)
	if err != nil {
		return report, err
	}
	// The veths of containers that are gone are deleted now, not left to
	// the kernel's namespace cleanup.
	if settled, err := n.settle(tx, true); err != nil {
		return report, err
	} else if settled > 0 {
		report = append(report, fmt.Sprintf("%s: freed %d addresses of containers that are gone, and their veths", n.Bridge, settled))
	}
	// Unreadable lease files go before the kernel is asked who holds
	// their addresses, so that their leases can be rebuilt.
	tidied, err := tx.Tidy()
	for _, line := range tidied {
		report = append(report, n.Bridge+": "+line)
	}
	if err != nil {
		return report, err
	}
	adopted, err := n.adoptOrphans(tx)
	report = append(report, adopted...)
	if err != nil {
		return report, err
	}
	halfMade, err := n.dropHalfMade(tx)
	report = append(report, halfMade...)
	if err != nil {
		return report, err
	}
	stale, err := n.dropStaleSenders(tx)
	return append(report, stale...), err
}

// dropStaleSenders takes out of the spoof check the veths no lease
// accounts for: those of leases the store lost.
func (n *Network) dropStaleSenders(tx ipam.Tx) ([]string, error) {
	if !n.SpoofCheck {
		return nil, nil
	}
	senders, err := n.guard.Senders(n.Bridge)
	if err != nil || len(senders) == 0 {
		return nil, err
	}
	held, err := heldOrDraining(tx)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, l := range held {
		known[l.Veth] = true
	}
	var stale, report []string
	for _, v := range senders {
		if !known[v] {
			stale = append(stale, v)
			report = append(report, fmt.Sprintf("%s: dropped the spoof check's entries of veth %s (no lease)", n.Bridge, v))
		}
	}
	if len(stale) == 0 {
		return nil, nil
	}
	return report, n.guard.Drop(n.Bridge, stale)
}

// adoptOrphans looks at the veths on the bridge that no lease accounts
// for: one with a live container behind it gets its lease back (the store
// lost it), with the ports its rules publish; any other is deleted. Then
// the port rules no lease accounts for are removed.
func (n *Network) adoptOrphans(tx ipam.Tx) ([]string, error) {
	held, err := heldOrDraining(tx)
	if err != nil {
		return nil, err
	}
	ours := map[string]bool{}
	for _, l := range held {
		ours[l.Veth+" "+alias(l.ID)] = true
	}
	pubs, err := n.fw.Published(n.natNetwork())
	if err != nil {
		return nil, err
	}
	ports, err := n.host.Ports(n.Bridge)
	if err != nil {
		return nil, err
	}
	var report []string
	for _, p := range ports {
		if !strings.HasPrefix(p.Alias, "bridgehook:") || ours[p.Name+" "+p.Alias] {
			continue
		}
		if isCNIVeth(p.Name) {
			// Its namespace is known only to its runtime: a live one is
			// left to the runtime's CNI GC.
			if state, err := n.host.State(p.Name, p.Alias); err == nil && state == bridge.Live {
				report = append(report, fmt.Sprintf("%s: left veth %s of %s alone: its lease is lost and its namespace lives (CNI GC removes it)", n.Bridge, p.Name, strings.TrimPrefix(p.Alias, "bridgehook:")))
				continue
			}
		}
		if l, ok := n.fromKernel(p); ok {
			for _, pub := range pubs {
				if pub.IP == l.IP && pub.ID == nat.Label(l.ID) {
					l.Ports = pub.Ports
				}
			}
			if _, err := tx.Allocate(l); err == nil {
				report = append(report, fmt.Sprintf("%s: rebuilt lease %s for %s from %s", n.Bridge, l.IP, l.ID, p.Name))
				continue
			}
		}
		if err := n.host.Detach(p.Name, p.Alias); err != nil {
			return report, err
		}
		report = append(report, fmt.Sprintf("%s: deleted veth %s (no lease)", n.Bridge, p.Name))
	}
	stale, err := n.dropStalePorts(tx, pubs)
	return append(report, stale...), err
}

// dropStalePorts removes the port rules no lease accounts for: those of a
// lease the store lost outright, whose container is gone. The network's
// rules are installed again from the leases, in one atomic restore.
func (n *Network) dropStalePorts(tx ipam.Tx, pubs []nat.Published) ([]string, error) {
	leases, _, err := tx.List()
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, pub := range pubs {
		if !slices.ContainsFunc(leases, func(l ipam.Lease) bool {
			return slices.Contains(l.Addrs(), pub.IP) && nat.Label(l.ID) == pub.ID && len(l.Ports) > 0
		}) {
			stale = append(stale, fmt.Sprintf("%s: removed the port rules of %s (%s): it has no lease", n.Bridge, pub.ID, pub.IP))
		}
	}
	if len(stale) == 0 {
		return nil, nil
	}
	return stale, n.installFirewall(tx)
}

// dropHalfMade deletes the veths of setups killed between creating the
// pair and labelling it (netlink makes, enslaves and labels a veth in
// three calls): unlabelled, named as we name them, and named by no lease
// of any network. A setup writes its lease before it makes its veth, so
// listing the veths before reading the leases never catches one at work.
func (n *Network) dropHalfMade(tx ipam.Tx) ([]string, error) {
	unlabelled, err := n.host.Unlabelled()
	if err != nil {
		return nil, err
	}
	var candidates []string
	for _, v := range unlabelled {
		if isVethName(v) {
			candidates = append(candidates, v)
		}
	}
	if len(candidates) == 0 {
		return nil, nil
	}
	named := map[string]bool{}
	ours, _, err := tx.List() // this store is locked by this gc already
	if err != nil {
		return nil, err
	}
	others, err := n.stores()
	if err != nil {
		return nil, err
	}
	for _, s := range others {
		if n.same(s) {
			continue
		}
		ls, err := s.Peek()
		if err != nil {
			return nil, err
		}
		ours = append(ours, ls...)
	}
	for _, l := range ours {
		named[l.Veth] = true
	}
	var report []string
	for _, v := range candidates {
		if named[v] {
			continue
		}
		if err := n.host.Detach(v, ""); err != nil {
			return report, err
		}
		report = append(report, fmt.Sprintf("%s: deleted veth %s (unlabelled: its setup was killed half-way)", n.Bridge, v))
	}
	return report, nil
}

// fromKernel rebuilds the lease behind host veth p: its name gives the
// pid, the pid the namespace, and the namespace the peer's address. The
// alias names the container.
func (n *Network) fromKernel(p bridge.Port) (ipam.Lease, bool) {
	pid, err := strconv.Atoi(p.Name[strings.LastIndexByte(p.Name, '-')+1:])
	id, ok := strings.CutPrefix(p.Alias, "bridgehook:")
	if err != nil || !ok || CheckID(id) != nil {
		return ipam.Lease{}, false // a hashed long id cannot be recovered
	}
	ns, ino, err := n.sys.Netns(pid)
	if err != nil {
		return ipam.Lease{}, false
	}
	defer ns.Close()
	ips, ok := n.host.PeerAddrs(ns, n.Iface, p, n.Subnets)
	if !ok {
		return ipam.Lease{}, false
	}
	l := ipam.Lease{ID: id, IP: ips[0], PID: pid, NetnsInode: ino, Veth: p.Name, Iface: n.Iface}
	if len(ips) > 1 {
		l.IP6 = ips[1]
	}
	return l, true
}

// RemoveNetwork removes c's bridge, its firewall rules and its store.
func RemoveNetwork(c Config, opts ...Option) ([]string, error) {
	n, err := Open(c, opts...)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	return n.Remove()
}

// Remove removes the network's bridge, its firewall rules and its store.
// It refuses, naming them, while containers with live namespaces hold
// leases.
func (n *Network) Remove() ([]string, error) {
	var report []string
	err := n.store.Do(func(tx ipam.Tx) error {
		leases, _, err := tx.List()
		if err != nil {
			return err
		}
		var live []string
		for _, l := range leases {
			if n.alive(l) {
				live = append(live, fmt.Sprintf("%s (%s, %s)", l.ID, l.IP, NetnsOf(l)))
			}
		}
		if len(live) > 0 {
			return inputErr("network %s is in use by %s; stop those containers first", n.Bridge, strings.Join(live, ", "))
		}
		if report, err = n.reclaim(tx); err != nil {
			return err
		}
		n.adoptFirewall(tx)
		if err := n.removeNetwork(tx); err != nil {
			return err
		}
		report = append(report, fmt.Sprintf("removed bridge %s, its firewall rules and its store", n.Bridge))
		return nil
	})
	if err != nil {
		return report, err
	}
	return report, n.store.Destroy()
}

// Repair re-creates what c's network needs and re-installs its rules;
// with all, every network's under the state directory, each with the
// options its rules were installed with. It says what it repaired. For
// after a firewall reload (firewalld, iptables-restore, a flush) removed
// them, which warm setups do not check.
func Repair(c Config, all bool, opts ...Option) ([]string, error) {
	return eachNetwork(c, all, false, "repair", func(n *Network, tx ipam.Tx) ([]string, error) {
		if all && !n.inUse(tx) {
			// Never set up, or being removed (network rm clears the
			// record first): --all does not make it again.
			return nil, nil
		}
		if err := n.repair(tx); err != nil {
			return nil, err
		}
		return []string{fmt.Sprintf("%s: bridge and rules in place (%s)", n.Bridge, subnetList(n.Subnets))}, nil
	}, opts)
}

// inUse reports whether the network was set up (it has a record) or
// holds leases.
func (n *Network) inUse(tx ipam.Tx) bool {
	if _, known := readRecord(tx); known {
		return true
	}
	leases, bad, err := tx.List()
	return err != nil && !errors.Is(err, os.ErrNotExist) || len(leases)+len(bad) > 0
}

// repair makes the bridge if it is missing, installs the network's rules
// again, and records what it verified. Given a --firewall other than the
// one the network's rules are in, it moves them: out of the old backend
// first, so the two never both hold them.
func (n *Network) repair(tx ipam.Tx) error {
	br, _, err := n.host.Ensure(n.Bridge, n.gateways(), n.MTU)
	if err != nil {
		return hint(err)
	}
	rec, known := readRecord(tx)
	if known && n.Firewall != "" && rec.firewall() != n.Firewall {
		if err := n.fws.get(rec.firewall()).Uninstall(n.natNetwork()); err != nil {
			return fmt.Errorf("move rules out of %s: %w", rec.firewall(), err)
		}
		if err := tx.ClearRecord(); err != nil {
			return err
		}
		known = false
	}
	if err := n.pickFirewall(rec, known); err != nil {
		return err
	}
	if err := n.joinTenant(); err != nil {
		return err
	}
	if err := n.installFirewall(tx); err != nil {
		return err
	}
	if err := n.installGuard(tx); err != nil {
		return err
	}
	if err := tx.SetRecord(n.recordOf(br)); err != nil {
		return err
	}
	return n.stamp(tx, stamp{}, br.Index)
}

// subnetList names a network's subnets for a person: "172.19.0.0/16 and
// fd19::/64".
func subnetList(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, " and ")
}

// heldOrDraining are the leases of tx's network and those draining: what
// accounts for a veth.
func heldOrDraining(tx ipam.Tx) ([]ipam.Lease, error) {
	leases, _, err := tx.List()
	if err != nil {
		return nil, err
	}
	drained, err := tx.Draining()
	return append(leases, drained...), err
}
