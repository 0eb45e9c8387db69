package e2e

// Helpers for the privileged tests: a sandbox host (a network namespace of
// the test's own, removed in cleanup whatever happens) and "containers"
// (processes in network namespaces of their own inside it).

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/names"
)

var binary string // the bridgehook binary under test

// repo is the path of a file of the repository, from this directory.
func repo(path string) string { return filepath.Join("..", "..", path) }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bridgehook-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // TestRefusesToRunAsNonRoot runs it as nobody
	binary = filepath.Join(dir, "bridgehook")
	build := exec.Command("go", "build", "-o", binary, "github.com/bridgehook/bridgehook")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build does
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build bridgehook: %v\n%s", err, out)
		os.Exit(1)
	}
	sweepSandboxes()
	code := m.Run()
	// Every test ends what it started: a process of the binary still
	// running (a name server, say) is a leak.
	if leaked := processesOf(binary); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "leaked processes of %s: %v\n", binary, leaked)
		for _, pid := range leaked {
			unix.Kill(pid, unix.SIGKILL)
		}
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

const sandboxPrefix = "bh-test-"

// sweepSandboxes removes the sandboxes of earlier test runs that were
// killed before their cleanup could run (a test timeout, say).
func sweepSandboxes() {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), sandboxPrefix)
		if !ok {
			continue
		}
		pid, _ := strconv.Atoi(strings.Split(rest, "-")[0])
		if pid > 0 && syscall.Kill(pid, 0) == nil {
			continue // a test run still going
		}
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// requireRoot skips a privileged test when not root, and fails it when
// root but a tool is missing: a skipped proof is no proof.
func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: run make test as root")
	}
	for _, tool := range append([]string{"ip", "nsenter", "unshare", "iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore", "nft"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install it (see .ci/run)", tool)
		}
	}
}

var sandboxSeq atomic.Int64

type sandbox struct {
	t        *testing.T
	name     string
	path     string // /run/netns/NAME
	ns       netns.NsHandle
	nl       *netlink.Handle // netlink inside the sandbox
	stateDir string
	flags    []string // network flags for every hook run
	env      []string // added to the environment of every hook run
}

func newSandbox(t *testing.T, flags ...string) *sandbox {
	t.Helper()
	requireRoot(t)
	name := fmt.Sprintf("%s%d-%d", sandboxPrefix, os.Getpid(), sandboxSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	// The state dir is on tmpfs, as the default /run/bridgehook is: fsync
	// costs there what it costs in production.
	stateDir, err := os.MkdirTemp("/run", "bridgehook-test-")
	if err != nil {
		t.Fatal(err)
	}
	s := &sandbox{t: t, name: name, path: "/run/netns/" + name, stateDir: stateDir}
	t.Cleanup(func() {
		if s.nl != nil {
			s.nl.Close()
		}
		s.ns.Close()
		// A name server a setup started would keep the sandbox alive.
		stopNameServer(stateDir)
		os.RemoveAll(stateDir)
		// Everything the hook made lives in the sandbox: bridge, veths and
		// rules go with it.
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
		checkHostUntouched(t)
	})
	if s.ns, err = netns.GetFromPath(s.path); err != nil {
		t.Fatal(err)
	}
	if s.nl, err = netlink.NewHandleAt(s.ns, unix.NETLINK_ROUTE); err != nil {
		t.Fatal(err)
	}
	lo, err := s.nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	s.flags = append([]string{"--state-dir", s.stateDir, "--log-file", filepath.Join(stateDir, "log")}, flags...)
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(stateDir, "log"))
			t.Logf("hook log:\n%s", log)
		}
	})
	return s
}

// processesOf lists the live processes running the executable path.
func processesOf(path string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && exe == path && isRunning(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopNameServer kills the name server of stateDir, if one runs, and
// waits until it is gone.
func stopNameServer(stateDir string) {
	pid, ok := names.Running(stateDir)
	if !ok {
		return
	}
	unix.Kill(pid, unix.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && isRunning(pid); {
		time.Sleep(time.Millisecond)
	}
}

// cmd returns a command that runs inside the sandbox.
func (s *sandbox) cmd(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + s.path}, args...)...)
}

// bridgehook is the command that runs the binary under test in the
// sandbox, with the sandbox's flags, then args, and stdin on its stdin:
// the one way the tests run it.
func (s *sandbox) bridgehook(stdin string, args ...string) *exec.Cmd {
	c := s.cmd(append(append([]string{binary}, s.flags...), args...)...)
	c.Stdin = strings.NewReader(stdin)
	if s.env != nil {
		c.Env = append(os.Environ(), s.env...)
	}
	return c
}

