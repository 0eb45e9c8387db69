package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/ipam"
)

func (s *sandbox) ls() []hook.NetworkView {
	s.t.Helper()
	stdout, stderr, code := s.run("", "ls", "--json")
	var nets []hook.NetworkView
	if code != 0 || json.Unmarshal([]byte(stdout), &nets) != nil {
		s.t.Fatalf("ls --json: exit %d %s %s", code, stdout, stderr)
	}
	return nets
}

func kill(t *testing.T, pid int) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "container gone", func() bool { return !isRunning(pid) })
}

func TestLsAndInspect(t *testing.T) {
	sb := newSandbox(t)
	a, b := sb.container(), sb.container()
	sb.mustHook(setupState("a", a))
	sb.mustHook(setupState("b", b))

	nets := sb.ls()
	if len(nets) != 1 || nets[0].Bridge != "netns0" || nets[0].Subnet != "172.19.0.0/16" || nets[0].Gateway != "172.19.0.1" || nets[0].MTU != 1500 {
		t.Fatalf("ls: %+v", nets)
	}
	eps := nets[0].Endpoints
	if len(eps) != 2 || eps[0].ID != "a" || eps[0].IP != "172.19.0.2" || eps[0].PID != a || eps[0].Status != "running" ||
		eps[0].Veth != fmt.Sprint("netnsv0-", a) || eps[0].MAC != "0a:58:ac:13:00:02" || eps[1].ID != "b" {
		t.Errorf("endpoints: %+v", eps)
	}
	table, _, _ := sb.run("", "ls")
	for _, want := range []string{"IP", "CONTAINER", "STATUS", "172.19.0.2", "172.19.0.3", "running"} {
		if !strings.Contains(table, want) {
			t.Errorf("ls table lacks %q:\n%s", want, table)
		}
	}

	stdout, _, code := sb.run("", "inspect", "b")
	var ep hook.Endpoint
	if code != 0 || json.Unmarshal([]byte(stdout), &ep) != nil || ep.IP != "172.19.0.3" || ep.PID != b {
		t.Errorf("inspect b: exit %d %s", code, stdout)
	}
	if _, stderr, code := sb.run("", "inspect", "nope"); code != 2 || !strings.Contains(stderr, `no endpoint for container "nope"`) {
		t.Errorf("inspect nope: exit %d %q", code, stderr)
	}

	kill(t, b)
	if eps := sb.ls()[0].Endpoints; eps[1].Status != "stale" || eps[0].Status != "running" {
		t.Errorf("after b died: %+v", eps)
	}
}

func TestGCFreesWhatDeadContainersHeld(t *testing.T) {
	sb := newSandbox(t, "--subnet", "10.99.0.0/29") // 5 addresses
	pids := make([]int, 5)
	for i := range pids {
		pids[i] = sb.container()
		sb.mustHook(setupState(fmt.Sprint("c", i), pids[i]))
	}
	kill(t, pids[2]) // dies without a poststop

	stdout, stderr, code := sb.run("", "gc")
	if code != 0 || !strings.Contains(stdout, "reclaimed 10.99.0.4 from c2") {
		t.Fatalf("gc: exit %d %q %q", code, stdout, stderr)
	}
	if ls := sb.leases("netns0", "10.99.0.0/29"); len(ls) != 4 {
		t.Errorf("leases after gc: %d, want 4", len(ls))
	}
	// gc's promise: when it returns, the dead container's veth is gone
	// too, not left to the kernel's namespace cleanup.
	if v := sb.veths(); len(v) != 4 || slices.Contains(v, fmt.Sprint("netnsv0-", pids[2])) {
		t.Errorf("veths after gc: %v", v)
	}
	if d := sb.draining("10.99.0.0/29"); len(d) != 0 {
		t.Errorf("addresses still draining after gc: %+v", d)
	}
	// The full subnet's freed address goes to a new container.
	sb.mustHook(setupState("new", sb.container()))
	if l, _ := sb.lease("new", "10.99.0.0/29"); l.IP.String() != "10.99.0.4" {
		t.Errorf("new container got %s, want the freed 10.99.0.4", l.IP)
	}
	if stdout, _, _ := sb.run("", "gc"); strings.TrimSpace(stdout) != "nothing to do" {
		t.Errorf("second gc: %q", stdout)
	}
}

