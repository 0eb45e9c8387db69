package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/bridgehook/bridgehook/ipam"
)

var wantRules = []string{
	`-A FORWARD -m comment --comment "bridgehook netns0: jump" -j BH-FWD-netns0`,
	`-A BH-FWD-netns0 -i netns0 -o netns0 -m comment --comment "bridgehook netns0: between containers" -j ACCEPT`,
	`-A BH-FWD-netns0 -i netns0 ! -o netns0 -m comment --comment "bridgehook netns0: out of the bridge" -j ACCEPT`,
	`-A BH-FWD-netns0 -o netns0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "bridgehook netns0: replies into the bridge" -j ACCEPT`,
	`-A BH-FWD-netns0 -o netns0 -m conntrack --ctstate DNAT -m comment --comment "bridgehook netns0: published ports" -j ACCEPT`,
	`-A POSTROUTING -m comment --comment "bridgehook netns0: jump" -j BH-NAT-netns0`,
	`-A BH-NAT-netns0 -s 172.19.0.0/16 ! -o netns0 -m comment --comment "bridgehook netns0: masquerade" -j MASQUERADE`,
	`-A BH-NAT-netns0 -s 172.19.0.0/16 -d 172.19.0.0/16 -o netns0 -m conntrack --ctstate DNAT -m comment --comment "bridgehook netns0: hairpin" -j MASQUERADE`,
	`-A BH-NAT-netns0 -s 127.0.0.0/8 -o netns0 -m conntrack --ctstate DNAT -m comment --comment "bridgehook netns0: localhost" -j MASQUERADE`,
	`-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "bridgehook netns0: jump" -j BH-DNAT-netns0`,
	`-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment "bridgehook netns0: jump" -j BH-DNAT-netns0`,
}

func TestSetupAndTeardownAsTheKernelSeesThem(t *testing.T) {
	sb := newSandbox(t)
	pid := sb.container()
	sb.mustHook(setupState("c1", pid))

	l, ok := sb.lease("c1", "172.19.0.0/16")
	if !ok || l.IP.String() != "172.19.0.2" || l.PID != pid || l.Veth != fmt.Sprintf("netnsv0-%d", pid) {
		t.Fatalf("lease %+v (found %v), want 172.19.0.2 for pid %d", l, ok, pid)
	}
	if l.NetnsInode != inode(t, fmt.Sprintf("/proc/%d/ns/net", pid)) {
		t.Errorf("lease netns inode %d is not the container's", l.NetnsInode)
	}

	br, err := sb.nl.LinkByName("netns0")
	if err != nil || br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("bridge netns0: %v %v", br, err)
	}
	addrs, _ := sb.nl.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "172.19.0.1/16" {
		t.Errorf("bridge addresses %v, want 172.19.0.1/16", addrs)
	}
	veth, err := sb.nl.LinkByName(l.Veth)
	if err != nil || veth.Attrs().MasterIndex != br.Attrs().Index || veth.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("veth %s: %+v %v; want up on the bridge", l.Veth, veth, err)
	}

	in := inside(t, pid)
	eth0, err := in.LinkByName("eth0")
	if err != nil || eth0.Attrs().Flags&net.FlagUp == 0 || eth0.Attrs().MTU != 1500 {
		t.Fatalf("container eth0: %+v %v", eth0, err)
	}
	if mac := eth0.Attrs().HardwareAddr.String(); mac != "0a:58:ac:13:00:02" {
		t.Errorf("eth0 MAC %s", mac)
	}
	addrs, _ = in.AddrList(eth0, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "172.19.0.2/16" {
		t.Errorf("eth0 addresses %v, want 172.19.0.2/16", addrs)
	}
	lo, _ := in.LinkByName("lo")
	if lo == nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("container lo is not up")
	}
	routes, _ := in.RouteList(nil, netlink.FAMILY_V4)
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
		return (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == "172.19.0.1" && r.LinkIndex == eth0.Attrs().Index
	}) {
		t.Errorf("no default route via 172.19.0.1 dev eth0 in %v", routes)
	}
	if got := sb.rules(); !slices.Equal(sorted(got), sorted(wantRules)) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantRules, "\n"))
	}
	if out, _ := sb.cmd("cat", "/proc/sys/net/ipv4/ip_forward").Output(); strings.TrimSpace(string(out)) != "1" {
		t.Errorf("ip_forward = %q", out)
	}

	// A second setup of the same container changes nothing.
	sb.mustHook(setupState("c1", pid))
	if l2, _ := sb.lease("c1", "172.19.0.0/16"); l2.IP != l.IP {
		t.Errorf("second setup moved c1 from %s to %s", l.IP, l2.IP)
	}
	if v := sb.veths(); len(v) != 1 {
		t.Errorf("veths after a second setup: %v", v)
	}

	sb.mustHook(stopState("c1"))
	if _, ok := sb.lease("c1", "172.19.0.0/16"); ok {
		t.Error("lease still held after teardown")
	}
	if v := sb.veths(); len(v) != 0 {
		t.Errorf("veths after teardown: %v", v)
	}
	if _, err := in.LinkByName("eth0"); err == nil {
		t.Error("container still has eth0 after teardown")
	}
	// Poststop may run twice, and crun sends pid 0.
	sb.mustHook(`{"id":"c1","pid":0,"status":"stopped"}`)
	sb.mustHook(`{"id":"never-set-up","status":"stopped"}`)
}

