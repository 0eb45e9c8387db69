package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPodmanHooksDir runs podman with the shipped hooks.d file (pointed at
// the binary under test and the sandbox's state dir): a container that
// asks for bridgehook by annotation gets eth0 and reaches the gateway, and
// its lease is gone once podman removes it.
func TestPodmanHooksDir(t *testing.T) {
	sb := newSandbox(t)
	podman := newPodman(t, sb)
	run := []string{"run", "--rm", "--network", "none", "--cap-add", "NET_RAW",
		"--ulimit", "nofile=20000:20000", "--ulimit", "nproc=1024:1024"}
	out, err := podman(append(run, "--annotation", "bridgehook.enable=true", "localhost/bridgehook-test",
		"sh", "-c", "ip -4 addr show eth0 && ping -c1 -W2 172.19.0.1")...)
	if err != nil || !strings.Contains(out, "inet 172.19.0.2/16") || !strings.Contains(out, "1 packets received") {
		t.Fatalf("podman run with the annotation: %v\n%s", err, out)
	}
	if ls := sb.leases("netns0", "172.19.0.0/16"); len(ls) != 0 {
		t.Errorf("leases after podman run --rm: %v", ls)
	}
	// Without the annotation the hook stays out of it.
	out, err = podman(append(run, "localhost/bridgehook-test", "sh", "-c", "! ip link show eth0")...)
	if err != nil {
		t.Errorf("podman run without the annotation got an eth0: %v\n%s", err, out)
	}
}

// newPodman returns a podman command line of the sandbox: its own store,
// runc, and the shipped hooks.d file pointed at the binary under test with
// the sandbox's flags plus extra; a busybox image, bridgehook-test, is
// imported.
func newPodman(t *testing.T, sb *sandbox, extra ...string) func(args ...string) (string, error) {
	t.Helper()
	requireRoot(t, "podman", "busybox")
	// Not t.TempDir(), named for the test: podman refuses a runroot
	// longer than 50 bytes.
	dir, err := os.MkdirTemp("", "podman-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cfg map[string]any
	b, err := os.ReadFile(repo("hooks.d/bridgehook.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("hooks.d/bridgehook.json: %v", err)
	}
	h := cfg["hook"].(map[string]any)
	h["path"] = binary
	h["args"] = append([]any{"bridgehook"}, anys(append(sb.flags, extra...))...)
	hooks := filepath.Join(dir, "hooks")
	os.Mkdir(hooks, 0o755)
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hooks, "bridgehook.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return podmanIn(t, sb, dir, hooks)
}

// podmanIn is podman in the sandbox with its store in dir and the
// hooks.d files of hooks ("" is podman's own hooks directory), and global
// flags.
func podmanIn(t *testing.T, sb *sandbox, dir, hooks string, global ...string) func(args ...string) (string, error) {
	t.Helper()
	return podmanWith(t, sb.cmd, dir, hooks, global...)
}

// podmanWith is podmanIn with the command line run by cmd.
func podmanWith(t *testing.T, cmd func(args ...string) *exec.Cmd, dir, hooks string, global ...string) func(args ...string) (string, error) {
	t.Helper()
	podman := func(args ...string) (string, error) {
		base := []string{"podman", "--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run"),
			"--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"}
		if hooks != "" {
			base = append(base, "--hooks-dir", hooks)
		}
		base = append(base, global...)
		out, err := cmd(append(base, args...)...).CombinedOutput()
		return string(out), err
	}
	tar := filepath.Join(dir, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", rootfs(t), "-cf", tar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	if out, err := podman("import", tar, "bridgehook-test"); err != nil {
		t.Fatalf("podman import: %v %s", err, out)
	}
	t.Cleanup(func() { podman("rm", "-af", "-t", "0") })
	return podman
}

// podmanRun are the options of a podman run on these machines.
var podmanRun = []string{"run", "--network", "none", "--cap-add", "NET_RAW",
	"--ulimit", "nofile=20000:20000", "--ulimit", "nproc=1024:1024", "--annotation", "bridgehook.enable=true"}

// TestPodmanContainersFindEachOtherByName runs two podman containers on a
// network with names: the second finds the first by its --name, which
// podman passes a hook only in its store, and by its alias.
func TestPodmanContainersFindEachOtherByName(t *testing.T) {
	sb := newSandbox(t)
	podman := newPodman(t, sb, "--names", "--subnet", "10.67.0.0/24")
	if out, err := podman(append(podmanRun, "-d", "--name", "db", "--annotation", "bridgehook.aliases=database",
		"localhost/bridgehook-test", "sleep", "600")...); err != nil {
		t.Fatalf("podman run db: %v\n%s", err, out)
	}
	out, err := podman(append(podmanRun, "--rm", "--name", "web", "localhost/bridgehook-test", "sh", "-c",
		"nslookup db && nslookup database && ping -c1 -W2 db")...)
	if err != nil || !strings.Contains(out, "Address: 10.67.0.2") || !strings.Contains(out, "1 packets received") {
		t.Fatalf("web looks db up: %v\n%s", err, out)
	}
}

func anys(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}
