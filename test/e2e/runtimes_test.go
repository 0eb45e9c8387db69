package e2e

// End-to-end: real runc and crun containers with a busybox rootfs, with
// bridgehook listed in their config.json, inside a sandbox host.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
)

// ociRuntime runs runc or crun commands inside a sandbox.
type ociRuntime struct {
	name string
	root string // the runtime's state dir, private to the test
	sb   *sandbox
}

func newRuntime(t *testing.T, sb *sandbox, name string) *ociRuntime {
	requireRoot(t, name, "busybox")
	return &ociRuntime{name: name, root: t.TempDir(), sb: sb}
}

func (r *ociRuntime) cmd(args ...string) *exec.Cmd {
	args = append([]string{r.name, "--root", r.root}, args...)
	if r.name == "crun" {
		// crun 1.8 refuses hybrid cgroup hosts: give it a mount namespace
		// where cgroup2 is alone at /sys/fs/cgroup.
		args = append([]string{"unshare", "-m", "sh", "-c",
			`mount --make-rprivate / && umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec "$0" "$@"`}, args...)
	}
	return r.sb.cmd(args...)
}

func (r *ociRuntime) run(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	c := r.cmd(args...)
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", r.name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// start runs a detached container and returns its pid. Its stdio go to a
// file: a pipe would stay open as long as the container runs.
func (r *ociRuntime) start(t *testing.T, id, bundle string) int {
	t.Helper()
	logf, err := os.Create(filepath.Join(bundle, "stdio"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	c := r.cmd("run", "-d", "--bundle", bundle, id)
	c.Stdout, c.Stderr = logf, logf
	if err := c.Run(); err != nil {
		out, _ := os.ReadFile(logf.Name())
		t.Fatalf("%s run %s: %v\n%s", r.name, id, err, out)
	}
	t.Cleanup(func() { r.cmd("delete", "-f", id).Run() })
	var st struct{ Pid int }
	if err := json.Unmarshal([]byte(r.run(t, "state", id)), &st); err != nil || st.Pid <= 0 {
		out, _ := os.ReadFile(logf.Name())
		t.Fatalf("%s state %s: pid %d, %v; container output:\n%s", r.name, id, st.Pid, err, out)
	}
	return st.Pid
}

// rootfs builds a busybox root filesystem shared read-only by containers.
func rootfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "etc", "tmp", "www"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"sh", "sleep", "ping", "ip", "cat", "true", "httpd", "wget", "nc", "echo", "nslookup"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", app)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// hookStage picks where the hook is listed in config.json.
type hookStage string

const (
	createRuntime hookStage = "createRuntime"
	prestart      hookStage = "prestart"
)

// bundle writes a bundle whose config.json runs args with bridgehook as
// its stage hook and poststop hook, with the sandbox's flags plus extra.
func bundle(t *testing.T, sb *sandbox, root string, stage hookStage, args []string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	h := specs.Hook{Path: binary, Args: append(append([]string{binary}, sb.flags...), extra...)}
	hooks := &specs.Hooks{Poststop: []specs.Hook{h}}
	if stage == prestart {
		//lint:ignore SA1019 prestart is deprecated, but the runc write-up uses it and runtimes run it
		hooks.Prestart = []specs.Hook{h}
	} else {
		hooks.CreateRuntime = []specs.Hook{h}
	}
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}
	spec := specs.Spec{
		Version: "1.0.2", // what runc 1.1 and crun 1.8 know
		Root:    &specs.Root{Path: root, Readonly: true},
		Process: &specs.Process{
			Args: args, Cwd: "/", Env: []string{"PATH=/bin"},
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			NoNewPrivileges: true,
		},
		Hostname: "c",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev"}},
		},
		Hooks: hooks,
		Linux: &specs.Linux{
			// No resources: crun's device filter needs RLIMIT_MEMLOCK, which
			// cannot be raised on these machines.
			Namespaces: []specs.LinuxNamespace{{Type: "pid"}, {Type: "network"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"}},
		},
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRuncAndCrunContainers(t *testing.T) {
	sb := newSandbox(t)
	root := rootfs(t)
	runc, crun := newRuntime(t, sb, "runc"), newRuntime(t, sb, "crun")
	sleep := []string{"sleep", "600"}
	pa := runc.start(t, "a", bundle(t, sb, root, prestart, sleep))
	pb := crun.start(t, "b", bundle(t, sb, root, createRuntime, sleep))

	ips := map[string]string{}
	for id, pid := range map[string]int{"a": pa, "b": pb} {
		l, ok := sb.lease(id, "172.19.0.0/16")
		if !ok {
			t.Fatalf("no lease for %s", id)
		}
		if l.NetnsInode != inode(t, fmt.Sprintf("/proc/%d/ns/net", pid)) {
			t.Errorf("%s: lease is for another netns", id)
		}
		in := inside(t, pid)
		eth0, err := in.LinkByName("eth0")
		if err != nil {
			t.Fatalf("%s: no eth0: %v", id, err)
		}
		addrs, _ := in.AddrList(eth0, netlink.FAMILY_V4)
		if len(addrs) != 1 || !addrs[0].IP.Equal(l.IP.AsSlice()) {
			t.Fatalf("%s: eth0 has %v, lease says %s", id, addrs, l.IP)
		}
		routes, _ := in.RouteList(nil, netlink.FAMILY_V4)
		if !defaultVia(routes, "172.19.0.1") {
			t.Errorf("%s: no default route via the gateway: %v", id, routes)
		}
		// A socket in the namespace would keep it, and the veth in it,
		// alive after the container stops.
		in.Close()
		ips[id] = l.IP.String()
	}
	for _, p := range []struct {
		rt       *ociRuntime
		id, dest string
	}{
		{runc, "a", "172.19.0.1"}, {runc, "a", ips["b"]},
		{crun, "b", "172.19.0.1"}, {crun, "b", ips["a"]},
	} {
		p.rt.run(t, "exec", p.id, "ping", "-c1", "-W2", p.dest)
	}

	for _, c := range []struct {
		rt *ociRuntime
		id string
	}{{runc, "a"}, {crun, "b"}} {
		c.rt.run(t, "kill", c.id, "KILL")
		waitFor(t, c.id+" stopped", func() bool {
			out, err := c.rt.cmd("state", c.id).Output()
			return err == nil && strings.Contains(string(out), `"stopped"`)
		})
		c.rt.run(t, "delete", c.id)
		if _, ok := sb.lease(c.id, "172.19.0.0/16"); ok {
			t.Errorf("%s: lease still held after delete", c.id)
		}
	}
	sb.waitVethsGone()
}

// TestLeasesComeBack runs 8 containers one after another on a /29, which
// has 5 addresses to lease: without release, the sixth could not start.
func TestLeasesComeBack(t *testing.T) {
	sb := newSandbox(t, "--subnet", "10.99.0.0/29")
	root := rootfs(t)
	rts := []*ociRuntime{newRuntime(t, sb, "runc"), newRuntime(t, sb, "crun")}
	stages := []hookStage{createRuntime, prestart}
	for i := range 8 {
		rt := rts[i%2]
		id := fmt.Sprint("seq", i)
		// The container's own exit status says whether it reached the gateway.
		b := bundle(t, sb, root, stages[(i/2)%2], []string{"ping", "-c1", "-W2", "10.99.0.1"})
		rt.run(t, "run", "--bundle", b, id)
		if ls := sb.leases("netns0", "10.99.0.0/29"); len(ls) != 0 {
			t.Fatalf("after %s (%s) exited: leases %v", id, rt.name, ls)
		}
	}
	sb.waitVethsGone()
}

func defaultVia(routes []netlink.Route, gw string) bool {
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == gw {
			return true
		}
	}
	return false
}
