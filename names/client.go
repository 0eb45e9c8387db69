package names

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// startTimeout bounds how long a setup waits for a server it started, or
// for the running one to take up a new network.
const startTimeout = 5 * time.Second

// Ensure makes sure the server of stateDir runs and serves the network
// whose store is in store. When it does, that is a look at the server's
// lock and the network's marker: a few system calls, no exec, no socket.
// Else it starts one, detached, and waits until it serves the network. A
// setup calls it with the store's lock held and its lease written, so the
// server cannot decide meanwhile that it has nothing left to serve.
func Ensure(stateDir, store string) error {
	deadline := time.Now().Add(startTimeout)
	var lastStart time.Time
	for {
		pid, alive := running(stateDir)
		if alive && servedBy(stateDir, store) == pid {
			return nil
		}
		if !alive && time.Since(lastStart) > time.Second {
			if err := start(stateDir); err != nil {
				return err
			}
			lastStart = time.Now()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("name server of %s did not take up network %s within %v; run \"bridgehook dns --state-dir %s --debug\" to see why",
				stateDir, filepath.Base(store), startTimeout, stateDir)
		}
		time.Sleep(time.Millisecond)
	}
}

// running reports whether a server holds the lock of stateDir, and its
// pid.
func running(stateDir string) (pid int, alive bool) {
	f, err := os.Open(filepath.Join(stateDir, dirName, pidFile))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		return 0, false // free: no server
	}
	var b [20]byte
	n, _ := f.ReadAt(b[:], 0)
	pid, _ = strconv.Atoi(string(b[:n]))
	return pid, pid > 0
}

// Running reports the pid of the server of stateDir, if one runs.
func Running(stateDir string) (int, bool) { return running(stateDir) }

// servedBy is the pid of the server that marked the network of store
// served; 0 for none.
func servedBy(stateDir, store string) int {
	b, err := os.ReadFile(markerOf(stateDir, store))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// start runs "bridgehook dns" for stateDir, fully detached from the
// hook: in a session of its own, its standard streams on /dev/null, no
// descriptor of the hook's (a runtime waits for the hook's output pipes
// to close, and would wait for the server), and none of its environment
// (CNI_COMMAND there would make it a CNI plugin).
func start(stateDir string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start name server: %w", err)
	}
	// Descriptors the hook inherited without close-on-exec would pass to
	// the server; Go's own have it set already.
	unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	cmd := exec.Command(exe, "dns", "--state-dir", stateDir)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start name server: %w", err)
	}
	return cmd.Process.Release()
}
