package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bridgehook/bridgehook/ipam"
)

// stress scales a count up for `make stress`.
func stress(short, long int) int {
	if os.Getenv("BRIDGEHOOK_STRESS") != "" {
		return long
	}
	return short
}

// parallel runs n hooks at once and fails the test for each that fails.
func (s *sandbox) parallel(n int, state func(i int) string, args func(i int) []string) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if out, err := s.hook(state(i), args(i)...); err != nil {
				s.t.Errorf("hook %d: %v: %s", i, err, out)
			}
		})
	}
	wg.Wait()
}

func sameFlags(int) []string { return nil }

func TestConcurrentHundredOnOneNetwork(t *testing.T) {
	sb := newSandbox(t)
	n := 100
	for round := range stress(1, 5) {
		pids := sb.containers(n)
		sb.parallel(n, func(i int) string { return setupState(fmt.Sprint("r", round, "c", i), pids[i]) }, sameFlags)
		ls := sb.leases("netns0", "172.19.0.0/16")
		distinct := map[netip.Addr]bool{}
		for _, l := range ls {
			distinct[l.IP] = true
		}
		if len(ls) != n || len(distinct) != n || len(sb.veths()) != n {
			t.Fatalf("round %d: %d leases, %d distinct, %d veths; want %d", round, len(ls), len(distinct), len(sb.veths()), n)
		}
		if got := sb.rules(); !slices.Equal(sorted(got), sorted(wantRules)) {
			t.Fatalf("round %d: rules:\n%s", round, strings.Join(got, "\n"))
		}
		sb.parallel(n, func(i int) string { return stopState(fmt.Sprint("r", round, "c", i)) }, sameFlags)
		if len(sb.leases("netns0", "172.19.0.0/16")) != 0 || len(sb.veths()) != 0 {
			t.Fatalf("round %d: after teardown: leases %v, veths %v", round, sb.leases("netns0", "172.19.0.0/16"), sb.veths())
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func TestConcurrentHundredOnFourNetworks(t *testing.T) {
	sb := newSandbox(t)
	n := 100
	pids := sb.containers(n)
	net := func(i int) []string {
		return []string{"--bridge", fmt.Sprint("br", i%4), "--subnet", fmt.Sprintf("10.10.%d.0/24", i%4)}
	}
	sb.parallel(n, func(i int) string { return setupState(fmt.Sprint("c", i), pids[i]) }, net)
	for k := range 4 {
		ls := sb.leases(fmt.Sprint("br", k), fmt.Sprintf("10.10.%d.0/24", k))
		distinct := map[netip.Addr]bool{}
		for _, l := range ls {
			distinct[l.IP] = true
		}
		if len(ls) != n/4 || len(distinct) != n/4 {
			t.Errorf("br%d: %d leases, %d distinct; want %d", k, len(ls), len(distinct), n/4)
		}
	}
	rules := sb.rules()
	seen := map[string]bool{}
	for _, r := range rules {
		if seen[r] {
			t.Errorf("rule twice: %s", r)
		}
		seen[r] = true
	}
	if len(rules) != 4*len(wantRules) {
		t.Errorf("%d rules for 4 networks, want %d", len(rules), 4*len(wantRules))
	}
	sb.parallel(n, func(i int) string { return stopState(fmt.Sprint("c", i)) }, net)
	if v := sb.veths(); len(v) != 0 {
		t.Errorf("veths left: %v", v)
	}
}

// TestKilledHooksLeaveARecoverableStore kills hooks with SIGKILL at random
// moments of setup and teardown, and kills some containers without a
// teardown, then checks that the store still reads, that gc brings store
// and kernel into agreement, and that new setups work.
func TestKilledHooksLeaveARecoverableStore(t *testing.T) {
	sb := newSandbox(t, "--subnet", "10.77.0.0/24")
	const subnet = "10.77.0.0/24"
	rounds := stress(60, 600)
	var started, injected, finished int
	var live []int
	run := func(state string) {
		c := sb.bridgehook(state)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		started++
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case <-done:
			finished++
		// A warm setup takes about 10 ms here, a cold one 30: kills land
		// anywhere in either, and some hooks finish.
		case <-time.After(time.Duration(rand.IntN(40000)) * time.Microsecond):
			c.Process.Signal(syscall.SIGKILL)
			if err := <-done; err != nil && strings.Contains(err.Error(), "killed") {
				injected++
			} else {
				finished++
			}
		}
	}
	for i := range rounds {
		pid := sb.container()
		id := fmt.Sprint("k", i)
		if i%3 == 0 {
			// A third of the setups go the cold way, installing the rules:
			// kills land there too, not only in warm setups.
			sb.do("netns0", subnet, func(tx ipam.Tx) error { return tx.ClearRecord() })
		}
		run(setupState(id, pid))
		switch rand.IntN(3) {
		case 0:
			run(stopState(id))
			syscall.Kill(pid, syscall.SIGKILL)
		case 1: // the container dies without a poststop
			syscall.Kill(pid, syscall.SIGKILL)
		default:
			live = append(live, pid)
		}
		if len(live) > 40 { // stay well inside the subnet
			syscall.Kill(live[0], syscall.SIGKILL)
			live = live[1:]
		}
	}
	t.Logf("%d hooks run, %d killed mid-flight, %d finished", started, injected, finished)
	if injected < rounds/4 {
		t.Errorf("only %d kills landed mid-flight", injected)
	}

	// The next hook reads the store without error.
	var nets []json.RawMessage
	stdout, stderr, code := sb.run("", "ls", "--json")
	if code != 0 || json.Unmarshal([]byte(stdout), &nets) != nil || strings.Contains(stdout, "unreadable") {
		t.Fatalf("ls after the kills: exit %d %s %s", code, stdout, stderr)
	}
	gcOut, stderr, code := sb.run("", "gc")
	if code != 0 {
		t.Fatalf("gc: exit %d %s %s", code, gcOut, stderr)
	}
	// Store and kernel agree: every veth has its lease, every lease a live
	// namespace, no address twice.
	leases := sb.leases("netns0", subnet)
	byVeth := map[string]ipam.Lease{}
	ips := map[netip.Addr]string{}
	for _, l := range leases {
		if other, dup := ips[l.IP]; dup {
			t.Errorf("%s leased to %s and %s", l.IP, other, l.ID)
		}
		ips[l.IP] = l.ID
		byVeth[l.Veth] = l
		if ino, err := inodeOf(fmt.Sprintf("/proc/%d/ns/net", l.PID)); err != nil || ino != l.NetnsInode {
			t.Errorf("lease %s (%s) outlived its namespace", l.ID, l.IP)
		}
	}
	veths := sb.veths()
	for _, v := range veths {
		if _, ok := byVeth[v]; !ok {
			l, _ := sb.nl.LinkByName(v)
			t.Errorf("veth %s has no lease: alias %q master %d nsid %d gc said %q", v, l.Attrs().Alias, l.Attrs().MasterIndex, l.Attrs().NetNsID, gcOut)
		}
	}
	// A setup killed between its lease and its veth left a lease that gc
	// released: every lease left is wired.
	for v, l := range byVeth {
		if !slices.Contains(veths, v) {
			t.Errorf("lease %s (%s) has no veth %s", l.ID, l.IP, v)
		}
	}
	// gc left nothing to do: no temp file, no index entry, no veth.
	if stdout, _, _ := sb.run("", "gc"); strings.TrimSpace(stdout) != "nothing to do" {
		t.Errorf("second gc: %q", stdout)
	}
	seen := map[string]bool{}
	for _, r := range sb.rules() {
		if seen[r] {
			t.Errorf("rule twice after the kills: %s", r)
		}
		seen[r] = true
	}
	for i := range 5 {
		sb.mustHook(setupState(fmt.Sprint("after", i), sb.container()))
	}
	var want []string
	for _, r := range wantRules {
		want = append(want, strings.ReplaceAll(r, "172.19.0.0/16", subnet))
	}
	if got := sb.rules(); !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("rules after recovery:\n%s", strings.Join(got, "\n"))
	}
	t.Logf("after gc: %d leases, all with a live namespace and a veth; 5 new setups done", len(leases))
}

// TestFullOrReadOnlyStateDir: setup fails with a clear error and leaves no
// veth, bridge or rule behind.
func TestFullOrReadOnlyStateDir(t *testing.T) {
	for _, tc := range []struct {
		name, opts, want string
	}{
		{"full", "size=64k,mode=0700", "no space left"},
		{"read-only", "ro,mode=0700", "read-only file system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSandbox(t)
			dir := filepath.Join(sb.stateDir, "small")
			os.Mkdir(dir, 0o700)
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", tc.opts, "tmpfs", dir).CombinedOutput(); err != nil {
				t.Fatalf("mount: %v %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", dir).Run() })
			if tc.name == "full" {
				// Fill it, leaving no room for a lease.
				exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(dir, "fill"), "bs=4k").Run()
			}
			sb.flags = []string{"--state-dir", dir}
			out, err := sb.hook(setupState("c1", sb.container()))
			if err == nil || !strings.Contains(out, tc.want) || strings.Count(out, "\n") != 1 {
				t.Fatalf("setup: %v %q, want one line with %q", err, out, tc.want)
			}
			if v := sb.veths(); len(v) != 0 {
				t.Errorf("veths left: %v", v)
			}
			if _, err := sb.nl.LinkByName("netns0"); err == nil {
				t.Error("bridge left")
			}
			if r := sb.rules(); len(r) != 0 {
				t.Errorf("rules left: %v", r)
			}
		})
	}
}

