package e2e

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// makeIn runs make in the repository.
func makeIn(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("make", append([]string{"-C", repo("."), "--no-print-directory"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestMakeInstall installs into a DESTDIR: every file where netavark's
// and the OCI hooks' conventions put it, with its mode, naming the
// installed binary, and nothing outside DESTDIR; uninstall removes all of
// it.
func TestMakeInstall(t *testing.T) {
	requireRoot(t, "make")
	outside := []string{"/usr/local/bin/bridgehook", "/opt/cni/bin/bridgehook", "/usr/share/containers/oci/hooks.d/bridgehook.json"}
	for _, p := range outside {
		if exists(p) {
			t.Fatalf("%s exists on this machine: the test cannot tell an install outside DESTDIR from it", p)
		}
	}
	dest := t.TempDir()
	makeIn(t, "install", "DESTDIR="+dest)
	in := func(p string) string { return filepath.Join(dest, p) }
	for p, mode := range map[string]os.FileMode{
		"usr/local/bin/bridgehook":                                  0o755,
		"usr/share/containers/oci/hooks.d/bridgehook.json":          0o644,
		"usr/local/lib/systemd/system/bridgehook-dns.service":       0o644,
		"usr/local/lib/systemd/system/bridgehook-repair.service":    0o644,
		"usr/local/lib/systemd/system/bridgehook-firewalld.service": 0o644,
		"usr/local/share/man/man8/bridgehook.8":                     0o644,
		"usr/local/share/man/man8/bridgehook-ls.8":                  0o644,
		"usr/local/share/bash-completion/completions/bridgehook":    0o644,
		"usr/local/share/zsh/vendor-completions/_bridgehook":        0o644,
		"usr/local/share/fish/vendor_completions.d/bridgehook.fish": 0o644,
		"usr/local/share/doc/bridgehook/README.md":                  0o644,
		"usr/local/share/doc/bridgehook/docs/performance.md":        0o644,
	} {
		st, err := os.Stat(in(p))
		if err != nil || st.Mode() != mode {
			t.Errorf("%s: %v, want mode %v", p, err, mode)
		}
	}
	if to, err := os.Readlink(in("opt/cni/bin/bridgehook")); err != nil || to != "/usr/local/bin/bridgehook" {
		t.Errorf("the CNI plugin: %q %v; want a link to /usr/local/bin/bridgehook", to, err)
	}
	var hookCfg struct {
		Hook struct{ Path string } `json:"hook"`
	}
	if b, err := os.ReadFile(in("usr/share/containers/oci/hooks.d/bridgehook.json")); err != nil || json.Unmarshal(b, &hookCfg) != nil || hookCfg.Hook.Path != "/usr/local/bin/bridgehook" {
		t.Errorf("the hooks.d file names %q (%v)", hookCfg.Hook.Path, err)
	}
	if b, _ := os.ReadFile(in("usr/local/lib/systemd/system/bridgehook-dns.service")); !strings.Contains(string(b), "ExecStart=/usr/local/bin/bridgehook dns") {
		t.Errorf("the dns unit:\n%s", b)
	}
	for _, p := range outside {
		if exists(p) {
			t.Errorf("install with DESTDIR put %s on the machine", p)
			os.Remove(p)
		}
	}

	makeIn(t, "uninstall", "DESTDIR="+dest)
	filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("left after uninstall: %s", p)
		}
		return err
	})
}

// TestDebianPackage builds the package, has lintian find no error in it,
// installs it with apt-get, runs a podman container through the hooks.d
// file where podman looks by default, and purges it: nothing of it is
// left.
func TestDebianPackage(t *testing.T) {
	requireRoot(t, "make", "dpkg-deb", "lintian", "apt-get", "podman", "busybox", "systemd-analyze")
	if exec.Command("dpkg", "-s", "bridgehook").Run() == nil {
		t.Fatal("a bridgehook package is installed on this machine: apt-get purge bridgehook first")
	}
	makeIn(t, "deb")
	debs, _ := filepath.Glob(repo("bridgehook_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v", debs)
	}
	deb, _ := filepath.Abs(debs[0])
	if out, err := exec.Command("lintian", "--fail-on", "error", deb).CombinedOutput(); err != nil || strings.Contains(string(out), "\nE: ") {
		t.Errorf("lintian: %v\n%s", err, out)
	}
	version, err := exec.Command("dpkg-deb", "-f", deb, "Version").Output()
	if err != nil {
		t.Fatal(err)
	}

	// The hooks.d file's flags are the defaults: its state and log are
	// the host's, and go when the test does if they were not there.
	for _, p := range []string{"/run/bridgehook", "/var/log/bridgehook.log"} {
		if !exists(p) {
			t.Cleanup(func() { os.RemoveAll(p) })
		}
	}
	apt := func(args ...string) {
		cmd := exec.Command("apt-get", append([]string{"-y", "-q", "--no-install-recommends"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	apt("install", deb)
	t.Cleanup(func() {
		if exec.Command("dpkg", "-s", "bridgehook").Run() == nil {
			apt("purge", "bridgehook")
		}
	})
	list, err := exec.Command("dpkg", "-L", "bridgehook").Output()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/usr/bin/bridgehook", "version").Output(); err != nil || !strings.HasPrefix(string(out), "bridgehook "+strings.TrimSpace(string(version))+" ") {
		t.Errorf("bridgehook version: %q %v; want the package's %s", out, err, version)
	}
	units, _ := filepath.Glob("/lib/systemd/system/bridgehook-*.service")
	if out, err := exec.Command("systemd-analyze", append([]string{"verify"}, units...)...).CombinedOutput(); err != nil || len(units) != 3 || len(out) > 0 {
		t.Errorf("systemd-analyze verify %v: %v\n%s", units, err, out)
	}
	if to, err := filepath.EvalSymlinks("/usr/lib/cni/bridgehook"); err != nil || to != "/usr/bin/bridgehook" {
		t.Errorf("the CNI plugin: %q %v", to, err)
	}

	sb := newSandbox(t)
	dir, err := os.MkdirTemp("", "podman-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	podman := podmanIn(t, sb, dir, "") // podman's own hooks directory
	out, err := podman(append(podmanRun, "--rm", "localhost/bridgehook-test", "sh", "-c", "ip -4 addr show eth0 && ping -c1 -W2 172.19.0.1")...)
	if err != nil || !strings.Contains(out, "inet 172.19.0.2/16") || !strings.Contains(out, "1 packets received") {
		t.Fatalf("podman run through the installed hooks.d file: %v\n%s", err, out)
	}

	apt("purge", "bridgehook")
	for _, p := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		// Directories stay where other packages own them (on Debian 12,
		// /lib is a link to one).
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			continue
		}
		if exists(p) {
			t.Errorf("left after purge: %s", p)
		}
	}
	if exists("/etc/containers/oci/hooks.d/bridgehook.json") {
		t.Error("the conffile is left after purge")
	}
}
