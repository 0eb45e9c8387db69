package names

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/ipam"
)

// The server's own files, in the state directory's "names" directory:
// pidFile, locked by the running server and holding its pid, and a marker
// per network it serves, named for the network's store and holding the
// pid too. A setup trusts a marker only with the pid of the server that
// holds the lock, so one left by a dead server vouches for nothing.
const (
	dirName = "names"
	pidFile = "pid"
)

// Serve runs the name server of stateDir until no network under it with
// names has a container, or ctx ends. It returns at once, with no error,
// when another server holds stateDir.
func Serve(ctx context.Context, stateDir string, log *slog.Logger) error {
	s, err := newServer(stateDir, log)
	if err != nil || s == nil {
		return err
	}
	defer s.close()
	return s.run(ctx)
}

// server serves the networks of one state directory.
type server struct {
	stateDir, dir string
	pid           *os.File // locked while this server runs
	log           *slog.Logger
	fwd           *forwarder

	// readMu orders the reads of the watcher (catchUp).
	readMu sync.Mutex
	// mu guards what follows. Handlers take it to read; the store's
	// changes are applied under it.
	mu   sync.RWMutex
	w    *watcher
	nets map[string]*network // by store directory
	// busy says the last try to end found a store locked: a setup or a
	// teardown under way, soon over.
	busy bool
}

// network is one store under the state directory, and what the server
// does for it when its record has names.
type network struct {
	s     *server
	dir   string
	named bool
	cfg   Network
	table *table
	// socks are the sockets it listens on, nil while it is not served;
	// unbound says a bind failed and is tried again.
	socks   *sockets
	unbound bool
}

func newServer(stateDir string, log *slog.Logger) (*server, error) {
	dir := filepath.Join(stateDir, dirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("name server: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, pidFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("name server: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			log.Debug("another name server runs", "state-dir", stateDir)
			return nil, nil
		}
		return nil, fmt.Errorf("name server: lock %s: %w", f.Name(), err)
	}
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("name server: %w", err)
	}
	s := &server{stateDir: stateDir, dir: dir, pid: f, log: log, fwd: newForwarder(HostResolvConfs), nets: map[string]*network{}}
	if s.w, err = newWatcher(stateDir); err != nil {
		f.Close()
		return nil, err
	}
	s.mu.Lock()
	s.rescan()
	s.mu.Unlock()
	return s, nil
}

// run applies the store's changes as they come, and ends the server when
// it has nothing left to serve.
func (s *server) run(ctx context.Context) error {
	for ctx.Err() == nil {
		wait := time.Second
		if s.pending() || s.busy {
			wait = 50 * time.Millisecond
		}
		if err := s.w.wait(wait); err != nil {
			return err
		}
		s.catchUp()
		s.retry()
		if s.done() {
			return nil
		}
	}
	return nil
}

// catchUp applies the changes to the store that the kernel has queued:
// the run loop calls it when there are some, and every query before it is
// answered, so that an answer reflects every setup and teardown that
// returned before the query came. With none queued, it costs one read
// that does not block.
func (s *server) catchUp() {
	// In order: the events of one read are applied before the next read.
	s.readMu.Lock()
	defer s.readMu.Unlock()
	events := s.w.drain()
	if len(events) == 0 {
		return
	}
	s.mu.Lock()
	s.apply(events)
	s.mu.Unlock()
}

// retry tries again the binds that failed.
func (s *server) retry() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.nets {
		if n.unbound {
			n.refresh()
		}
	}
}

// apply brings the networks up to date with the watcher's events.
func (s *server) apply(events []byte) {
	changed, rescan := s.w.apply(s, events)
	if rescan {
		s.rescan()
		for _, n := range s.nets {
			if n.named {
				n.load()
			}
		}
	}
	for _, n := range s.nets {
		if changed[n.dir] || rescan {
			n.refresh()
		}
	}
}

// rescan finds every store under the state directory anew: at start, and
// when the watcher lost events.
func (s *server) rescan() {
	ents, _ := os.ReadDir(s.stateDir)
	seen := map[string]bool{}
	for _, e := range ents {
		if e.IsDir() && ipam.IsStoreDir(e.Name()) {
			dir := filepath.Join(s.stateDir, e.Name())
			seen[dir] = true
			s.add(dir)
		}
	}
	for dir := range s.nets {
		if !seen[dir] {
			s.remove(dir)
		}
	}
}

// add starts following the store in dir.
func (s *server) add(dir string) {
	n, ok := s.nets[dir]
	if !ok {
		n = &network{s: s, dir: dir, table: newTable()}
		s.nets[dir] = n
		s.w.store(dir)
	}
	n.refresh()
}

// remove stops serving the store in dir, which is gone.
func (s *server) remove(dir string) {
	n, ok := s.nets[dir]
	if !ok {
		return
	}
	n.unname()
	s.w.forget(dir)
	delete(s.nets, dir)
}