func TestSetupReclaimsBeforeDeclaringExhaustion(t *testing.T) {
	sb := newSandbox(t, "--subnet", "10.99.0.0/30") // 1 address
	first := sb.container()
	sb.mustHook(setupState("first", first))
	if out, err := sb.hook(setupState("second", sb.container())); err == nil || !strings.Contains(out, "10.99.0.0/30: 1 of 1 addresses leased") {
		t.Fatalf("full subnet: %v %q", err, out)
	}
	kill(t, first)
	sb.mustHook(setupState("third", sb.container()))
	if l, ok := sb.lease("third", "10.99.0.0/30"); !ok || l.IP.String() != "10.99.0.2" {
		t.Errorf("third: %+v %v", l, ok)
	}
}

func TestGCRebuildsACorruptStore(t *testing.T) {
	sb := newSandbox(t, "--subnet", "10.99.0.0/28") // 13 addresses
	pids := make([]int, 3)
	for i := range pids {
		pids[i] = sb.container()
		sb.mustHook(setupState(fmt.Sprint("c", i), pids[i]))
	}
	st := sb.store("netns0", "10.99.0.0/28")
	defer st.Close()
	for ip, data := range map[string][]byte{
		"10.99.0.2": []byte("\x00garbage"), // c0
		"10.99.0.3": {},                    // c1, truncated
		"10.99.0.4": nil,                   // c2: the store loses it altogether
	} {
		if err := st.DamageLease(netip.MustParseAddr(ip), data); err != nil {
			t.Fatal(err)
		}
	}

	if _, stderr, code := sb.run("", "inspect", "c0"); code == 0 || !strings.Contains(stderr, "bridgehook gc") {
		t.Errorf("inspect of a corrupt lease: exit %d %q", code, stderr)
	}
	// Until gc runs, setups steer clear of the unreadable leases.
	for i := range 3 {
		sb.mustHook(setupState(fmt.Sprint("n", i), sb.container()))
	}
	for _, ep := range sb.ls()[0].Endpoints {
		if ep.ID[0] == 'n' && (ep.IP == "10.99.0.2" || ep.IP == "10.99.0.3") {
			t.Errorf("%s got %s, which a live container holds", ep.ID, ep.IP)
		}
	}

	stdout, stderr, code := sb.run("", "gc")
	if code != 0 {
		t.Fatalf("gc: exit %d %s %s", code, stdout, stderr)
	}
	for _, want := range []string{"discarded unreadable lease file", "rebuilt lease 10.99.0.2 for c0", "rebuilt lease 10.99.0.3 for c1", "rebuilt lease 10.99.0.4 for c2"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("gc output lacks %q:\n%s", want, stdout)
		}
	}
	byID := map[string]string{}
	for _, ep := range sb.ls()[0].Endpoints {
		byID[ep.ID] = ep.IP + " " + ep.Status
	}
	if byID["c0"] != "10.99.0.2 running" || byID["c1"] != "10.99.0.3 running" || byID["c2"] != "10.99.0.4 running" || len(byID) != 6 {
		t.Errorf("after gc: %v", byID)
	}
	// The rebuilt leases work: teardown finds them by id.
	sb.mustHook(stopState("c0"))
	if _, ok := sb.lease("c0", "10.99.0.0/28"); ok {
		t.Error("c0 still leased after teardown")
	}
}

func TestNetworkRm(t *testing.T) {
	sb := newSandbox(t)
	pid := sb.container()
	sb.mustHook(setupState("busy", pid))
	if _, stderr, code := sb.run("", "network", "rm"); code != 2 || !strings.Contains(stderr, "busy (172.19.0.2") {
		t.Fatalf("network rm with a live lease: exit %d %q", code, stderr)
	}
	if _, err := sb.nl.LinkByName("netns0"); err != nil {
		t.Fatal("refused network rm removed the bridge")
	}
	sb.mustHook(stopState("busy"))
	if stdout, stderr, code := sb.run("", "network", "rm"); code != 0 {
		t.Fatalf("network rm: exit %d %s %s", code, stdout, stderr)
	}
	if ipam.Exists(sb.stateDir, "netns0", mustPrefix("172.19.0.0/16")) {
		t.Error("store left")
	}
	sb.assertEmpty()
}
