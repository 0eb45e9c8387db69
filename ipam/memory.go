package ipam

import (
	"encoding/json"
	"net/netip"
	"slices"
	"sync"

	"github.com/bridgehook/bridgehook/port"
)

// Memory is a lease store held in memory, with the disk store's rules and
// allocator: for tests of the code above the store, which then need
// neither root nor files. Pending reports the lease allocated last, until
// Close, as if by another process still at work on it.
type Memory struct {
	bridge string
	ranges []Range

	mu       sync.Mutex
	leases   map[netip.Addr]Lease
	draining map[netip.Addr]Lease
	pending  map[netip.Addr]bool
	// v6 holds the IPv6 addresses of a dual-stack network's leases and
	// draining leases.
	v6     map[netip.Addr]bool
	last   [2]netip.Addr
	record []byte
	stamp  string
	// RecordReads counts the reads of the record (Record).
	RecordReads int
	// gone is set by Destroy: Memories then makes the network afresh.
	gone bool
	// Unreadable are addresses whose records List reports as unreadable;
	// they stay reserved until Tidy drops them.
	Unreadable map[netip.Addr]bool
	// Fail, if set, is asked before each change (Allocate, Release,
	// Remove, Drain, Settle, SetRecord, ClearRecord) and fails it with
	// the error it returns.
	Fail func(op string) error
}

// NewMemory returns an empty store for network bridge/subnets.
func NewMemory(bridge string, subnets ...netip.Prefix) (*Memory, error) {
	rs, err := rangesOf(subnets)
	if err != nil {
		return nil, err
	}
	return &Memory{
		bridge: bridge, ranges: rs,
		leases: map[netip.Addr]Lease{}, draining: map[netip.Addr]Lease{}, pending: map[netip.Addr]bool{},
		v6: map[netip.Addr]bool{}, Unreadable: map[netip.Addr]bool{},
	}, nil
}

func (m *Memory) Do(fn func(Tx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fn(memTx{m})
}

func (m *Memory) Peek() ([]Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ls, _, err := memTx{m}.List()
	return ls, err
}

func (m *Memory) Recorded() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.record != nil
}

func (m *Memory) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.pending)
}

func (m *Memory) Destroy() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.leases)
	clear(m.draining)
	clear(m.v6)
	m.record = nil
	m.gone = true
	return nil
}

func (m *Memory) Bridge() string          { return m.bridge }
func (m *Memory) Subnets() []netip.Prefix { return subnetsOf(m.ranges) }

type memTx struct{ m *Memory }

func (t memTx) fail(op string) error {
	if t.m.Fail != nil {
		return t.m.Fail(op)
	}
	return nil
}

func (t memTx) Lookup(id string) (Lease, bool, error) {
	for _, l := range t.m.leases {
		if l.ID == id {
			return l, true, nil
		}
	}
	return Lease{}, false, nil
}

func (t memTx) taken(ip netip.Addr) bool {
	_, leased := t.m.leases[ip]
	_, draining := t.m.draining[ip]
	return leased || draining || t.m.Unreadable[ip]
}

func (t memTx) taken6(ip netip.Addr) bool { return t.m.v6[ip] }

func (t memTx) Allocate(want Lease) (Lease, error) {
	if err := t.fail("allocate"); err != nil {
		return Lease{}, err
	}
	taken := func(i int, ip netip.Addr) bool {
		if i == 1 {
			return t.taken6(ip)
		}
		return t.taken(ip)
	}
	ips, err := choose(t.m.ranges, want, t.m.last[:len(t.m.ranges)], taken, func(int) int { return len(t.m.leases) })
	if err != nil {
		return Lease{}, err
	}
	l := leased(want, ips)
	if l.IP6.IsValid() {
		t.m.v6[l.IP6] = true
	}
	t.m.leases[l.IP] = l
	clear(t.m.pending) // a process holds the lease it allocated last
	t.m.pending[l.IP] = true
	copy(t.m.last[:], ips)
	return l, nil
}

func (t memTx) Release(id string) (Lease, bool, error) {
	l, ok, _ := t.Lookup(id)
	if !ok {
		return Lease{}, false, nil
	}
	return l, true, t.Remove(l)
}

func (t memTx) Remove(l Lease) error {
	if err := t.fail("remove"); err != nil {
		return err
	}
	if held, ok := t.m.leases[l.IP]; ok && held.ID == l.ID {
		delete(t.m.leases, l.IP)
		delete(t.m.pending, l.IP)
		delete(t.m.v6, held.IP6)
	}
	return nil
}