// refresh reads the network's record again: a network that has names is
// bound and its leases followed; one that lost them is let go.
func (n *network) refresh() {
	var rec struct {
		Names *Network `json:"names"`
	}
	ok, _ := ipam.ReadRecord(n.dir, &rec)
	if !ok || rec.Names == nil {
		n.unname()
		return
	}
	if n.named && !slices.Equal(n.cfg.Gateways, rec.Names.Gateways) {
		n.unbind()
	}
	if !n.named {
		n.named = true
		n.s.w.leases(n.dir)
		n.load()
	}
	n.cfg = *rec.Names
	if n.socks == nil {
		n.bind()
	}
}

// unname forgets the network's names and stops serving it.
func (n *network) unname() {
	if !n.named {
		return
	}
	n.named = false
	n.s.w.unleases(n.dir)
	n.table = newTable()
	n.unbind()
}

// load reads every lease of the network into its table.
func (n *network) load() {
	n.table = newTable()
	ents, _ := os.ReadDir(ipam.LeasesDir(n.dir))
	for _, e := range ents {
		n.leaseChanged(e.Name())
	}
}

// leaseChanged reads the lease file name again: a new or replaced lease,
// or one gone.
func (n *network) leaseChanged(name string) {
	l, ok, err := ipam.ReadLease(n.dir, name)
	if err != nil || !ok {
		n.table.drop(name)
		return
	}
	n.table.put(name, entryOf(l))
}

// bind listens on each gateway address, UDP and TCP, and marks the
// network served. Any failure (an address not yet on the bridge) leaves
// it unbound, to be tried again.
func (n *network) bind() {
	h := handler{src: n, fwd: n.s.fwd}
	socks := newSockets()
	var serve []func()
	for _, gw := range n.cfg.Gateways {
		at := netip.AddrPortFrom(gw.Addr(), 53).String()
		pc, err := net.ListenPacket("udp", at)
		if err == nil {
			socks.add(pc)
			serve = append(serve, func() { serveUDP(pc, h) })
			var ln net.Listener
			if ln, err = net.Listen("tcp", at); err == nil {
				socks.add(ln)
				serve = append(serve, func() { serveTCP(ln, h, socks) })
			}
		}
		if err != nil {
			socks.close()
			if !n.unbound {
				n.s.log.Warn("cannot listen yet; trying again", "network", filepath.Base(n.dir), "err", err)
			}
			n.unbound = true
			return
		}
	}
	for _, f := range serve {
		go f()
	}
	n.socks, n.unbound = socks, false
	// The sockets are bound: a query sent from now on is queued for its
	// server, so the network counts as served.
	if err := os.WriteFile(n.marker(), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		n.s.log.Warn("cannot mark network served", "err", err)
	}
	n.s.log.Debug("serving", "network", filepath.Base(n.dir), "at", n.cfg.Servers())
}

// unbind stops listening, and ends the connections it accepted.
func (n *network) unbind() {
	os.Remove(n.marker())
	if n.socks != nil {
		n.socks.close()
	}
	n.socks, n.unbound = nil, false
}

func (n *network) marker() string { return markerOf(n.s.stateDir, n.dir) }

func markerOf(stateDir, store string) string {
	return filepath.Join(stateDir, dirName, filepath.Base(store))
}

// The handler's view of the network (source).

func (n *network) config() Network {
	n.s.mu.RLock()
	defer n.s.mu.RUnlock()
	return n.cfg
}

func (n *network) lookup(name string) ([]netip.Addr, bool) {
	n.s.mu.RLock()
	defer n.s.mu.RUnlock()
	return n.table.lookup(name)
}

func (n *network) reverse(ip netip.Addr) ([]string, bool) {
	n.s.mu.RLock()
	defer n.s.mu.RUnlock()
	return n.table.reverse(ip)
}

func (n *network) catchUp() { n.s.catchUp() }

// pending reports whether a bind waits to be tried again.
func (s *server) pending() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, n := range s.nets {
		if n.unbound {
			return true
		}
	}
	return false
}

// done ends the server when no network with names has a container. It
// holds the lock of every such network's store while it lets go of its
// own, so that no setup can lease an address meanwhile and then find this
// server still running; a store whose lock is busy has a setup under way,
// and the server stays.
func (s *server) done() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var named []string
	for dir, n := range s.nets {
		if !n.named {
			continue
		}
		if len(n.table.entries) > 0 {
			return false
		}
		named = append(named, dir)
	}
	slices.Sort(named)
	return s.release(named)
}

// release holds the locks of the stores in dirs, checks each has no
// lease, then stops serving and lets go of the server's lock.
func (s *server) release(dirs []string) bool {
	if len(dirs) == 0 {
		for _, n := range s.nets {
			n.unbind()
		}
		s.pid.Close() // the next setup starts another server
		s.pid = nil
		return true
	}
	store, err := ipam.OpenDir(dirs[0])
	if err != nil {
		return s.release(dirs[1:]) // gone
	}
	released := false
	ok, err := store.TryDo(func(tx ipam.Tx) error {
		ls, bad, err := tx.List()
		if err == nil && len(ls)+len(bad) == 0 {
			released = s.release(dirs[1:])
		}
		return err
	})
	s.busy = !ok
	return ok && err == nil && released
}

func (s *server) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.nets {
		n.unbind()
	}
	if s.pid != nil {
		s.pid.Close()
	}
	s.w.close()
}
