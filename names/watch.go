package names

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/ipam"
)

// watcher follows the state directory with inotify: stores that come and
// go, their records, and the leases of the networks with names.
//
// Not fsnotify: a query for a name the server does not know must first
// apply every change queued before it (source.catchUp), and that takes a
// read of the inotify descriptor that does not block, in the handler's
// goroutine. fsnotify reads the descriptor in a goroutine of its own and
// can say nothing of what the kernel has queued and it has not read yet.
type watcher struct {
	fd       int
	stateDir string
	wds      map[int]target
	stores   map[string]int // store dir -> its watch
	leaseWDs map[string]int // store dir -> the watch of its leases
	buf      []byte
}

// target is what a watch is of.
type target struct {
	dir    string // the store's; empty for the state directory
	leases bool
}

const (
	stateEvents = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_ONLYDIR
	storeEvents = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_CLOSE_WRITE | unix.IN_ONLYDIR
	leaseEvents = unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE | unix.IN_CLOSE_WRITE | unix.IN_ONLYDIR
)

func newWatcher(stateDir string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("name server: inotify: %w", err)
	}
	w := &watcher{fd: fd, stateDir: stateDir, wds: map[int]target{}, stores: map[string]int{}, leaseWDs: map[string]int{},
		buf: make([]byte, 64<<10)}
	wd, err := unix.InotifyAddWatch(fd, stateDir, stateEvents)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("name server: watch %s: %w", stateDir, err)
	}
	w.wds[wd] = target{}
	return w, nil
}

// store watches the store in dir for its record and its leases directory.
func (w *watcher) store(dir string) {
	if wd, err := unix.InotifyAddWatch(w.fd, dir, storeEvents); err == nil {
		w.wds[wd] = target{dir: dir}
		w.stores[dir] = wd
	}
}

// leases watches the leases of the store in dir.
func (w *watcher) leases(dir string) {
	if _, ok := w.leaseWDs[dir]; ok {
		return
	}
	if wd, err := unix.InotifyAddWatch(w.fd, ipam.LeasesDir(dir), leaseEvents); err == nil {
		w.wds[wd] = target{dir: dir, leases: true}
		w.leaseWDs[dir] = wd
	}
}

// unleases stops watching the leases of the store in dir.
func (w *watcher) unleases(dir string) {
	if wd, ok := w.leaseWDs[dir]; ok {
		unix.InotifyRmWatch(w.fd, uint32(wd))
		delete(w.wds, wd)
		delete(w.leaseWDs, dir)
	}
}

// forget stops watching the store in dir.
func (w *watcher) forget(dir string) {
	w.unleases(dir)
	if wd, ok := w.stores[dir]; ok {
		unix.InotifyRmWatch(w.fd, uint32(wd))
		delete(w.wds, wd)
		delete(w.stores, dir)
	}
}

// wait blocks until events are queued, or for timeout.
func (w *watcher) wait(timeout time.Duration) error {
	_, err := unix.Poll([]unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}, int(timeout.Milliseconds()))
	if err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("name server: poll: %w", err)
	}
	return nil
}

// drain reads every event queued, without blocking: none, nil.
func (w *watcher) drain() []byte {
	var events []byte
	for {
		n, err := unix.Read(w.fd, w.buf)
		if err != nil || n <= 0 {
			return events
		}
		events = append(events, w.buf[:n]...)
	}
}

// apply applies events (of drain) to s's networks: a lease's change to
// its table at once, and a store's to the set it returns, to be
// refreshed; rescan says events were lost.
func (w *watcher) apply(s *server, events []byte) (changed map[string]bool, rescan bool) {
	changed = map[string]bool{}
	for off := 0; off+unix.SizeofInotifyEvent <= len(events); {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&events[off]))
		name := nameOf(events[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)])
		off += unix.SizeofInotifyEvent + int(ev.Len)
		if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
			rescan = true
			continue
		}
		w.event(s, ev.Wd, ev.Mask, name, changed)
	}
	return changed, rescan
}

func (w *watcher) event(s *server, wd int32, mask uint32, name string, changed map[string]bool) {
	t, ok := w.wds[int(wd)]
	switch {
	case !ok:
	case mask&unix.IN_IGNORED != 0: // the watched directory is gone
		delete(w.wds, int(wd))
		if t.dir != "" && !t.leases {
			delete(w.stores, t.dir)
			s.remove(t.dir)
		}
	case t.dir == "": // the state directory
		if !ipam.IsStoreDir(name) {
			return
		}
		dir := filepath.Join(w.stateDir, name)
		if mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
			s.add(dir)
		} else {
			s.remove(dir)
		}
	case t.leases:
		if n, ok := s.nets[t.dir]; ok && n.named {
			n.leaseChanged(name)
		}
	case name == ipam.RecordFile:
		changed[t.dir] = true
	case name == filepath.Base(ipam.LeasesDir(t.dir)):
		// Made after the store's directory: follow it now.
		if n, ok := s.nets[t.dir]; ok && n.named {
			w.leases(t.dir)
			n.load()
		}
	}
}

// nameOf is an event's file name, NUL-padded by the kernel.
func nameOf(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func (w *watcher) close() { unix.Close(w.fd) }