func TestTwoContainersReachEachOtherAndTheGateway(t *testing.T) {
	requireRoot(t, "busybox")
	sb := newSandbox(t)
	a, b := sb.container(), sb.container()
	sb.mustHook(setupState("a", a))
	sb.mustHook(`{"ociVersion":"1.0","id":"b","pid":` + fmt.Sprint(b) + `,"status":"created","root":"/run/crun/b"}`)
	for _, p := range [][2]string{{fmt.Sprint(a), "172.19.0.1"}, {fmt.Sprint(a), "172.19.0.3"}, {fmt.Sprint(b), "172.19.0.2"}} {
		out, err := exec.Command("nsenter", "--net=/proc/"+p[0]+"/ns/net", "busybox", "ping", "-c1", "-W2", p[1]).CombinedOutput()
		if err != nil {
			t.Errorf("ping %s from pid %s: %v\n%s", p[1], p[0], err, out)
		}
	}
}

func TestRulesAreNeverDoubled(t *testing.T) {
	sb := newSandbox(t)
	pid := sb.container()
	record, _ := filepath.Glob(filepath.Join(sb.stateDir, "*", "network.json"))
	for i := range 100 {
		// Forget that the rules were verified, so every setup installs them.
		for _, r := range record {
			os.Remove(r)
		}
		sb.mustHook(setupState("c1", pid), "setup")
		sb.mustHook(stopState("c1"), "teardown")
		if i == 0 {
			record, _ = filepath.Glob(filepath.Join(sb.stateDir, "*", "network.json"))
			if len(record) != 1 {
				t.Fatalf("network records: %v", record)
			}
		}
	}
	if got := sb.rules(); !slices.Equal(sorted(got), sorted(wantRules)) {
		t.Errorf("after 100 setups, rules:\n%s", strings.Join(got, "\n"))
	}
}