func (t memTx) List() ([]Lease, []string, error) {
	var ls []Lease
	for _, l := range t.m.leases {
		ls = append(ls, l)
	}
	var bad []string
	for ip := range t.m.Unreadable {
		bad = append(bad, ip.String())
	}
	return ls, bad, nil
}

func (t memTx) Drain(l Lease) error {
	if err := t.fail("drain"); err != nil {
		return err
	}
	delete(t.m.leases, l.IP)
	delete(t.m.pending, l.IP)
	t.m.draining[l.IP] = l
	return nil
}

func (t memTx) Draining() ([]Lease, error) {
	var ls []Lease
	for _, l := range t.m.draining {
		ls = append(ls, l)
	}
	return ls, nil
}

func (t memTx) Settle(l Lease) error {
	if err := t.fail("settle"); err != nil {
		return err
	}
	delete(t.m.draining, l.IP)
	delete(t.m.v6, l.IP6)
	return nil
}

func (t memTx) Pending(l Lease) bool { return t.m.pending[l.IP] }

func (t memTx) Lease(ip netip.Addr) (Lease, bool, error) {
	l, ok := t.m.leases[ip]
	return l, ok, nil
}

func (t memTx) Record(v any) (bool, error) {
	t.m.RecordReads++
	if t.m.record == nil {
		return false, nil
	}
	return json.Unmarshal(t.m.record, v) == nil, nil
}

func (t memTx) SetRecord(v any) error {
	if err := t.fail("set record"); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	t.m.record, t.m.stamp = b, ""
	return err
}

func (t memTx) ClearRecord() error {
	if err := t.fail("clear record"); err != nil {
		return err
	}
	t.m.record, t.m.stamp = nil, ""
	return nil
}

func (t memTx) Stamp() string { return t.m.stamp }

func (t memTx) SetStamp(s string) error {
	if err := t.fail("set stamp"); err != nil {
		return err
	}
	t.m.stamp = s
	return nil
}

func (t memTx) Tidy() ([]string, error) {
	var report []string
	for ip := range t.m.Unreadable {
		report = append(report, "discarded unreadable lease record "+ip.String())
	}
	clear(t.m.Unreadable)
	return report, nil
}

var (
	_ Store = (*Memory)(nil)
	_ Tx    = memTx{}
)

// Memories is an Opener of stores in memory, each made on first Open and
// kept, in the order made; Fail is given to each.
type Memories struct {
	Fail   func(op string) error
	stores []*Memory
}

func (ms *Memories) find(bridge string, subnets []netip.Prefix) *Memory {
	ms.stores = slices.DeleteFunc(ms.stores, func(m *Memory) bool { return m.gone })
	for _, m := range ms.stores {
		if m.bridge == bridge && slices.Equal(m.Subnets(), subnets) {
			return m
		}
	}
	return nil
}

func (ms *Memories) Open(_, bridge string, subnets ...netip.Prefix) (Store, error) {
	return ms.Memory(bridge, subnets...)
}

// Memory is Open's store as a *Memory.
func (ms *Memories) Memory(bridge string, subnets ...netip.Prefix) (*Memory, error) {
	if m := ms.find(bridge, subnets); m != nil {
		return m, nil
	}
	m, err := NewMemory(bridge, subnets...)
	if err != nil {
		return nil, err
	}
	m.Fail = ms.Fail
	ms.stores = append(ms.stores, m)
	return m, nil
}

func (ms *Memories) Exists(_, bridge string, subnets ...netip.Prefix) bool {
	return ms.find(bridge, subnets) != nil
}

// Claims finds the claims in every store's leases: the index is the disk
// store's way to avoid that.
func (ms *Memories) Claims(_, proto string, p uint16) ([]Claim, error) {
	all, _ := ms.All("")
	var cs []Claim
	for _, s := range all {
		m := s.(*Memory)
		for _, l := range m.leases {
			for _, q := range l.Ports {
				if q.Proto == proto && q.HostPort <= p && p <= q.HostEnd {
					cs = append(cs, Claim{Bridge: m.bridge, Subnets: m.Subnets(), IP: l.IP,
						Mapping: port.Mapping{Proto: proto, HostIP: q.HostIP, HostPort: p, HostEnd: p}})
				}
			}
		}
	}
	return cs, nil
}

func (ms *Memories) All(string) ([]Store, error) {
	ms.stores = slices.DeleteFunc(ms.stores, func(m *Memory) bool { return m.gone })
	var all []Store
	for _, m := range ms.stores {
		all = append(all, m)
	}
	return all, nil
}
