package e2e

// The promises that hold when hooks race each other, gc, and kills: port
// claims across networks, gc during setups, a setup killed half-way, and
// the rules of leases the store lost.

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func portsState(id string, pid int, ports string) string {
	return fmt.Sprintf(`{"ociVersion":"1.0.2","id":%q,"pid":%d,"status":"creating","annotations":{"bridgehook.ports":%q}}`, id, pid, ports)
}

// TestPortClaimsAcrossNetworksAreExact: 20 setups at once on 4 networks,
// all asking for host port 8080: one wins, every other is refused naming
// it, and none waits on another for good.
func TestPortClaimsAcrossNetworksAreExact(t *testing.T) {
	sb := newSandbox(t)
	const n = 20
	pids := sb.containers(n)
	network := func(i int) []string {
		return []string{"--bridge", fmt.Sprint("br", i%4), "--subnet", fmt.Sprintf("10.20.%d.0/24", i%4)}
	}
	type outcome struct {
		code   int
		stderr string
	}
	outcomes := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := sb.bridgehook(portsState(fmt.Sprint("c", i), pids[i], "8080:80"), network(i)...)
			// Widen the moment between the check of the ports and the
			// lease that claims them, where two setups could both win.
			c.Env = append(os.Environ(), "BRIDGEHOOK_FAILPOINT=ports-checked:20ms")
			var stderr strings.Builder
			c.Stderr = &stderr
			if err := c.Start(); err != nil {
				t.Error(err)
				return
			}
			// A deadlock would show as hooks that never end.
			deadlock := time.AfterFunc(60*time.Second, func() {
				t.Errorf("hook %d did not finish in 60 s: deadlock?", i)
				c.Process.Kill()
			})
			c.Wait()
			deadlock.Stop()
			outcomes[i] = outcome{c.ProcessState.ExitCode(), stderr.String()}
		})
	}
	wg.Wait()
	var winners []string
	for i, o := range outcomes {
		if o.code == 0 {
			winners = append(winners, fmt.Sprint("c", i))
		}
	}
	if len(winners) != 1 {
		t.Fatalf("winners %v, want exactly one; outcomes %+v", winners, outcomes)
	}
	want := "host port 8080:80/tcp is already published by container " + winners[0] + " "
	for i, o := range outcomes {
		if o.code == 0 {
			continue
		}
		if o.code != 2 || !strings.Contains(o.stderr, want) || strings.Count(o.stderr, "\n") != 1 {
			t.Errorf("c%d: exit %d %q, want exit 2 and one line with %q", i, o.code, o.stderr, want)
		}
	}
	leased := 0
	for k := range 4 {
		leased += len(sb.leases(fmt.Sprint("br", k), fmt.Sprintf("10.20.%d.0/24", k)))
	}
	if leased != 1 {
		t.Errorf("%d leases, want the winner's alone", leased)
	}
	var dnat []string
	for _, r := range sb.rules() {
		if strings.Contains(r, "--dport 8080") {
			dnat = append(dnat, r)
		}
	}
	if len(dnat) != 1 || !strings.Contains(dnat[0], winners[0]+" 8080:80/tcp") {
		t.Errorf("port rules %v, want the winner's alone", dnat)
	}
}

// TestGCDuringConcurrentSetups runs gc in a loop while 100 setups run at
// once: gc never takes the lease of a setup in progress.
func TestGCDuringConcurrentSetups(t *testing.T) {
	const subnet = "10.78.0.0/24"
	sb := newSandbox(t, "--subnet", subnet)
	n := 100
	pids := sb.containers(n)
	stop := make(chan struct{})
	gcs := make(chan int)
	go func() {
		runs := 0
		defer func() { gcs <- runs }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if stdout, stderr, code := sb.run("", "gc"); code != 0 {
				t.Errorf("gc: exit %d %s %s", code, stdout, stderr)
				return
			}
			runs++
		}
	}()
	sb.parallel(n, func(i int) string { return setupState(fmt.Sprint("c", i), pids[i]) }, sameFlags)
	close(stop)
	t.Logf("%d gc runs during the setups", <-gcs)

	leases := sb.leases("netns0", subnet)
	ips := map[netip.Addr]bool{}
	for _, l := range leases {
		ips[l.IP] = true
	}
	if len(leases) != n || len(ips) != n {
		t.Fatalf("%d leases, %d distinct addresses; want %d", len(leases), len(ips), n)
	}
	veths := sb.veths()
	for _, l := range leases {
		if !slices.Contains(veths, l.Veth) {
			t.Errorf("%s (%s) lost its veth %s", l.ID, l.IP, l.Veth)
			continue
		}
		h := inside(t, l.PID)
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			t.Errorf("%s: no eth0: %v", l.ID, err)
			continue
		}
		addrs, _ := h.AddrList(eth0, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IP.String() != l.IP.String() {
			t.Errorf("%s: eth0 has %v, the lease says %s", l.ID, addrs, l.IP)
		}
		h.Close()
	}
}

