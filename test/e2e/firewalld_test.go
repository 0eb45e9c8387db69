package e2e

// firewalld in a sandbox: its own network namespace (the sandbox host's),
// its own mount namespace with a tmpfs over /run and /etc/firewalld
// bind-mounted from a copy, and its own system bus. The hooks and the
// watcher run in that mount namespace, so they find that bus; nothing of
// this touches the host's firewall or bus.

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// fwHost is a sandbox host running firewalld.
type fwHost struct {
	*sandbox
	holder int    // the process whose mount namespace firewalld lives in
	etc    string // the copy of /etc/firewalld it uses
	daemon *exec.Cmd
}

// startFirewalld copies /etc/firewalld, makes the mount namespace and
// starts dbus-daemon and firewalld in it, in the sandbox host.
func startFirewalld(t *testing.T, sb *sandbox) *fwHost {
	t.Helper()
	requireRoot(t, "firewalld", "firewall-cmd", "dbus-daemon")
	etc := filepath.Join(t.TempDir(), "firewalld")
	if out, err := exec.Command("cp", "-a", "/etc/firewalld", etc).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc/firewalld: %v %s", err, out)
	}
	keep := t.TempDir()
	// The state directory is under /run: it is carried over the tmpfs.
	script := fmt.Sprintf(`set -e
mount --make-rprivate /
mount --bind %[1]s %[2]s
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus %[1]s
mount --bind %[2]s %[1]s
mount --bind %[3]s /etc/firewalld
exec sleep 3600`, sb.stateDir, keep, etc)
	holder := exec.Command("nsenter", "--net="+sb.path, "unshare", "-m", "bash", "-c", script)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	fw := &fwHost{sandbox: sb, holder: holder.Process.Pid, etc: etc}
	waitFor(t, "the mount namespace", func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", fw.holder))
		return strings.TrimSpace(string(comm)) == "sleep"
	})
	bus := fw.in("dbus-daemon", "--system", "--nofork", "--nopidfile")
	if err := bus.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Process.Kill(); bus.Wait() })
	waitFor(t, "the system bus", func() bool { return fw.in("test", "-S", "/run/dbus/system_bus_socket").Run() == nil })
	fw.startDaemon(t)
	return fw
}

// in is a command run in firewalld's namespaces.
func (fw *fwHost) in(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(fw.holder), "-m", "-n"}, args...)...)
}