// run runs the binary to its end and returns what it printed and its exit
// code.
func (s *sandbox) run(stdin string, args ...string) (stdout, stderr string, code int) {
	c := s.bridgehook(stdin, args...)
	var out, errs bytes.Buffer
	c.Stdout, c.Stderr = &out, &errs
	if err := c.Run(); err != nil {
		code = c.ProcessState.ExitCode()
		if code == 0 { // it did not even start
			s.t.Fatalf("run bridgehook: %v", err)
		}
	}
	return out.String(), errs.String(), code
}

// hook runs the binary as a runtime runs a hook, with state on stdin, and
// returns its stderr, and an error if it failed.
func (s *sandbox) hook(state string, args ...string) (string, error) {
	_, stderr, code := s.run(state, args...)
	if code != 0 {
		return stderr, fmt.Errorf("exit status %d", code)
	}
	return stderr, nil
}

func (s *sandbox) mustHook(state string, args ...string) {
	s.t.Helper()
	if out, err := s.hook(state, args...); err != nil {
		s.t.Fatalf("bridgehook %v: %v: %s", args, err, out)
	}
}

func setupState(id string, pid int) string {
	return fmt.Sprintf(`{"ociVersion":"1.0.2","id":%q,"pid":%d,"status":"creating"}`, id, pid)
}

func stopState(id string) string {
	return fmt.Sprintf(`{"ociVersion":"1.0.2","id":%q,"status":"stopped"}`, id)
}

// container starts a process in a network namespace of its own inside the
// sandbox and returns its pid once it is there.
func (s *sandbox) container() int {
	s.t.Helper()
	c := s.cmd("unshare", "-n", "sleep", "600")
	if err := c.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	pid := c.Process.Pid // nsenter and unshare exec, so this becomes sleep
	sandboxIno := inode(s.t, s.path)
	waitFor(s.t, "process in its own netns", func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		ino, err := inodeOf(fmt.Sprintf("/proc/%d/ns/net", pid))
		return strings.TrimSpace(string(comm)) == "sleep" && err == nil && ino != sandboxIno
	})
	return pid
}

// containers starts n containers (see container) and returns their pids.
func (s *sandbox) containers(n int) []int {
	s.t.Helper()
	pids := make([]int, n)
	for i := range pids {
		pids[i] = s.container()
	}
	return pids
}

func inodeOf(path string) (uint64, error) {
	var st syscall.Stat_t
	err := syscall.Stat(path, &st)
	return st.Ino, err
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	ino, err := inodeOf(path)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// waitFor polls cond until it holds or a deadline passes: never a bare sleep.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// store opens the sandbox's lease store of network bridge/subnet (a
// dual-stack network's two subnets separated by a comma): the one way
// tests read the store, and damage it (ipam.Disk.DamageLease). Close it
// when done: leases it allocates are pending until then.
func (s *sandbox) store(bridge, subnet string) *ipam.Disk {
	s.t.Helper()
	var subnets []netip.Prefix
	for _, p := range strings.Split(subnet, ",") {
		subnets = append(subnets, netip.MustParsePrefix(p))
	}
	st, err := ipam.Open(s.stateDir, bridge, subnets...)
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// do runs fn on the store of network bridge/subnet, with its lock held.
func (s *sandbox) do(bridge, subnet string, fn func(ipam.Tx) error) {
	s.t.Helper()
	st := s.store(bridge, subnet)
	defer st.Close()
	if err := st.Do(fn); err != nil {
		s.t.Fatal(err)
	}
}

// lease returns container id's lease on the default bridge's subnet.
func (s *sandbox) lease(id, subnet string) (l ipam.Lease, ok bool) {
	s.t.Helper()
	s.do("netns0", subnet, func(tx ipam.Tx) (err error) { l, ok, err = tx.Lookup(id); return err })
	return l, ok
}

// leases lists the leases of network bridge/subnet, failing the test if
// one is unreadable.
func (s *sandbox) leases(bridge, subnet string) (ls []ipam.Lease) {
	s.t.Helper()
	s.do(bridge, subnet, func(tx ipam.Tx) error {
		var bad []string
		var err error
		ls, bad, err = tx.List()
		if len(bad) > 0 {
			return fmt.Errorf("unreadable leases: %v", bad)
		}
		return err
	})
	return ls
}

// draining lists the addresses teardown set aside until their veths go.
func (s *sandbox) draining(subnet string) (ls []ipam.Lease) {
	s.t.Helper()
	s.do("netns0", subnet, func(tx ipam.Tx) (err error) { ls, err = tx.Draining(); return err })
	return ls
}

// rules returns our rules as iptables-save shows them in the sandbox, then
// ip6tables-save's (each prefixed "ip6 "), then our nftables rules.
func (s *sandbox) rules() []string {
	s.t.Helper()
	var ours []string
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := s.cmd(tool).Output()
		if err != nil {
			s.t.Fatalf("%s: %v", tool, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "-A") && strings.Contains(line, "bridgehook") {
				if tool == "ip6tables-save" {
					line = "ip6 " + line
				}
				ours = append(ours, line)
			}
		}
	}
	out, err := s.cmd("nft", "list", "ruleset").Output()
	if err != nil {
		s.t.Fatalf("nft list ruleset: %v", err)
	}
	return append(ours, nftRules(string(out))...)
}

// nftRules returns the rules of our tables in nft list ruleset output,
// each prefixed with its table and chain. (iptables-nft's rules show there
// too, and iptables-save has them already.)
func nftRules(ruleset string) []string {
	var rules []string
	var table, chain string
	for _, line := range strings.Split(ruleset, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "table "):
			table = strings.TrimSuffix(strings.TrimPrefix(line, "table "), " {")
		case strings.HasPrefix(line, "chain "):
			chain = strings.TrimSuffix(strings.TrimPrefix(line, "chain "), " {")
		case strings.HasPrefix(table, "inet bridgehook-") && strings.Contains(line, "comment"):
			rules = append(rules, table+" "+chain+": "+line)
		}
	}
	return rules
}

