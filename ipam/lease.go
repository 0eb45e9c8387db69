// Package ipam is the lease store: which container holds which address of a
// network, every read-modify-write under one lock per network.
//
// Store and Tx are what callers see; Open gives the one on disk, a
// directory per network under the state directory, and Memory one in
// memory, for tests. The disk layout is private to this package. Both
// choose addresses with the same allocator: how an address is chosen is
// alloc.go (Range).
package ipam

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/bridgehook/bridgehook/port"
)

// ErrExhausted is returned by Allocate when every usable address is leased.
var ErrExhausted = errors.New("no free address")

// ErrCorrupt marks a store file that cannot be read back.
var ErrCorrupt = errors.New("corrupt lease store")

// ErrUnsafe marks a state directory the store will not use.
var ErrUnsafe = errors.New("unsafe state directory")

// ErrTaken is returned by Allocate for an address that is leased, or still
// draining (see Tx.Drain).
var ErrTaken = errors.New("address taken")

// ErrUnusable is returned by Allocate for an address that is not one of
// the network's to lease: outside it, its network address, its gateway or
// its broadcast address.
var ErrUnusable = errors.New("address not leasable")

// AddrError says why Addr, asked for by name, cannot be leased; it wraps
// ErrTaken or ErrUnusable.
type AddrError struct {
	Addr netip.Addr
	Err  error
}

func (e *AddrError) Error() string { return e.Err.Error() }
func (e *AddrError) Unwrap() error { return e.Err }

func addrErr(ip netip.Addr, format string, a ...any) error {
	return &AddrError{Addr: ip, Err: fmt.Errorf(format, a...)}
}

// Lease is one container's addresses and the endpoint that uses them.
type Lease struct {
	ID string `json:"id"`
	// IP is the address from the network's first subnet, which names the
	// lease: IPv4, or IPv6 on an IPv6-only network. IP6 is the IPv6
	// address of a dual-stack network's lease.
	IP    netip.Addr `json:"ip"`
	IP6   netip.Addr `json:"ip6,omitzero"`
	Iface string     `json:"iface,omitempty"`
	Veth  string     `json:"veth,omitempty"`
	PID   int        `json:"pid,omitempty"`
	// Netns is the path of the container's network namespace, for a
	// container that came through CNI (which gives no pid).
	Netns      string         `json:"netns,omitempty"`
	NetnsInode uint64         `json:"netns_inode,omitempty"`
	Ports      []port.Mapping `json:"ports,omitempty"`
	// MAC is the container interface's, when it asked for one; none: the
	// one derived from IP.
	MAC net.HardwareAddr `json:"mac,omitempty"`
	// Names are what the network's name server answers for the lease's
	// addresses, besides its id (see package names).
	Names   []string  `json:"names,omitempty"`
	Created time.Time `json:"created"`
}

// Addrs returns the lease's addresses, IPv4 first.
func (l Lease) Addrs() []netip.Addr {
	if l.IP6.IsValid() {
		return []netip.Addr{l.IP, l.IP6}
	}
	return []netip.Addr{l.IP}
}

// Addr returns the lease's IPv6 address with v6, else its IPv4 one;
// invalid when it has none of that family.
func (l Lease) Addr(v6 bool) netip.Addr {
	for _, ip := range l.Addrs() {
		if ip.Is6() == v6 {
			return ip
		}
	}
	return netip.Addr{}
}

// Store is the lease store of one network (bridge + its subnets).
type Store interface {
	// Do runs fn with the store locked: every read and write of leases
	// happens inside one Do.
	Do(fn func(Tx) error) error
	// Peek returns the leases without taking the lock: each is whole, the
	// set may be a moment old.
	Peek() ([]Lease, error)
	// Recorded reports, without taking the lock, whether the network has
	// a record (Tx.SetRecord): its bridge and rules were set up.
	Recorded() bool
	// Close lets go of the leases this process allocated (see Tx.Pending).
	Close()
	// Destroy removes the store. The caller makes sure no lease is left
	// that anyone cares about.
	Destroy() error
	Bridge() string
	// Subnets are the network's prefixes: one, or an IPv4 and an IPv6
	// one (dual-stack), in that order.
	Subnets() []netip.Prefix
}

// Tx is a store while its lock is held.
type Tx interface {
	// Lookup returns the lease held by container id.
	Lookup(id string) (Lease, bool, error)
	// Allocate leases to want.ID an address from each subnet: the one
	// want names in that family (IP or IP6), or with none the next free
	// address after the last one handed out (so a just-released address
	// is not reused at once), and records want with them, in one write. It does not look for an
	// existing lease of the id: callers decide what a second one means.
	// The lease is pending (see Pending) until the store is closed.
	Allocate(want Lease) (Lease, error)
	// Release frees the lease of container id and returns it. An unknown
	// id is not an error.
	Release(id string) (Lease, bool, error)
	// Remove frees lease l whoever holds it now.
	Remove(l Lease) error
	// Lease returns the lease named by its first address ip.
	Lease(ip netip.Addr) (Lease, bool, error)
	// List returns every lease, and the names of lease records it could
	// not read (they still reserve their addresses).
	List() (leases []Lease, unreadable []string, err error)

	// Drain releases l's id but keeps its address out of use, for a
	// container that is gone while its interface is not yet; Settle
	// frees the address once the interface is gone.
	Drain(l Lease) error
	Draining() ([]Lease, error)
	Settle(l Lease) error

	// Pending reports whether the process that allocated l still runs and
	// has not closed its store: its setup may be between the lease and
	// the container's interface.
	Pending(l Lease) bool

	// Record reads into v what the caller last recorded about the
	// network (SetRecord), reporting false when there is none or it no
	// longer reads; ClearRecord forgets it.
	Record(v any) (bool, error)
	SetRecord(v any) error
	ClearRecord() error

	// Stamp is a line kept beside the record, cheaper to read and write
	// than it (a warm setup and a teardown read and write it): "" when
	// there is none. SetRecord and ClearRecord clear it, so a stamp
	// always speaks of the record that is there.
	Stamp() string
	SetStamp(s string) error

	// Tidy repairs what crashes leave behind: it removes the unreadable
	// lease records List names and the files of interrupted writes, and
	// mends the index. It says what it did, a line per kind of repair.
	Tidy() ([]string, error)
}

// Opener finds the stores of a state directory, one per network: Disk's
// (OnDisk) or, for tests, Memory's (Memories).
type Opener interface {
	// Open is the store of network bridge/subnets, made if need be.
	Open(stateDir, bridge string, subnets ...netip.Prefix) (Store, error)
	// Exists reports whether network bridge/subnets has a store.
	Exists(stateDir, bridge string, subnets ...netip.Prefix) bool
	// All lists every network's store.
	All(stateDir string) ([]Store, error)
	// Claims lists the leases that claim host port p of proto, on any
	// host address, in every network (claims.go); a claim may be stale,
	// and the caller checks the lease behind it.
	Claims(stateDir, proto string, p uint16) ([]Claim, error)
}