// startDaemon starts firewalld and waits until it runs.
func (fw *fwHost) startDaemon(t *testing.T) {
	t.Helper()
	fw.daemon = fw.in("firewalld", "--nofork", "--nopid")
	if err := fw.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	d := fw.daemon
	t.Cleanup(func() { d.Process.Kill(); d.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := fw.in("firewall-cmd", "--state").Output()
		if strings.TrimSpace(string(out)) == "running" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("firewalld did not start: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// restart stops firewalld as systemctl does and starts it again.
func (fw *fwHost) restart(t *testing.T) {
	t.Helper()
	fw.daemon.Process.Signal(syscall.SIGTERM)
	fw.daemon.Wait()
	fw.startDaemon(t)
}

// hook runs a setup or teardown where firewalld's bus is.
func (fw *fwHost) hook(t *testing.T, state string) {
	t.Helper()
	c := fw.in(append([]string{binary}, fw.flags...)...)
	c.Stdin = strings.NewReader(state)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("hook %s: %v %s", state, err, out)
	}
}

// config is firewalld's permanent configuration: its files, and what
// they hold. (firewalld keeps a backup, NAME.xml.old, of each file it
// changes or removes, and never reads it: not configuration.)
func (fw *fwHost) config(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(fw.etc, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".old") {
			return err
		}
		b, err := os.ReadFile(path)
		files[strings.TrimPrefix(path, fw.etc)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestFirewalld: with firewalld running and bridged traffic passing the
// netfilter hooks, containers on both backends reach each other, the
// outside and their published ports (from outside, from the host, by
// hairpin): before a reload, after firewall-cmd --reload with no container
// starting (the watcher's work), after a restart of firewalld, and after
// the next setup. network rm leaves firewalld's permanent configuration
// as it was.
func TestFirewalld(t *testing.T) { forEachFirewall(t, testFirewalld) }

func testFirewalld(t *testing.T, backend string) {
	sb := newSandbox(t, "--firewall", backend)
	if out, err := sb.cmd("sysctl", "-w", "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1").CombinedOutput(); err != nil {
		t.Fatalf("br_netfilter: %v %s", err, out)
	}
	cl := sb.addClient(1500)
	fw := startFirewalld(t, sb)
	before := fw.config(t)

	watch := fw.in(append([]string{binary, "watch"}, fw.flags...)...)
	var watched strings.Builder
	watch.Stdout, watch.Stderr = &watched, &watched
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		watch.Process.Kill()
		watch.Wait()
		if t.Failed() {
			t.Logf("bridgehook watch:\n%s", watched.String())
		}
	})

	a, b := sb.container(), sb.container()
	fw.hook(t, fmt.Sprintf(`{"ociVersion":"1.0.2","id":"a","pid":%d,"status":"creating","annotations":{"bridgehook.ports":"9000:9000/udp"}}`, a))
	fw.hook(t, setupState("b", b))
	udpServer(t, a, "pong")
	nsA, nsB := nsOf(t, a), nsOf(t, b)
	udpServerIn(t, cl.ns, 9100, "outside")
	la, _ := sb.lease("a", "172.19.0.0/16")

	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			what string
			ns   netns.NsHandle
			addr string
			want string
		}{
			{"container to container", nsB, la.IP.String() + ":9000", "pong"},
			{"container to the outside", nsA, clientAddr + ":9100", "outside"},
			{"published port from outside", cl.ns, hostAddr + ":9000", "pong"},
			{"published port from the host", sb.ns, hostAddr + ":9000", "pong"},
			{"published port from the host's 127.0.0.1", sb.ns, "127.0.0.1:9000", "pong"},
			{"published port by hairpin", nsB, hostAddr + ":9000", "pong"},
		} {
			if got, err := udpAsk(t, c.ns, c.addr, "ping", 0); err != nil || got != c.want {
				t.Errorf("%s, %s: %v %q", when, c.what, err, got)
			}
		}
	}
	check("before a reload")
	if out, err := fw.in("firewall-cmd", "--info-zone=bridgehook").CombinedOutput(); err != nil || !strings.Contains(string(out), "interfaces: netns0") || !strings.Contains(string(out), "target: ACCEPT") {
		t.Errorf("firewall-cmd --info-zone=bridgehook: %v\n%s", err, out)
	}

	// A reload flushes rules it did not make: the watcher puts them back
	// at once, with no container starting.
	if out, err := fw.in("firewall-cmd", "--reload").CombinedOutput(); err != nil {
		t.Fatalf("firewall-cmd --reload: %v %s", err, out)
	}
	start := time.Now()
	waitFor(t, "the rules back after a reload", func() bool { return len(sb.rules()) > 0 && sb.hasRulesOf("netns0") })
	t.Logf("%s: rules back %s after firewall-cmd --reload returned", backend, time.Since(start).Round(time.Millisecond))
	check("after firewall-cmd --reload")

	fw.restart(t)
	waitFor(t, "the rules back after a restart", func() bool { return sb.hasRulesOf("netns0") })
	check("after firewalld restarted")

	fw.hook(t, setupState("c", sb.container()))
	check("after the next setup")

	for _, id := range []string{"a", "b", "c"} {
		fw.hook(t, stopState(id))
	}
	c := fw.in(append([]string{binary}, append(slices.Clone(fw.flags), "network", "rm")...)...)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("network rm: %v %s", err, out)
	}
	after := fw.config(t)
	for f, b := range before {
		if after[f] != b {
			t.Errorf("network rm left %s changed", f)
		}
	}
	for f := range after {
		if _, ok := before[f]; !ok {
			t.Errorf("network rm left %s", f)
		}
	}
	if out, _ := fw.in("firewall-cmd", "--get-zones").Output(); strings.Contains(string(out), "bridgehook") {
		t.Errorf("zones after network rm: %s", out)
	}
}

func nsOf(t *testing.T, pid int) netns.NsHandle {
	t.Helper()
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// hasRulesOf reports whether network bridge's masquerade rule is in place,
// in either backend.
func (s *sandbox) hasRulesOf(bridge string) bool {
	return slices.ContainsFunc(s.rules(), func(r string) bool {
		return strings.Contains(r, "bridgehook "+bridge+": masquerade")
	})
}
