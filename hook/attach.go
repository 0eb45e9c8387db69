package hook

// What a face asks of one network for one container, whichever protocol
// it speaks: join, leave, check, collect, status. The OCI face (Setup,
// Teardown in request.go) and the CNI face (package cni) both come here.

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
)

// Join sets up the container of req on network c.
func Join(c Config, req Request, opts ...Option) (Result, error) {
	return connected(c, opts, func(n *Network) (Result, error) { return n.Setup(req) })
}

// Leave takes the container id off network c; an unknown id is no error.
func Leave(c Config, id string, opts ...Option) (Result, error) {
	if err := checkLeaseID(id); err != nil {
		return Result{}, err
	}
	return connected(c, opts, func(n *Network) (Result, error) { return n.Teardown(id) })
}

// connected runs fn on network c, opened for it and closed after.
func connected(c Config, opts []Option, fn func(*Network) (Result, error)) (Result, error) {
	n, err := Open(c, opts...)
	if err != nil {
		return Result{}, err
	}
	defer n.Close()
	return fn(n)
}

// Check reports what is wrong with container id's attachment to network
// c, nil if nothing: its lease holds addrs, its veth is there, its
// interface has its addresses and a default route for each family of
// gateways, and the network's rules are in place.
func Check(c Config, id string, addrs []netip.Prefix, gateways []netip.Addr, opts ...Option) (ipam.Lease, error) {
	n, err := Open(c, opts...)
	if err != nil {
		return ipam.Lease{}, err
	}
	defer n.Close()
	return n.check(id, addrs, gateways)
}

func (n *Network) check(id string, addrs []netip.Prefix, gateways []netip.Addr) (l ipam.Lease, err error) {
	err = n.store.Do(func(tx ipam.Tx) error {
		var ok bool
		if l, ok, err = tx.Lookup(id); err != nil || !ok {
			return fmt.Errorf("%s has no lease on network %s: %w", id, n.Bridge, err)
		}
		n.adoptFirewall(tx)
		return nil
	})
	if err != nil {
		return l, err
	}
	if have := n.prefixes(l); !slices.Equal(have, addrs) {
		return l, fmt.Errorf("%s holds %v on network %s, not %v", id, have, n.Bridge, addrs)
	}
	if state, err := n.host.State(l.Veth, alias(l.ID)); err != nil || state != bridge.Live {
		return l, fmt.Errorf("veth %s of %s is gone: %v", l.Veth, id, err)
	}
	ns, _, err := n.openNetns(NetnsOf(l))
	if err != nil {
		return l, err
	}
	defer ns.Close()
	if !n.host.Present(ns, l.Iface, addrs) {
		return l, fmt.Errorf("%s in %s lacks %v", l.Iface, id, addrs)
	}
	have := n.host.DefaultGateways(ns)
	for _, gw := range gateways {
		if !slices.ContainsFunc(have, func(h netip.Addr) bool { return h.Is6() == gw.Is6() }) {
			return l, fmt.Errorf("%s has no default route of %s's family", id, gw)
		}
	}
	if ok, err := n.fw.Verify(n.natNetwork()); err != nil || !ok {
		return l, fmt.Errorf("the firewall rules of network %s are gone (run bridgehook repair): %v", n.Bridge, err)
	}
	return l, nil
}

// Collect releases every lease of network c that came by namespace path
// (CNI) and that valid does not keep, with its veth and rules, then does
// what gc does.
func Collect(c Config, valid func(id string) bool, opts ...Option) ([]string, error) {
	return eachNetwork(c, false, true, "gc", func(n *Network, tx ipam.Tx) ([]string, error) {
		leases, _, err := tx.List()
		if err != nil {
			return nil, err
		}
		var report []string
		for _, l := range leases {
			if !NetnsOf(l).ByPath() || valid(l.ID) {
				continue
			}
			if err := n.forget(tx, l); err != nil {
				return report, err
			}
			report = append(report, fmt.Sprintf("%s: released %s of %s (not a valid attachment)", n.Bridge, l.IP, l.ID))
		}
		more, err := n.gc(tx)
		return append(report, more...), err
	}, opts)
}

// Status fails when network c could not take a container: its store or
// its firewall cannot be used.
func Status(c Config, opts ...Option) error {
	n, err := Open(c, opts...)
	if err != nil {
		return err
	}
	defer n.Close()
	return n.store.Do(func(tx ipam.Tx) error {
		if _, _, err := tx.List(); err != nil {
			return err
		}
		rec, known := readRecord(tx)
		if err := n.pickFirewall(rec, known); err != nil {
			return err
		}
		if _, err := n.fw.Published(n.natNetwork()); err != nil {
			return fmt.Errorf("firewall %s: %w", n.Firewall, err)
		}
		return nil
	})
}
