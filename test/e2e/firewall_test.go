package e2e

// Tests of the firewall backends against what a host does to them: a
// FORWARD policy of DROP, reloads that flush the rules, and a network
// moved from one backend to the other.

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// webServer starts container id on runc, serving "hello from ID" on port
// 80 published as host port 8080, and waits until it answers.
func webServer(t *testing.T, sb *sandbox, runc *ociRuntime, root, id string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, "www", "index.html"), []byte("hello from "+id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := bundle(t, sb, root, createRuntime, []string{"httpd", "-f", "-p", "80", "-h", "/www"})
	withAnnotations(t, b, map[string]string{"bridgehook.ports": "8080:80"})
	runc.start(t, id, b)
	waitFor(t, "httpd in "+id, func() bool {
		_, err := httpGet(t, sb.ns, hostAddr+":8080")
		return err == nil
	})
}

// setForwardPolicy sets the sandbox's iptables FORWARD policy, as a host
// with Docker installed has it (DROP).
func (s *sandbox) setForwardPolicy(policy string) {
	s.t.Helper()
	if out, err := s.cmd("iptables", "-P", "FORWARD", policy).CombinedOutput(); err != nil {
		s.t.Fatalf("iptables -P FORWARD %s: %v %s", policy, err, out)
	}
}

// With iptables' FORWARD policy DROP, containers still reach each other,
// the outside and their published ports, whichever backend holds their
// rules.
func TestForwardPolicyDrop(t *testing.T) {
	forEachFirewall(t, func(t *testing.T, fw string) {
		sb, cl, root, runc := dropHost(t, fw)
		runc.start(t, "b", bundle(t, sb, root, createRuntime, []string{"sleep", "600"}))
		sb.checkReachable(cl, runc, []string{"a", "b"}, "hello from a\n")
	})
}

// dropHost is a sandbox host with a client on its uplink and iptables'
// FORWARD policy DROP, where runc runs container a, a web server on host
// port 8080, on a network of firewall fw.
func dropHost(t *testing.T, fw string) (*sandbox, *client, string, *ociRuntime) {
	sb := newSandbox(t, "--firewall", fw)
	cl := sb.addClient(1500)
	sb.setForwardPolicy("DROP")
	root := rootfs(t)
	runc := newRuntime(t, sb, "runc")
	webServer(t, sb, runc, root, "a")
	return sb, cl, root, runc
}

// checkReachable checks that containers ids reach each other and the
// client, and that host port 8080 answers want from the client, from the
// host and from the last container (hairpin).
func (s *sandbox) checkReachable(cl *client, runc *ociRuntime, ids []string, want string) {
	t := s.t
	t.Helper()
	for i, id := range ids {
		if !pingFrom(runc, id, clientAddr) {
			t.Errorf("%s cannot reach the outside (%s)", id, clientAddr)
		}
		peer := ids[(i+1)%len(ids)]
		if ip, ok := s.lease(peer, "172.19.0.0/16"); !ok || !pingFrom(runc, id, ip.IP.String()) {
			t.Errorf("%s cannot reach %s (%v)", id, peer, ip.IP)
		}
	}
	if out, err := httpGet(t, cl.ns, hostAddr+":8080"); err != nil || out != want {
		t.Errorf("published port from the client: %v %q", err, out)
	}
	if out, err := httpGet(t, s.ns, "127.0.0.1:8080"); err != nil || out != want {
		t.Errorf("published port from the host through 127.0.0.1: %v %q", err, out)
	}
	last := ids[len(ids)-1]
	if out, err := runc.cmd("exec", last, "wget", "-q", "-O", "-", "http://"+hostAddr+":8080/").CombinedOutput(); err != nil || string(out) != want {
		t.Errorf("published port from %s (hairpin): %v %q", last, err, out)
	}
}

// reloads are what takes a network's rules away behind its back.
var reloads = []struct {
	name string
	cmds [][]string
	// only names the one backend whose rules the reload takes.
	only string
}{
	{"iptables -F -X", [][]string{
		{"iptables", "-F"}, {"iptables", "-X"}, {"iptables", "-t", "nat", "-F"}, {"iptables", "-t", "nat", "-X"},
	}, ""},
	{"nft flush ruleset", [][]string{{"nft", "flush", "ruleset"}}, ""},
	{"iptables -t nat -F", [][]string{{"iptables", "-t", "nat", "-F"}}, "iptables"},
}

