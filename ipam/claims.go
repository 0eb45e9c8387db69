package ipam

// The index of host-port claims. Published ports are unique across every
// network of a state directory, so a setup with ports must find who else
// claims them; reading every lease of every network for that grows with
// the host. Instead each claimed port has a directory,
// STATE_DIR/ports/PROTO-PORT, and each lease that claims it an entry
// there, HOSTADDR@STORE@ADDR (a symlink to ADDR): the host address (or
// "any"), the claiming lease's store and its address. A setup reads only
// its own ports' directories. Entries are written with the lease and
// removed with it, under the store's lock; one left by a crash points at a
// lease that is gone or claims the port no more, and readers check the
// lease itself (see hook's checkPorts). Tidy writes those a lease lacks
// and removes those of its store that no lease stands behind.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/bridgehook/bridgehook/port"
)

// Claim is one lease's claim of a host port.
type Claim struct {
	Bridge  string
	Subnets []netip.Prefix
	// IP is the claiming lease's address (its first): Tx.Lease reads it.
	IP netip.Addr
	// Mapping is the port claimed: one host port, on HostIP or on every
	// host address.
	Mapping port.Mapping
}

func claimsDir(stateDir string) string { return filepath.Join(stateDir, "ports") }

func portDir(stateDir, proto string, p uint16) string {
	return filepath.Join(claimsDir(stateDir), proto+"-"+strconv.Itoa(int(p)))
}

func hostToken(ip netip.Addr) string {
	if !ip.IsValid() {
		return "any"
	}
	return ip.String()
}

// claimEntries are the index entries of lease l of the store in dir.
func claimEntries(dir string, l Lease) []string {
	stateDir, store := filepath.Dir(dir), filepath.Base(dir)
	var es []string
	for _, m := range l.Ports {
		for p := uint32(m.HostPort); p <= uint32(m.HostEnd); p++ {
			es = append(es, filepath.Join(portDir(stateDir, m.Proto, uint16(p)), hostToken(m.HostIP)+"@"+store+"@"+l.IP.String()))
		}
	}
	return es
}

// writeClaims indexes l's ports.
func writeClaims(dir string, l Lease) error {
	for _, e := range claimEntries(dir, l) {
		if err := os.MkdirAll(filepath.Dir(e), dirMode); err != nil {
			return fmt.Errorf("index host ports: %w", err)
		}
		if err := os.Symlink(l.IP.String(), e); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("index host ports: %w", err)
		}
	}
	return nil
}

// removeClaims takes l's ports out of the index. A port's directory is
// left: removing it would race with a claim being written in it.
func removeClaims(dir string, l Lease) error {
	for _, e := range claimEntries(dir, l) {
		if err := os.Remove(e); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unindex host ports: %w", err)
		}
	}
	return nil
}

// indexedFile marks a store whose leases' claims are in the index: every
// store made since the index was, and older ones once indexAll has seen
// them.
const indexedFile = "ports-indexed"

var (
	indexedMu sync.Mutex
	indexed   = map[string]bool{} // state directories indexAll has seen
)

func markIndexed(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, indexedFile), os.O_CREATE|os.O_WRONLY, fileMode)
	if err != nil {
		return err
	}
	return f.Close()
}

// indexAll indexes the claims of the stores under stateDir that were
// written before the index: a look at each store's marker, the cost of
// the number of networks, not of leases.
func indexAll(stateDir string) error {
	ents, err := os.ReadDir(stateDir)
	if err != nil {
		return nil // no stores: nothing to index
	}
	for _, e := range ents {
		dir := filepath.Join(stateDir, e.Name())
		if !e.IsDir() || !IsStoreDir(e.Name()) {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, indexedFile)); err == nil {
			continue
		}
		s, err := OpenDir(dir)
		if err != nil {
			continue
		}
		err = s.Do(func(tx Tx) error {
			t := tx.(*diskTx)
			ls, _, err := t.List()
			if err == nil {
				_, err = t.tidyClaims(ls)
			}
			if err == nil {
				err = markIndexed(dir)
			}
			return err
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("index host ports of %s: %w", e.Name(), err)
		}
	}
	return nil
}

// Claims lists the claims of host port p of proto under stateDir, on any
// host address: one directory read. Entries are taken as they are; the
// caller checks the lease behind each. The caller holds the ports lock,
// and may take stores' locks (to index the leases of older stores).
func Claims(stateDir, proto string, p uint16) ([]Claim, error) {
	indexedMu.Lock()
	if !indexed[stateDir] {
		if err := indexAll(stateDir); err != nil {
			indexedMu.Unlock()
			return nil, err
		}
		indexed[stateDir] = true // once per process: a hook asks for many ports
	}
	indexedMu.Unlock()
	ents, err := os.ReadDir(portDir(stateDir, proto, p))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("host port claims: %w", err)
	}
	var cs []Claim
	for _, e := range ents {
		host, rest, ok1 := strings.Cut(e.Name(), "@")
		store, addr, ok2 := strings.Cut(rest, "@")
		bridge, subnets, ok3 := parseDir(store)
		ip, err := netip.ParseAddr(addr)
		if !ok1 || !ok2 || !ok3 || err != nil {
			continue
		}
		m := port.Mapping{Proto: proto, HostPort: p, HostEnd: p}
		if host != "any" {
			if m.HostIP, err = netip.ParseAddr(host); err != nil {
				continue
			}
		}
		cs = append(cs, Claim{Bridge: bridge, Subnets: subnets, IP: ip, Mapping: m})
	}
	return cs, nil
}

// tidyClaims writes the entries ls lack, and removes those of this store
// whose lease is gone or claims the port no more.
func (t *diskTx) tidyClaims(ls []Lease) (int, error) {
	want := map[string]bool{} // PORTDIR/ENTRY
	for _, l := range ls {
		if err := writeClaims(t.s.dir, l); err != nil {
			return 0, err
		}
		for _, e := range claimEntries(t.s.dir, l) {
			want[filepath.Join(filepath.Base(filepath.Dir(e)), filepath.Base(e))] = true
		}
	}
	dirs, err := os.ReadDir(claimsDir(filepath.Dir(t.s.dir)))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("host port claims: %w", err)
	}
	removed := 0
	ours := "@" + filepath.Base(t.s.dir) + "@"
	for _, d := range dirs {
		p := filepath.Join(claimsDir(filepath.Dir(t.s.dir)), d.Name())
		ents, _ := os.ReadDir(p)
		for _, e := range ents {
			if strings.Contains(e.Name(), ours) && !want[filepath.Join(d.Name(), e.Name())] {
				if err := os.Remove(filepath.Join(p, e.Name())); err == nil {
					removed++
				}
			}
		}
	}
	return removed, nil
}
