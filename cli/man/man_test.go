package man

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/cli"
)

// TestEveryPageRenders writes the pages and has man(1) render each: the
// overview and a page per command, each naming its command and its flags.
func TestEveryPageRenders(t *testing.T) {
	if _, err := exec.LookPath("man"); err != nil {
		if os.Geteuid() == 0 {
			t.Fatal("man is missing: make deps installs man-db")
		}
		t.Skip("no man(1): make deps installs man-db")
	}
	dir := t.TempDir()
	if err := Write(cli.Root(), dir); err != nil {
		t.Fatal(err)
	}
	for page, want := range map[string][]string{
		"bridgehook.8":         {"BRIDGEHOOK(8)", "NAME", "bridgehook - put OCI containers", "--bridge", "SEE ALSO", "bridgehook-ls(8)"},
		"bridgehook-ls.8":      {"bridgehook-ls - list networks", "--json", "--state-dir", "EXAMPLE"},
		"bridgehook-gc.8":      {"--all"},
		"bridgehook-network.8": {"network rm"},
		"bridgehook-dns.8":     {"port 53"},
	} {
		cmd := exec.Command("man", "-l", filepath.Join(dir, page))
		cmd.Env = append(os.Environ(), "MANWIDTH=100", "MANPAGER=cat", "PAGER=cat")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("man -l %s: %v\n%s", page, err, out)
			continue
		}
		text := string(out)
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: no %q in\n%s", page, w, text)
			}
		}
	}
}
