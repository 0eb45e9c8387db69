package hook

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

	"github.com/vishvananda/netns"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/nat"
)

// Network is one network as `ls --json` shows it.
type Network struct {
	Bridge    string     `json:"bridge"`
	Subnet    string     `json:"subnet"`
	Gateway   string     `json:"gateway"`
	MTU       int        `json:"mtu"`
	NAT       bool       `json:"nat"`
	ICC       bool       `json:"icc"`
	Internal  bool       `json:"internal"`
	Endpoints []Endpoint `json:"endpoints"`
	// Unreadable names lease files gc will rebuild or discard.
	Unreadable []string `json:"unreadable,omitempty"`
}

// Endpoint is one container on a network.
type Endpoint struct {
	ID         string    `json:"id"`
	IP         string    `json:"ip"`
	MAC        string    `json:"mac"`
	Iface      string    `json:"iface"`
	Veth       string    `json:"veth"`
	PID        int       `json:"pid"`
	NetnsInode uint64    `json:"netns_inode"`
	Ports      []string  `json:"ports"`
	Created    time.Time `json:"created"`
	// Status is "running" while the recorded namespace lives, else
	// "stale": gc reclaims stale leases.
	Status  string `json:"status"`
	Network string `json:"network"`
}

func endpoint(l ipam.Lease, bridgeName string) Endpoint {
	status := "stale"
	if alive(l) {
		status = "running"
	}
	ports := l.Ports
	if ports == nil {
		ports = []string{}
	}
	return Endpoint{
		ID: l.ID, IP: l.IP.String(), MAC: bridge.MAC(l.IP).String(), Iface: l.Iface, Veth: l.Veth,
		PID: l.PID, NetnsInode: l.NetnsInode, Ports: ports, Created: l.Created, Status: status, Network: bridgeName,
	}
}

// stores returns the store of c's network, or with all every store under
// the state directory.
func (c Config) stores(all bool) ([]*ipam.Store, error) {
	if all {
		return ipam.Stores(c.StateDir)
	}
	if _, err := os.Stat(ipam.Path(c.StateDir, c.Bridge, c.Subnet)); errors.Is(err, os.ErrNotExist) {
		return nil, nil // nothing set up yet: nothing to show
	}
	s, err := ipam.Open(c.StateDir, c.Bridge, c.Subnet)
	if err != nil {
		return nil, err
	}
	return []*ipam.Store{s}, nil
}

// List returns c's network, or with all every network, with its endpoints.
func List(c Config, all bool) ([]Network, error) {
	stores, err := c.stores(all)
	if err != nil {
		return nil, err
	}
	nets := []Network{}
	for _, s := range stores {
		n := Network{
			Bridge: s.Bridge(), Subnet: s.Subnet().String(), Gateway: s.Gateway().String(),
			NAT: true, ICC: true, Endpoints: []Endpoint{},
		}
		err := s.Do(func(tx *ipam.Tx) error {
			if rec, ok, _ := tx.Network(); ok {
				n.MTU, n.ICC, n.Internal, n.NAT = rec.MTU, rec.ICC, rec.Internal, !rec.Internal
			}
			ls, bad, err := tx.List()
			for _, l := range ls {
				n.Endpoints = append(n.Endpoints, endpoint(l, s.Bridge()))
			}
			n.Unreadable = bad
			return err
		})
		if err != nil {
			return nil, err
		}
		sort.Slice(n.Endpoints, func(i, j int) bool {
			a, _ := netip.ParseAddr(n.Endpoints[i].IP)
			b, _ := netip.ParseAddr(n.Endpoints[j].IP)
			return a.Less(b)
		})
		nets = append(nets, n)
	}
	return nets, nil
}

// Inspect finds container id's endpoint on any network under the state
// directory.
func Inspect(c Config, id string) (Endpoint, error) {
	if err := CheckID(id); err != nil {
		return Endpoint{}, err
	}
	stores, err := ipam.Stores(c.StateDir)
	if err != nil {
		return Endpoint{}, err
	}
	for _, s := range stores {
		var ep Endpoint
		var found bool
		err := s.Do(func(tx *ipam.Tx) error {
			l, ok, err := tx.Lookup(id)
			if ok {
				ep, found = endpoint(l, s.Bridge()), true
			}
			return err
		})
		if err != nil || found {
			return ep, err
		}
	}
	return Endpoint{}, inputErr("no endpoint for container %q under %s (see bridgehook ls --all)", id, c.StateDir)
}

