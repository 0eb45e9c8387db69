package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemo is `make demo`: it narrates rather than asserts, though any
// failure still fails it.
func TestDemo(t *testing.T) {
	if os.Getenv("BRIDGEHOOK_DEMO") == "" {
		t.Skip("run with make demo")
	}
	say := func(format string, a ...any) { fmt.Printf("\n## "+format+"\n", a...) }
	show := func(out string) { fmt.Print(indent(out)) }

	sb := newSandbox(t)
	say("A sandbox host: network namespace %s. Nothing here touches your host's network.", sb.name)
	root := rootfs(t)
	runc := newRuntime(t, sb, "runc")
	ba := bundle(t, sb, root, createRuntime, []string{"sleep", "600"})
	bb := bundle(t, sb, root, createRuntime, []string{"sleep", "600"})
	var spec struct{ Hooks json.RawMessage }
	cfg, _ := os.ReadFile(filepath.Join(ba, "config.json"))
	json.Unmarshal(cfg, &spec)
	say("Each container's config.json lists bridgehook as a createRuntime and a poststop hook:")
	show(string(spec.Hooks) + "\n")

	say("runc run -d: two busybox containers, a and b")
	runc.start(t, "a", ba)
	runc.start(t, "b", bb)
	for _, id := range []string{"a", "b"} {
		say("runc exec %s ip addr show eth0; ip route", id)
		show(runc.run(t, "exec", id, "ip", "addr", "show", "eth0"))
		show(runc.run(t, "exec", id, "ip", "route"))
	}
	lb, _ := sb.lease("b", "172.19.0.0/16")
	say("a pings b (%s) and the gateway (172.19.0.1) on bridge netns0", lb.IP)
	show(runc.run(t, "exec", "a", "ping", "-c2", lb.IP.String()))
	show(runc.run(t, "exec", "a", "ping", "-c1", "172.19.0.1"))
	say("The firewall rules bridgehook installed (in our own chains):")
	show(strings.Join(sb.rules(), "\n") + "\n")
	say("A firewall reload (iptables -F; iptables -X) takes them away:")
	for _, c := range [][]string{{"iptables", "-F"}, {"iptables", "-X"}, {"iptables", "-t", "nat", "-F"}, {"iptables", "-t", "nat", "-X"}} {
		if out, err := sb.cmd(c...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	show(fmt.Sprintf("%d rules of ours left\n", len(sb.rules())))
	runc.start(t, "c", bundle(t, sb, root, createRuntime, []string{"sleep", "600"}))
	say("runc run -d c: its setup finds them gone and puts all %d back, for a and b too", len(sb.rules()))

	say("A second network, br1, with --firewall nftables: its rules go in a table of its own, over netlink")
	nb := bundle(t, sb, root, createRuntime, []string{"sleep", "600"}, "--bridge", "br1", "--subnet", "10.88.0.0/24", "--firewall", "nftables")
	withAnnotations(t, nb, map[string]string{"bridgehook.ports": "8080:80"})
	runc.start(t, "n", nb)
	say("nft list table inet bridgehook-br1 (container n publishes 8080:80)")
	out, err := sb.cmd("nft", "list", "table", "inet", "bridgehook-br1").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table: %v %s", err, out)
	}
	show(string(out))
	say("bridgehook ls --all")
	ls, _, _ := sb.run("", "ls", "--all")
	show(ls)
	runc.run(t, "delete", "-f", "n")
	runc.run(t, "delete", "-f", "c")
	for _, id := range []string{"a", "b"} {
		runc.run(t, "delete", "-f", id)
	}
	say("runc delete -f a b: poststop released %d leases; %d veths are left", 2-len(sb.leases("netns0", "172.19.0.0/16")), len(sb.veths()))
	say("Removing the sandbox namespace: the bridge and its rules go with it.")
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
