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
	requireRoot(t, "podman", "busybox")
	sb := newSandbox(t)
	dir := t.TempDir()

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
	h["args"] = append([]any{"bridgehook"}, anys(sb.flags)...)
	hooks := filepath.Join(dir, "hooks")
	os.Mkdir(hooks, 0o755)
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hooks, "bridgehook.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}

	podman := func(args ...string) (string, error) {
		base := []string{"podman", "--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run"),
			"--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
			"--hooks-dir", hooks, "--events-backend", "file"}
		out, err := sb.cmd(append(base, args...)...).CombinedOutput()
		return string(out), err
	}
	tar := filepath.Join(dir, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", rootfs(t), "-cf", tar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	if out, err := podman("import", tar, "bridgehook-test"); err != nil {
		t.Fatalf("podman import: %v %s", err, out)
	}
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

func anys(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}