// TestSetupKilledBetweenLeaseAndVeth: a setup killed after its lease and
// before the container's veth leaves a lease (and port rules) that gc
// frees, but not while that setup still runs.
func TestSetupKilledBetweenLeaseAndVeth(t *testing.T) {
	sb := newSandbox(t)
	sb.mustHook(setupState("first", sb.container()))
	pid := sb.container()
	c := sb.bridgehook(portsState("c1", pid, "8080:80"))
	c.Env = append(os.Environ(), "BRIDGEHOOK_FAILPOINT=leased")
	stderr, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.Stderr = c.Stdout
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	parked := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "failpoint leased") {
				parked <- nil
				return
			}
		}
		parked <- errors.New("the hook ended without reaching the failpoint")
	}()
	select {
	case err := <-parked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for the hook to reach its failpoint")
	}

	// The setup is still going: gc leaves its lease alone.
	if stdout, stderr, code := sb.run("", "gc"); code != 0 || strings.Contains(stdout, "c1") {
		t.Fatalf("gc during the setup: exit %d %q %q", code, stdout, stderr)
	}
	l, ok := sb.lease("c1", "172.19.0.0/16")
	if !ok || !slices.ContainsFunc(sb.rules(), func(r string) bool { return strings.Contains(r, "c1 8080:80/tcp") }) {
		t.Fatalf("the setup's lease (%v) or port rule went during gc: %v", ok, sb.rules())
	}

	c.Process.Signal(syscall.SIGKILL)
	c.Wait()
	stdout, stderr2, code := sb.run("", "gc")
	want := fmt.Sprintf("reclaimed %s from c1 (its setup died before pid %d got its veth)", l.IP, pid)
	if code != 0 || !strings.Contains(stdout, want) {
		t.Fatalf("gc after the kill: exit %d %q %q, want %q", code, stdout, stderr2, want)
	}
	if _, ok := sb.lease("c1", "172.19.0.0/16"); ok {
		t.Error("c1's lease outlived its killed setup")
	}
	for _, r := range sb.rules() {
		if strings.Contains(r, "8080") {
			t.Errorf("port rule left: %s", r)
		}
	}
	if !isRunning(pid) {
		t.Fatal("the container died: the test proves nothing")
	}
	// The runtime may try again: the container gets wired.
	sb.mustHook(portsState("c1", pid, "8080:80"))
	if _, err := inside(t, pid).LinkByName("eth0"); err != nil {
		t.Errorf("second setup: %v", err)
	}
}

// TestGCRemovesRulesOfLostLeases: the store loses two leases outright.
// The container that is gone loses its port rules; the live one gets its
// lease back with its ports, and keeps its rules.
func TestGCRemovesRulesOfLostLeases(t *testing.T) {
	forEachFirewall(t, testGCRemovesRulesOfLostLeases)
}

func testGCRemovesRulesOfLostLeases(t *testing.T, fw string) {
	sb := newSandbox(t, "--firewall", fw)
	a, b := sb.container(), sb.container()
	sb.mustHook(portsState("a", a, "8080:80, 9000:9000/udp"))
	sb.mustHook(portsState("b", b, "8081:80"))
	st := sb.store("netns0", "172.19.0.0/16")
	defer st.Close()
	for _, ip := range []string{"172.19.0.2", "172.19.0.3"} {
		if err := st.DamageLease(netip.MustParseAddr(ip), nil); err != nil {
			t.Fatal(err)
		}
	}
	kill(t, a)

	stdout, stderr, code := sb.run("", "gc")
	if code != 0 {
		t.Fatalf("gc: exit %d %s %s", code, stdout, stderr)
	}
	for _, want := range []string{"removed the port rules of a (172.19.0.2)", "rebuilt lease 172.19.0.3 for b"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("gc output lacks %q:\n%s", want, stdout)
		}
	}
	var bRules int
	for _, r := range sb.rules() {
		if strings.Contains(r, "netns0: a ") || strings.Contains(r, "172.19.0.2") {
			t.Errorf("rule of the lost lease left: %s", r)
		}
		if strings.Contains(r, "netns0: b 8081:80/tcp") {
			bRules++
		}
	}
	if bRules != 1 {
		t.Errorf("b has %d port rules, want 1: %v", bRules, sb.rules())
	}
	if l, ok := sb.lease("b", "172.19.0.0/16"); !ok || fmt.Sprint(l.Ports) != "[8081:80/tcp]" {
		t.Errorf("b's rebuilt lease: %+v %v, want its port", l, ok)
	}
	if v := sb.veths(); len(v) != 1 || v[0] != fmt.Sprint("netnsv0-", b) {
		t.Errorf("veths after gc: %v", v)
	}
	if stdout, _, _ := sb.run("", "gc"); strings.TrimSpace(stdout) != "nothing to do" {
		t.Errorf("second gc: %q", stdout)
	}
}