func TestBadInputLeavesNothingBehind(t *testing.T) {
	sb := newSandbox(t)
	// A process in the sandbox's own netns: a container without a netns of
	// its own.
	host := sb.cmd("sleep", "600")
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Process.Kill(); host.Wait() })
	waitFor(t, "sleep in the sandbox", func() bool {
		ino, err := inodeOf(fmt.Sprintf("/proc/%d/ns/net", host.Process.Pid))
		return err == nil && ino == inode(t, sb.path)
	})
	// No pid is above the kernel's limit: a pid that was just used could
	// be reused by then (pid_max is 32768 here).
	const deadPID = 4194305

	tests := []struct {
		name, state string
		args        []string
		want        string
	}{
		{"empty stdin", "", nil, "empty"},
		{"invalid JSON", "{", nil, "invalid JSON"},
		{"not an object", "42", nil, "not a JSON object"},
		{"pid as string", `{"id":"x","pid":"1","status":"creating"}`, nil, `"pid" is a JSON string`},
		{"missing pid", `{"id":"x","status":"creating"}`, nil, `missing "pid"`},
		{"negative pid", `{"id":"x","pid":-3,"status":"creating"}`, nil, `"pid" is -3`},
		{"dead pid", setupState("x", deadPID), nil, "no such process"},
		{"hook's own netns", setupState("x", host.Process.Pid), nil, "the hook's own network namespace"},
		{"PID 1's netns", setupState("x", 1), nil, "network namespace"},
		{"bad id", setupState("../x", 5), nil, "container id"},
		{"long id", setupState(strings.Repeat("a", 1025), 5), nil, "1025 bytes"},
		{"bad subnet", setupState("x", 5), []string{"--subnet", "172.19.0.0/33"}, "--subnet"},
		{"long bridge", setupState("x", 5), []string{"--bridge", "a-very-long-bridge"}, "--bridge"},
		{"unknown status", `{"id":"x","pid":5,"status":"paused"}`, nil, "unknown status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { sb.refused(t, tt.state, tt.args, tt.want) })
	}
}

// TestFailedSetupUndoesItself fails setup after the lease, the bridge and
// the rules are made: the container already has an eth0.
func TestFailedSetupUndoesItself(t *testing.T) {
	sb := newSandbox(t)
	pid := sb.container()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "eth0"
	if err := inside(t, pid).LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		t.Fatal(err)
	}
	out, err := sb.hook(setupState("c1", pid))
	if err == nil || !strings.Contains(out, "eth0 already exists") {
		t.Fatalf("setup: %v %q, want a failure naming eth0", err, out)
	}
	sb.assertEmpty()
}

func TestRefusesToRunAsNonRoot(t *testing.T) {
	sb := newSandbox(t)
	pid := sb.container()
	c := sb.cmd(append([]string{"-S", "65534", "-G", "65534", binary}, sb.flags...)...)
	c.Stdin = strings.NewReader(setupState("c1", pid))
	out, err := c.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "must run as root") {
		t.Fatalf("as nobody: %v %q", err, out)
	}
	sb.assertEmpty()
}

func TestTwentySetupsAtOnce(t *testing.T) {
	sb := newSandbox(t)
	const n = 20
	pids := sb.containers(n)
	run := func(state func(i int) string) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if out, err := sb.hook(state(i)); err != nil {
					t.Errorf("hook %d: %v: %s", i, err, out)
				}
			})
		}
		wg.Wait()
	}
	run(func(i int) string { return setupState(fmt.Sprint("c", i), pids[i]) })
	ls := sb.leases("netns0", "172.19.0.0/16")
	seen := map[string]bool{}
	for _, l := range ls {
		seen[l.IP.String()] = true
	}
	if len(ls) != n || len(seen) != n {
		t.Fatalf("%d leases with %d distinct addresses, want %d", len(ls), len(seen), n)
	}
	if v := sb.veths(); len(v) != n {
		t.Errorf("%d veths, want %d", len(v), n)
	}
	if got := sb.rules(); !slices.Equal(sorted(got), sorted(wantRules)) {
		t.Errorf("rules after concurrent setups:\n%s", strings.Join(got, "\n"))
	}
	run(func(i int) string { return stopState(fmt.Sprint("c", i)) })
	if v := sb.veths(); len(v) != 0 {
		t.Errorf("veths left after teardown: %v", v)
	}
	if ls := sb.leases("netns0", "172.19.0.0/16"); len(ls) != 0 {
		t.Errorf("leases left after teardown: %v", ls)
	}
}