// firewalls are the backends the tests that concern rules run against.
var firewalls = []string{"iptables", "nftables"}

// forEachFirewall runs fn as a subtest per backend.
func forEachFirewall(t *testing.T, fn func(t *testing.T, fw string)) {
	for _, fw := range firewalls {
		t.Run(fw, func(t *testing.T) { fn(t, fw) })
	}
}

// waitVethsGone waits for the kernel to delete the veths of containers
// that exited: teardown leaves a pair whose namespace is dying to the
// kernel, which deletes it with the namespace a moment later.
func (s *sandbox) waitVethsGone() {
	s.t.Helper()
	waitFor(s.t, "the kernel to delete the veths of exited containers", func() bool { return len(s.veths()) == 0 })
}

// vethsInSandbox lists the host ends of container veths.
func (s *sandbox) veths() []string {
	s.t.Helper()
	links, err := s.nl.LinkList()
	if err != nil {
		s.t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "netnsv0-") {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

// inside returns a netlink handle in the network namespace of pid.
func inside(t *testing.T, pid int) *netlink.Handle {
	t.Helper()
	return insidePath(t, fmt.Sprintf("/proc/%d/ns/net", pid))
}

// insidePath returns a netlink handle in the network namespace at path.
func insidePath(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// checkHostUntouched fails the test if anything of bridgehook's shows up in
// the test process's own network namespace, the host's: no test may touch
// it. It names what it finds, and removes it.
func checkHostUntouched(t *testing.T) {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Errorf("list host links: %v", err)
		return
	}
	for _, l := range links {
		a := l.Attrs()
		if strings.HasPrefix(a.Alias, "bridgehook:") || (l.Type() == "bridge" && bytes.HasPrefix(a.HardwareAddr, []byte{0x0a, 0x58})) {
			t.Errorf("the host network was touched: %s %s (alias %q, created by a hook run outside a sandbox)", l.Type(), a.Name, a.Alias)
			netlink.LinkDel(l)
		}
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, _ := exec.Command(tool).Output()
		if strings.Contains(string(out), "bridgehook") {
			t.Errorf("the host firewall was touched (%s):\n%s", tool, out)
		}
	}
	out, _ := exec.Command("nft", "list", "tables").Output()
	if strings.Contains(string(out), "bridgehook") {
		t.Errorf("the host firewall was touched: nft tables:\n%s", out)
	}
}

// refused runs the hook with state and args, and checks that it refuses
// them as bad input: exit 2, one line on stderr naming want, and nothing
// left behind.
func (s *sandbox) refused(t *testing.T, state string, args []string, want string) {
	t.Helper()
	_, out, code := s.run(state, args...)
	if code != 2 {
		t.Errorf("exit %d, want 2 for bad input; stderr: %s", code, out)
	}
	if !strings.Contains(out, want) || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "bridgehook: ") {
		t.Errorf("stderr %q, want one line containing %q", out, want)
	}
	s.assertEmpty()
}

// assertEmpty checks that no network under the sandbox's state directory
// holds a lease, and that no veth, bridge or rule of ours is left.
func (s *sandbox) assertEmpty() {
	s.t.Helper()
	stores, err := ipam.Stores(s.stateDir)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, st := range stores {
		if ls, err := st.Peek(); err != nil || len(ls) != 0 {
			s.t.Errorf("%s %v: leases left: %v %v", st.Bridge(), st.Subnets(), ls, err)
		}
	}
	if v := s.veths(); len(v) != 0 {
		s.t.Errorf("veths left: %v", v)
	}
	if _, err := s.nl.LinkByName("netns0"); err == nil {
		s.t.Error("bridge left")
	}
	if r := s.rules(); len(r) != 0 {
		s.t.Errorf("rules left: %v", r)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