// GC brings the store and the kernel back into agreement, and says what it
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
//   - port rules that no lease accounts for are removed;
//   - index entries without a lease are pruned, and leases without one
//     get theirs back.
//
// So when it returns, nothing is left of a container that is gone: no
// lease, no veth, no rule, and its address is free. It holds the store's
// lock throughout, so it is safe while hooks run, and it leaves the leases
// of setups still in progress alone.
func GC(c Config, all bool) ([]string, error) {
	stores, err := c.stores(all)
	if err != nil {
		return nil, err
	}
	c, disconnect, err := c.connect()
	if err != nil {
		return nil, err
	}
	defer disconnect()
	var report []string
	for _, s := range stores {
		nc := c
		nc.Bridge, nc.Subnet = s.Bridge(), s.Subnet()
		s.Free = nc.freeDrained
		err := s.Do(func(tx *ipam.Tx) error {
			r, err := nc.gc(tx)
			report = append(report, r...)
			return err
		})
		if err != nil {
			return report, fmt.Errorf("gc %s: %w", s.Bridge(), err)
		}
	}
	return report, nil
}

func (c Config) gc(tx *ipam.Tx) ([]string, error) {
	report, err := c.reclaim(tx)
	if err != nil {
		return report, err
	}
	// The veths of containers that are gone are deleted now, not left to
	// the kernel's namespace cleanup: gc promises that when it returns,
	// nothing of them is left.
	if n, err := c.settle(tx, true); err != nil {
		return report, err
	} else if n > 0 {
		report = append(report, fmt.Sprintf("%s: freed %d addresses of containers that are gone, and their veths", c.Bridge, n))
	}
	drained, err := tx.Draining()
	if err != nil {
		return report, err
	}
	leases, bad, err := tx.List()
	if err != nil {
		return report, err
	}
	for _, p := range bad {
		if err := tx.Discard(p); err != nil {
			return report, err
		}
		report = append(report, fmt.Sprintf("%s: discarded unreadable lease file %s", c.Bridge, p))
	}
	ours := map[string]bool{}
	for _, l := range append(leases, drained...) {
		ours[l.Veth+" "+alias(l.ID)] = true
	}
	fw := nat.New(c.runner())
	pubs, err := fw.Published(c.network())
	if err != nil {
		return report, err
	}
	ports, err := c.host.Ports(c.Bridge)
	if err != nil {
		return report, err
	}
	for _, p := range ports {
		if !strings.HasPrefix(p.Alias, "bridgehook:") || ours[p.Name+" "+p.Alias] {
			continue
		}
		if l, ok := c.fromKernel(p); ok {
			// Its published ports are in the rules the store lost it from.
			for _, pub := range pubs {
				if pub.IP == l.IP && pub.ID == nat.Label(l.ID) {
					l.Ports = portStrings(pub.Ports)
				}
			}
			if _, err := tx.Allocate(l); err == nil {
				report = append(report, fmt.Sprintf("%s: rebuilt lease %s for %s from %s", c.Bridge, l.IP, l.ID, p.Name))
				continue
			}
		}
		if err := c.host.Detach(p.Name, p.Alias); err != nil {
			return report, err
		}
		report = append(report, fmt.Sprintf("%s: deleted veth %s (no lease)", c.Bridge, p.Name))
	}
	halfMade, err := c.dropHalfMade(tx)
	report = append(report, halfMade...)
	if err != nil {
		return report, err
	}
	stale, err := c.dropStalePorts(tx, pubs)
	report = append(report, stale...)
	if err != nil {
		return report, err
	}
	if n, err := tx.PruneIndex(); err != nil {
		return report, err
	} else if n > 0 {
		report = append(report, fmt.Sprintf("%s: fixed %d lease index entries", c.Bridge, n))
	}
	if n, err := tx.Sweep(); err != nil {
		return report, err
	} else if n > 0 {
		report = append(report, fmt.Sprintf("%s: removed %d files of interrupted writes", c.Bridge, n))
	}
	return report, nil
}

// dropHalfMade deletes the veths of setups killed between creating the
// pair and labelling it (netlink makes, enslaves and labels a veth in
// three calls): unlabelled, named as we name them, and named by no lease
// of any network. A setup writes its lease before it makes its veth, so
// listing the veths before reading the leases never catches one at work.
func (c Config) dropHalfMade(tx *ipam.Tx) ([]string, error) {
	unlabelled, err := c.host.Unlabelled()
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
	stores, err := ipam.Stores(c.StateDir)
	if err != nil {
		return nil, err
	}
	for _, s := range stores {
		var ls []ipam.Lease
		if s.Dir() == tx.Dir() {
			ls, _, err = tx.List() // ours is locked by this gc already
		} else {
			ls, err = s.Peek()
		}
		if err != nil {
			return nil, err
		}
		for _, l := range ls {
			named[l.Veth] = true
		}
	}
	var report []string
	for _, v := range candidates {
		if named[v] {
			continue
		}
		if err := c.host.Detach(v, ""); err != nil {
			return report, err
		}
		report = append(report, fmt.Sprintf("%s: deleted veth %s (unlabelled: its setup was killed half-way)", c.Bridge, v))
	}
	return report, nil
}

