package hook

// What a face hands the orchestration: one container's request, checked
// against its network before anything is touched, whichever face built it.
// What it gets back is setup.go's Result.

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/names"
	"github.com/bridgehook/bridgehook/port"
)

// Request is one container asking to join a network: the OCI face (package
// oci) builds it from a runtime's state, the CNI face (package cni) from
// CNI's environment and configuration.
type Request struct {
	// ID keys the container's lease: its container id, or for CNI
	// "CONTAINER_ID/IFNAME".
	ID    string
	Netns Netns
	Ports []port.Mapping
	// IP and IP6 are the static addresses asked for; invalid: any free
	// address of that family.
	IP, IP6 netip.Addr
	// MAC is the container interface's address; nil: one derived from
	// its IP address.
	MAC net.HardwareAddr
	// Rootfs is the container's root, where resolv.conf is written when
	// the network has name servers to give.
	Rootfs string
	// Names are what the container answers to on a network with names,
	// besides its id: its hostname, its name, its aliases.
	Names []string
}

// Check refuses what network c cannot give req: ports on an internal
// network, an address (static, or a port's host address) of a family the
// network has no subnet of, a namespace named twice or not at all.
func (req Request) Check(c Config) error {
	if err := checkLeaseID(req.ID); err != nil {
		return err
	}
	if err := req.Netns.check(); err != nil {
		return err
	}
	if len(req.Ports) > 0 && c.Internal {
		return input.Errorf(input.Ports, ": network %s is {internal}, so nothing can be published on it", c.Bridge)
	}
	for _, p := range req.Ports {
		if p.HostIP.IsValid() && !c.has(p.HostIP.Is6()) {
			return input.Errorf(input.Ports, ": %s: network %s has no %s subnet; publish on a host address of its family, or none",
				p, c.Bridge, familyName(p.HostIP.Is6()))
		}
	}
	for _, a := range []struct {
		field input.Field
		ip    netip.Addr
		v6    bool
	}{{input.IP, req.IP, false}, {input.IP6, req.IP6, true}} {
		switch {
		case !a.ip.IsValid():
		case a.ip.Is6() != a.v6 || a.ip.Zone() != "":
			return input.Errorf(a.field, "%q is not an %s address", a.ip, familyName(a.v6))
		case !c.has(a.v6):
			return input.Errorf(a.field, ": network %s has no %s subnet ({subnet} %v)", c.Bridge, familyName(a.v6), c.Subnets)
		}
	}
	for _, s := range req.Names {
		if _, ok := names.Canonical(s); !ok {
			return input.Errorf(input.Aliases, "%q is not a name: want letters, digits, '-' and '_', in labels of up to 63 separated by dots", s)
		}
	}
	if req.MAC != nil && (len(req.MAC) != 6 || req.MAC[0]&1 != 0) {
		return input.Errorf(input.MAC, "%q is not a unicast Ethernet address", req.MAC)
	}
	return nil
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// Netns names a container's network namespace: by its process (the OCI
// face) or by the path of a bind mount of it (CNI).
type Netns struct {
	PID  int
	Path string
}

// NetnsOf is the namespace lease l was made for.
func NetnsOf(l ipam.Lease) Netns { return Netns{PID: l.PID, Path: l.Netns} }

// ByPath reports whether ns is named by path.
func (ns Netns) ByPath() bool { return ns.Path != "" }

// String names ns for a person: its process's pid, or its path.
func (ns Netns) String() string {
	if ns.ByPath() {
		return ns.Path
	}
	return fmt.Sprintf("pid %d", ns.PID)
}

func (ns Netns) check() error {
	switch {
	case ns.ByPath() && ns.PID != 0:
		return input.Errorf(input.Netns, ": both pid %d and path %s given; want one", ns.PID, ns.Path)
	case !ns.ByPath() && ns.PID <= 0:
		return input.Errorf(input.Netns, ": pid %d; want the pid of the container's process, or a namespace's path", ns.PID)
	}
	return nil
}