// After a reload, the next setup brings the network back: the older
// container reaches the outside again, the new one too, and the published
// port of the older one answers. The FORWARD policy is DROP, so the
// accepts must be back too, and not only the NAT.
func TestSetupAfterReloadRestoresTheNetwork(t *testing.T) {
	forEachFirewall(t, func(t *testing.T, fw string) {
		for _, reload := range reloads {
			if reload.only != "" && reload.only != fw {
				continue
			}
			t.Run(reload.name, func(t *testing.T) {
				sb, cl, root, runc := dropHost(t, fw)
				before := sorted(sb.rules())
				for _, c := range reload.cmds {
					if out, err := sb.cmd(c...).CombinedOutput(); err != nil {
						t.Fatalf("%v: %v %s", c, err, out)
					}
				}
				if after := sorted(sb.rules()); slices.Equal(after, before) {
					t.Fatalf("%s left every rule in place:\n%s", reload.name, strings.Join(after, "\n"))
				}
				// What the host had comes back with its reload; ours does not.
				sb.setForwardPolicy("DROP")
				runc.start(t, "b", bundle(t, sb, root, createRuntime, []string{"sleep", "600"}))
				if got := sorted(sb.rules()); !slices.Equal(got, before) {
					t.Errorf("rules after the next setup:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
				}
				sb.checkReachable(cl, runc, []string{"a", "b"}, "hello from a\n")
			})
		}
	})
}

// A network keeps its backend: a setup that asks for the other one is
// refused and leaves nothing, and repair with the other --firewall moves
// the rules, ports included, without both ever holding them.
func TestMoveNetworkToAnotherFirewall(t *testing.T) {
	sb := newSandbox(t)
	sb.mustHook(portsState("c1", sb.container(), "8080:80"))
	iptRules := sb.rules()
	if len(iptRules) == 0 || strings.Contains(strings.Join(iptRules, "\n"), "inet bridgehook-") {
		t.Fatalf("an iptables network's rules:\n%s", strings.Join(iptRules, "\n"))
	}
	out, err := sb.hook(setupState("c2", sb.container()), "--firewall", "nftables")
	if err == nil || !strings.Contains(out, "network netns0 has its rules in iptables") || !strings.Contains(out, "--firewall nftables repair") {
		t.Errorf("setup asking for nftables on an iptables network: %v %q", err, out)
	}
	if _, ok := sb.lease("c2", "172.19.0.0/16"); ok {
		t.Error("the refused setup left a lease")
	}
	// Without --firewall, a setup uses the network's own.
	sb.mustHook(setupState("c3", sb.container()))
	if fw := sb.ls()[0].Firewall; fw != "iptables" {
		t.Errorf("ls shows firewall %q before the move", fw)
	}

	sb.mustHook("", "--firewall", "nftables", "repair")
	moved := sb.rules()
	for _, r := range moved {
		if !strings.HasPrefix(r, "inet bridgehook-netns0 ") && !strings.Contains(r, "--mark 0x1000000/0x1000000") {
			t.Errorf("an iptables rule is left after the move: %s", r)
		}
	}
	if !slices.ContainsFunc(moved, func(r string) bool { return strings.Contains(r, "dnat ip to 172.19.0.2:80") }) {
		t.Errorf("c1's port did not move:\n%s", strings.Join(moved, "\n"))
	}
	if fw := sb.ls()[0].Firewall; fw != "nftables" {
		t.Errorf("ls shows firewall %q after the move", fw)
	}
	// Teardown, gc and network rm find the rules where they now are.
	sb.mustHook(stopState("c1"))
	if slices.ContainsFunc(sb.rules(), func(r string) bool { return strings.Contains(r, "8080") }) {
		t.Errorf("c1's port rule outlived its teardown:\n%s", strings.Join(sb.rules(), "\n"))
	}
	sb.mustHook(stopState("c3"))
	sb.mustHook("", "network", "rm")
	if r := sb.rules(); len(r) != 0 {
		t.Errorf("network rm left rules:\n%s", strings.Join(r, "\n"))
	}
}

// UDP has no end of connection: without a flush at teardown, a client
// that keeps sending from one port stays pinned by conntrack to the old
// container's address. After teardown, the same client reaches the next
// container that publishes the port.
func TestTeardownFlushesUDPConntrack(t *testing.T) {
	forEachFirewall(t, func(t *testing.T, fw string) {
		sb := newSandbox(t, "--firewall", fw)
		cl := sb.addClient(1500)
		a := sb.container()
		sb.mustHook(portsState("a", a, "9000:9000/udp"))
		udpServer(t, a, "a")
		if got, err := udpAsk(t, cl.ns, hostAddr+":9000", "ping", 40000); err != nil || got != "a" {
			t.Fatalf("udp to a: %v %q", err, got)
		}
		sb.mustHook(stopState("a"))
		b := sb.container()
		sb.mustHook(portsState("b", b, "9000:9000/udp"))
		udpServer(t, b, "b")
		if got, err := udpAsk(t, cl.ns, hostAddr+":9000", "ping", 40000); err != nil || got != "b" {
			t.Errorf("udp from the same client port after a's teardown: %v %q, want b's answer", err, got)
		}
	})
}

// On a host whose iptables is the legacy one, which nftables' netlink does
// not see, the check of a warm setup reads iptables-save instead, and
// still brings the rules back after a reload.
func TestLegacyIptablesAfterReload(t *testing.T) {
	sb := newSandbox(t)
	bin := t.TempDir()
	for _, tool := range []string{"iptables", "iptables-save", "iptables-restore"} {
		if err := os.Symlink("/usr/sbin/"+strings.Replace(tool, "iptables", "iptables-legacy", 1), filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	sb.env = []string{"PATH=" + bin + ":" + os.Getenv("PATH")}
	legacy := func() []string {
		out, err := sb.cmd("iptables-legacy-save").Output()
		if err != nil {
			t.Fatalf("iptables-legacy-save: %v", err)
		}
		var ours []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "-A") && strings.Contains(line, "bridgehook") {
				ours = append(ours, line)
			}
		}
		return sorted(ours)
	}
	sb.mustHook(portsState("c1", sb.container(), "8080:80"))
	before := legacy()
	if len(before) != len(wantRules)+1 {
		t.Fatalf("legacy iptables holds %d rules of ours, want %d:\n%s", len(before), len(wantRules)+1, strings.Join(before, "\n"))
	}
	if r := sb.rules(); len(r) != 0 {
		t.Fatalf("rules went to iptables on nf_tables too:\n%s", strings.Join(r, "\n"))
	}
	// A warm setup finds them in place (it says when it does not).
	if _, stderr, code := sb.run(setupState("c2", sb.container())); code != 0 || strings.Contains(stderr, "rules_restored") {
		t.Errorf("warm setup: exit %d, %s", code, stderr)
	}
	if got := legacy(); !slices.Equal(got, before) {
		t.Errorf("after a warm setup:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
	for _, args := range [][]string{{"-F"}, {"-X"}, {"-t", "nat", "-F"}, {"-t", "nat", "-X"}} {
		if out, err := sb.cmd(append([]string{"iptables-legacy"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables-legacy %v: %v %s", args, err, out)
		}
	}
	if got := legacy(); len(got) != 0 {
		t.Fatalf("flush left %v", got)
	}
	if _, stderr, code := sb.run(setupState("c3", sb.container())); code != 0 || !strings.Contains(stderr, "rules_restored=true") {
		t.Errorf("setup after the reload: exit %d, %s", code, stderr)
	}
	if got := legacy(); !slices.Equal(got, before) {
		t.Errorf("after the setup that follows a reload:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
}

func TestRepairAfterFirewallFlush(t *testing.T) {
	sb := newSandbox(t)
	sb.mustHook(setupState("c1", sb.container()))
	for _, args := range [][]string{{"-F"}, {"-X"}, {"-t", "nat", "-F"}, {"-t", "nat", "-X"}} {
		if out, err := sb.cmd(append([]string{"iptables"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v %s", args, err, out)
		}
	}
	if r := sb.rules(); len(r) != 0 {
		t.Fatalf("flush left %v", r)
	}
	sb.mustHook("", "repair")
	sb.mustHook("", "repair")
	if got := sb.rules(); !slices.Equal(sorted(got), sorted(wantRules)) {
		t.Errorf("after repair, rules:\n%s", strings.Join(got, "\n"))
	}
}

// repair --all, as the systemd units run it after a reload, brings back
// every network's rules, each with its own options, whatever flags it
// is given.
func TestRepairAllAfterFirewallFlush(t *testing.T) {
	sb := newSandbox(t)
	sb.mustHook(setupState("c1", sb.container()))
	isolated := []string{"--bridge", "br1", "--subnet", "10.88.0.0/24", "--icc=false"}
	sb.mustHook(setupState("c2", sb.container()), isolated...)
	sb.mustHook(portsState("c3", sb.container(), "8080:80"), "--bridge", "br2", "--subnet", "10.89.0.0/24", "--firewall", "nftables")
	before := sorted(sb.rules())
	if !slices.ContainsFunc(before, func(r string) bool { return strings.Contains(r, "bridgehook br1: containers isolated") }) {
		t.Fatalf("br1 is not isolated:\n%s", strings.Join(before, "\n"))
	}
	if !slices.ContainsFunc(before, func(r string) bool { return strings.Contains(r, "dnat ip to 10.89.0.2:80") }) {
		t.Fatalf("br2 has no nftables port rule:\n%s", strings.Join(before, "\n"))
	}
	for _, args := range [][]string{{"-F"}, {"-X"}, {"-t", "nat", "-F"}, {"-t", "nat", "-X"}} {
		if out, err := sb.cmd(append([]string{"iptables"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v %s", args, err, out)
		}
	}
	if out, err := sb.cmd("nft", "flush", "ruleset").CombinedOutput(); err != nil {
		t.Fatalf("nft flush ruleset: %v %s", err, out)
	}
	// The command the systemd units run, which names no backend: each
	// network goes back where it was.
	stdout, stderr, code := sb.run("", unitCommand(t, "bridgehook-repair.service")...)
	if code != 0 || strings.Count(stdout, "bridge and rules in place") != 3 {
		t.Fatalf("repair --all: exit %d %q %q", code, stdout, stderr)
	}
	if got := sorted(sb.rules()); !slices.Equal(got, before) {
		t.Errorf("after repair --all, rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
	// A state directory with no network: nothing to do, nothing created.
	sb.flags = []string{"--state-dir", t.TempDir()}
	if stdout, stderr, code := sb.run("", "repair", "--all"); code != 0 || stdout != "" {
		t.Errorf("repair --all of nothing: exit %d %q %q", code, stdout, stderr)
	}
}