// dropStalePorts removes the port rules no lease accounts for: those of a
// lease the store lost outright, whose container is gone. The network's
// rules are installed again from the leases, in one atomic restore.
func (c Config) dropStalePorts(tx *ipam.Tx, pubs []nat.Published) ([]string, error) {
	leases, _, err := tx.List()
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, pub := range pubs {
		if !slices.ContainsFunc(leases, func(l ipam.Lease) bool {
			return l.IP == pub.IP && nat.Label(l.ID) == pub.ID && len(l.Ports) > 0
		}) {
			stale = append(stale, fmt.Sprintf("%s: removed the port rules of %s (%s): it has no lease", c.Bridge, pub.ID, pub.IP))
		}
	}
	if len(stale) == 0 {
		return nil, nil
	}
	return stale, c.installFirewall(tx)
}

// reclaim releases the leases whose container is gone, and those of live
// containers whose setup died before it wired them (killed between the
// lease and the veth): no interface, and no process holding the lease
// (ipam.Tx.Pending). Setup runs it before declaring the subnet exhausted.
func (c Config) reclaim(tx *ipam.Tx) ([]string, error) {
	leases, _, err := tx.List()
	if err != nil {
		return nil, err
	}
	var report []string
	for _, l := range leases {
		why := fmt.Sprintf("pid %d is gone or in another namespace", l.PID)
		if alive(l) {
			// Pending first: a setup that finishes between the two checks
			// has its veth by the time it lets go of the lease.
			if tx.Pending(l) {
				continue
			}
			state, err := c.host.State(l.Veth, alias(l.ID))
			if err != nil {
				return report, err
			}
			if state != bridge.Gone {
				continue
			}
			why = fmt.Sprintf("its setup died before pid %d got its veth", l.PID)
		}
		if err := c.forget(tx, l); err != nil {
			return report, err
		}
		report = append(report, fmt.Sprintf("%s: reclaimed %s from %s (%s)", c.Bridge, l.IP, l.ID, why))
	}
	return report, nil
}

// fromKernel rebuilds the lease behind host veth p: its name gives the
// pid, the pid the namespace, and the namespace the peer's address. The
// alias names the container.
func (c Config) fromKernel(p bridge.Port) (ipam.Lease, bool) {
	pid, err := strconv.Atoi(p.Name[strings.LastIndexByte(p.Name, '-')+1:])
	id, ok := strings.CutPrefix(p.Alias, "bridgehook:")
	if err != nil || !ok || CheckID(id) != nil {
		return ipam.Lease{}, false // a hashed long id cannot be recovered
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return ipam.Lease{}, false
	}
	defer ns.Close()
	ino, err := fdInode(int(ns))
	if err != nil {
		return ipam.Lease{}, false
	}
	ip, ok := bridge.PeerAddr(ns, c.Iface, p, c.Subnet)
	if !ok {
		return ipam.Lease{}, false
	}
	return ipam.Lease{ID: id, IP: ip, PID: pid, NetnsInode: ino, Veth: p.Name, Iface: c.Iface}, true
}

// RemoveNetwork removes c's bridge, its firewall rules and its store. It
// refuses, naming them, while containers with live namespaces hold leases.
func RemoveNetwork(c Config) ([]string, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	c, disconnect, err := c.connect()
	if err != nil {
		return nil, err
	}
	defer disconnect()
	store, err := ipam.Open(c.StateDir, c.Bridge, c.Subnet)
	if err != nil {
		return nil, err
	}
	var report []string
	err = store.Do(func(tx *ipam.Tx) error {
		leases, _, err := tx.List()
		if err != nil {
			return err
		}
		var live []string
		for _, l := range leases {
			if alive(l) {
				live = append(live, fmt.Sprintf("%s (%s, pid %d)", l.ID, l.IP, l.PID))
			}
		}
		if len(live) > 0 {
			return inputErr("network %s is in use by %s; stop those containers first", c.Bridge, strings.Join(live, ", "))
		}
		if report, err = c.reclaim(tx); err != nil {
			return err
		}
		if err := tx.ClearNetwork(); err != nil {
			return err
		}
		if err := c.uninstallFirewall(); err != nil {
			return err
		}
		if err := c.host.Remove(c.Bridge); err != nil {
			return err
		}
		report = append(report, fmt.Sprintf("removed bridge %s, its firewall rules and its store", c.Bridge))
		return nil
	})
	if err != nil {
		return report, err
	}
	return report, store.Destroy()
}

func (c Config) uninstallFirewall() error {
	unlock, err := c.lockFirewall()
	if err != nil {
		return err
	}
	defer unlock()
	return nat.New(c.runner()).Uninstall(c.network())
}
