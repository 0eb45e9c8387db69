package names

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/bridgehook/bridgehook/ipam"
)

// table is what one network answers: each lease's names and addresses,
// indexed both ways. Two containers may share a name (an alias given to
// both): the name then answers with all their addresses.
type table struct {
	entries map[string]entry           // by lease file
	byName  map[string]map[string]bool // name -> lease files
	byAddr  map[netip.Addr]string      // address -> lease file
}

// entry is one lease as the table keeps it.
type entry struct {
	names []string // canonical, see Canonical
	addrs []netip.Addr
}

func newTable() *table {
	return &table{entries: map[string]entry{}, byName: map[string]map[string]bool{}, byAddr: map[netip.Addr]string{}}
}

// entryOf is what lease l answers to: its names and its id. A CNI lease's
// id is "CONTAINER_ID/IFNAME"; the container id is the name.
func entryOf(l ipam.Lease) entry {
	id, _, _ := strings.Cut(l.ID, "/")
	var e entry
	for _, s := range append([]string{id}, l.Names...) {
		if n, ok := Canonical(s); ok && !slices.Contains(e.names, n) {
			e.names = append(e.names, n)
		}
	}
	e.addrs = l.Addrs()
	return e
}

// put makes key's entry e, replacing what key had.
func (t *table) put(key string, e entry) {
	t.drop(key)
	t.entries[key] = e
	for _, n := range e.names {
		if t.byName[n] == nil {
			t.byName[n] = map[string]bool{}
		}
		t.byName[n][key] = true
	}
	for _, a := range e.addrs {
		t.byAddr[a] = key
	}
}

// drop forgets key's entry.
func (t *table) drop(key string) {
	e, ok := t.entries[key]
	if !ok {
		return
	}
	delete(t.entries, key)
	for _, n := range e.names {
		delete(t.byName[n], key)
		if len(t.byName[n]) == 0 {
			delete(t.byName, n)
		}
	}
	for _, a := range e.addrs {
		if t.byAddr[a] == key {
			delete(t.byAddr, a)
		}
	}
}

// lookup returns the addresses of canonical name, sorted, and whether the
// network knows the name at all (it may have no address of the family
// asked for).
func (t *table) lookup(name string) ([]netip.Addr, bool) {
	keys, ok := t.byName[name]
	if !ok {
		return nil, false
	}
	var addrs []netip.Addr
	for k := range keys {
		addrs = append(addrs, t.entries[k].addrs...)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs, true
}

// reverse returns the names of the container with address ip.
func (t *table) reverse(ip netip.Addr) ([]string, bool) {
	k, ok := t.byAddr[ip]
	if !ok {
		return nil, false
	}
	return t.entries[k].names, true
}

// Canonical is name as the server matches it: lower case, with the root's
// dot. It refuses what cannot be a DNS name: an empty or a too long name
// or label, or characters other than letters, digits, '-' and '_' (which
// container names may hold).
func Canonical(name string) (string, bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" || len(name) > 253 {
		return "", false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	return name + ".", true
}
