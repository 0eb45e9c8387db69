package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unitCommand returns the arguments unit (a file of systemd/) runs
// bridgehook with, checking that its ExecStart and ExecReload agree.
func unitCommand(t *testing.T, unit string) []string {
	t.Helper()
	b, err := os.ReadFile(repo("systemd/" + unit))
	if err != nil {
		t.Fatal(err)
	}
	var cmd string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok || strings.HasPrefix(line, "ExecReload=") {
			if !ok {
				v = strings.TrimPrefix(line, "ExecReload=")
			}
			if cmd != "" && v != cmd {
				t.Fatalf("%s runs %q and %q", unit, v, cmd)
			}
			cmd = v
		}
	}
	f := strings.Fields(cmd)
	if len(f) < 2 || f[0] != "/usr/local/bin/bridgehook" {
		t.Fatalf("%s runs %q", unit, cmd)
	}
	return f[1:]
}

// TestSystemdUnits: systemd accepts the units as shipped.
func TestSystemdUnits(t *testing.T) {
	requireRoot(t, "systemd-analyze")
	dir := t.TempDir()
	units, _ := filepath.Glob(repo("systemd/*.service"))
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		// systemd-analyze checks the command exists: point it at the
		// binary under test.
		b = []byte(strings.ReplaceAll(string(b), "/usr/local/bin/bridgehook", binary))
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(u)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"verify", "--man=no"} // the pages are there once installed: see TestDebianPackage
	for _, u := range units {
		args = append(args, filepath.Join(dir, filepath.Base(u)))
	}
	if out, err := exec.Command("systemd-analyze", args...).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if got := strings.Join(unitCommand(t, "bridgehook-repair.service"), " "); got != "repair --all" {
		t.Errorf("bridgehook-repair.service runs %q", got)
	}
	if got := strings.Join(unitCommand(t, "bridgehook-firewalld.service"), " "); got != "watch" {
		t.Errorf("bridgehook-firewalld.service runs %q", got)
	}
	if got := strings.Join(unitCommand(t, "bridgehook-dns.service"), " "); got != "dns" {
		t.Errorf("bridgehook-dns.service runs %q", got)
	}
}
