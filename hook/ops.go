package hook

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
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
//     another namespace) is released, its address drained until its veth
//     is gone (see forget);
//   - a drained address whose veth is gone is freed; a veth that lives on
//     (something else keeps its namespace) is deleted first;
//   - an unreadable lease file is rebuilt from the kernel when a live
//     container still holds its address, else discarded;
//   - a veth on the bridge that no lease accounts for is adopted when a
//     live container is behind it (the store lost its lease), else deleted;
//   - index entries without a lease are pruned, and leases without one
//     get theirs back.
//
// It holds the store's lock throughout, so it is safe while hooks run.
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
	if n, err := c.settle(tx, false); err != nil {
		return report, err
	} else if n > 0 {
		report = append(report, fmt.Sprintf("%s: freed %d addresses of containers whose veths are gone", c.Bridge, n))
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
	for _, l := range append(leases, drained...) { // a drained veth is the kernel's to delete
		ours[l.Veth+" "+alias(l.ID)] = true
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

// reclaim releases the leases whose container is gone, deleting their
// veths if the kernel has not already. Setup runs it before declaring the
// subnet exhausted.
func (c Config) reclaim(tx *ipam.Tx) ([]string, error) {
	leases, _, err := tx.List()
	if err != nil {
		return nil, err
	}
	var report []string
	for _, l := range leases {
		if alive(l) {
			continue
		}
		if err := c.forget(tx, l); err != nil {
			return report, err
		}
		report = append(report, fmt.Sprintf("%s: reclaimed %s from %s (pid %d is gone or in another namespace)", c.Bridge, l.IP, l.ID, l.PID))
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