// lifetime sets container id (process pid) up, ends the process as a
// runtime does before poststop, tears the container down, and returns the
// lease it had.
func (s *sandbox) lifetime(id string, pid int) ipam.Lease {
	s.t.Helper()
	s.mustHook(setupState(id, pid))
	l, ok := s.lease(id, "172.19.0.0/16")
	if !ok {
		s.t.Fatalf("%s has no lease after setup", id)
	}
	kill(s.t, pid)
	s.mustHook(stopState(id))
	if _, ok := s.lease(id, "172.19.0.0/16"); ok {
		s.t.Fatalf("%s's lease still held after teardown", id)
	}
	return l
}

// At poststop the container has exited and the kernel deletes its veth
// pair with its namespace: teardown releases the lease at once, leaves the
// pair to the kernel, and keeps the address out of use until it is gone.
func TestTeardownAfterExitLeavesThePairToTheKernel(t *testing.T) {
	sb := newSandbox(t)
	l := sb.lifetime("c1", sb.container())
	if d := sb.draining("172.19.0.0/16"); len(d) > 1 || len(d) == 1 && d[0].IP != l.IP {
		t.Fatalf("draining %+v, want at most c1's %s", d, l.IP)
	}
	sb.waitVethsGone()
	// The address comes back, even asked for by name at once.
	pid2 := sb.container()
	sb.mustHook(fmt.Sprintf(`{"id":"c2","pid":%d,"status":"creating","annotations":{"bridgehook.ip":%q}}`, pid2, l.IP))
	if l2, ok := sb.lease("c2", "172.19.0.0/16"); !ok || l2.IP != l.IP {
		t.Fatalf("c2 got %+v (found %v), want %s", l2, ok, l.IP)
	}
	if d := sb.draining("172.19.0.0/16"); len(d) != 0 {
		t.Errorf("still draining after the address was leased again: %+v", d)
	}
}

// A namespace can outlive its container (a bind mount, as `ip netns add`
// makes, keeps it): the veth then stays after teardown, its address
// drained. The next container in that namespace finds eth0 taken; setup
// deletes the old pair and carries on, and gc would have done the same.
func TestNamespaceThatOutlivesItsContainer(t *testing.T) {
	sb := newSandbox(t)
	keep := sb.name + "-kept"
	if out, err := exec.Command("ip", "netns", "add", keep).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", keep).Run() })
	keptIno := inode(t, "/run/netns/"+keep)
	start := func() int {
		c := sb.cmd("nsenter", "--net=/run/netns/"+keep, "sleep", "600")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		pid := c.Process.Pid
		waitFor(t, "process in the kept namespace", func() bool {
			ino, err := inodeOf(fmt.Sprintf("/proc/%d/ns/net", pid))
			return err == nil && ino == keptIno
		})
		return pid
	}

	l1 := sb.lifetime("c1", start())
	if d := sb.draining("172.19.0.0/16"); len(d) != 1 || d[0].IP != l1.IP {
		t.Fatalf("draining %+v, want c1's %s: its veth lives on with the namespace", d, l1.IP)
	}

	pid2 := start()
	sb.mustHook(setupState("c2", pid2))
	l2, ok := sb.lease("c2", "172.19.0.0/16")
	if !ok {
		t.Fatal("c2 has no lease")
	}
	if v := sb.veths(); len(v) != 1 || v[0] != l2.Veth {
		t.Errorf("veths %v, want only c2's %s", v, l2.Veth)
	}
	if d := sb.draining("172.19.0.0/16"); len(d) != 0 {
		t.Errorf("still draining: %+v", d)
	}
	addrs, _ := inside(t, pid2).AddrList(nil, netlink.FAMILY_V4)
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.String() == l2.IP.String() }) {
		t.Errorf("kept namespace's addresses %v, want c2's %s", addrs, l2.IP)
	}
	sb.mustHook(stopState("c2")) // alive: deleted at once
	if v := sb.veths(); len(v) != 0 {
		t.Errorf("veths after tearing down a live container: %v", v)
	}
}