func TestUnsafeStateDirIsRefused(t *testing.T) {
	sb := newSandbox(t)
	real := filepath.Join(sb.stateDir, "real")
	os.Mkdir(real, 0o700)
	link := filepath.Join(sb.stateDir, "link")
	os.Symlink(real, link)
	open := filepath.Join(sb.stateDir, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	for dir, want := range map[string]string{link: "is a symlink", open: "writable by group or others"} {
		sb.flags = []string{"--state-dir", dir}
		out, err := sb.hook(setupState("c1", sb.container()))
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("--state-dir %s: %v %q, want %q", dir, err, out, want)
		}
	}
	sb.flags = []string{"--state-dir", real}
	sb.assertEmpty()
}

// TestReusedPidIsNotTouched: a lease whose pid now belongs to another
// container (another namespace) must not cost that container anything.
func TestReusedPidIsNotTouched(t *testing.T) {
	sb := newSandbox(t)
	pid := sb.container()
	sb.mustHook(setupState("new", pid))
	// Forge the lease an older container with the same pid would have
	// left: same pid and veth name, another namespace.
	forge := func(id string) {
		sb.do("netns0", "172.19.0.0/16", func(tx ipam.Tx) error {
			_, err := tx.Allocate(ipam.Lease{ID: id, PID: pid, NetnsInode: 1, Veth: fmt.Sprint("netnsv0-", pid), Iface: "eth0"})
			return err
		})
	}
	forge("old")
	if eps := sb.ls()[0].Endpoints; eps[1].ID != "old" || eps[1].Status != "stale" {
		t.Errorf("the forged lease should show stale: %+v", eps)
	}
	sb.mustHook(stopState("old"))
	if _, err := inside(t, pid).LinkByName("eth0"); err != nil {
		t.Fatal("teardown of the old id took the new container's eth0")
	}
	sb.mustHook(setupState("old2", sb.container()))
	forge("old3")
	if stdout, _, _ := sb.run("", "gc"); !strings.Contains(stdout, "reclaimed") {
		t.Errorf("gc did not reclaim the stale lease: %q", stdout)
	}
	if _, err := inside(t, pid).LinkByName("eth0"); err != nil {
		t.Fatal("gc took the new container's eth0")
	}
	if l, ok := sb.lease("new", "172.19.0.0/16"); !ok || l.PID != pid {
		t.Error("gc released the new container's lease")
	}
}
