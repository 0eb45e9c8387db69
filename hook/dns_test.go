package hook

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/input"
)

func TestResolvConfStaysInsideTheRootfs(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(t.TempDir(), "host-file")
	if err := os.WriteFile(outside, []byte("host's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(root, "etc"), 0o755)
	// A hostile image: its resolv.conf points at a host file.
	if err := os.Symlink(outside, filepath.Join(root, "etc", "resolv.conf")); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	c.DNS = []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	if err := c.writeResolvConf(root); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(outside); string(b) != "host's\n" {
		t.Fatalf("the host file was written: %q", b)
	}
	b, err := os.ReadFile(filepath.Join(root, "etc", "resolv.conf"))
	if err != nil || !strings.Contains(string(b), "nameserver 10.0.0.53\n") {
		t.Errorf("container resolv.conf: %q %v", b, err)
	}

	// An etc that is itself a symlink out of the root is followed inside it.
	root2 := t.TempDir()
	if err := os.Symlink(filepath.Dir(outside), filepath.Join(root2, "etc")); err != nil {
		t.Fatal(err)
	}
	if err := c.writeResolvConf(root2); err == nil {
		if _, err := os.Stat(filepath.Join(filepath.Dir(outside), "resolv.conf")); err == nil {
			t.Fatal("wrote through a symlinked etc to the host")
		}
	}
}

func TestResolvConfNamesTheHostsOrTheNetworksServers(t *testing.T) {
	dir := t.TempDir()
	stub, up := filepath.Join(dir, "stub"), filepath.Join(dir, "up")
	os.WriteFile(stub, []byte("nameserver 127.0.0.53\nsearch lan\n"), 0o644)
	os.WriteFile(up, []byte("nameserver 127.0.0.1\nnameserver 192.0.2.53\nsearch corp.example\n"), 0o644)
	defer func(old []string) { hostResolvConfs = old }(hostResolvConfs)

	c := Defaults()
	c.HostDNS = true
	hostResolvConfs = []string{filepath.Join(dir, "missing"), stub, up}
	b, err := c.resolvConf()
	if want := "# written by bridgehook\nnameserver 192.0.2.53\nsearch corp.example\n"; err != nil || string(b) != want {
		t.Errorf("host's: got %q %v, want %q", b, err, want)
	}

	// A network with names gives its own server, on each gateway, and
	// keeps the host's search domains.
	c.Names = true
	c.Subnets = []netip.Prefix{netip.MustParsePrefix("10.5.0.0/24"), netip.MustParsePrefix("fd05::/64")}
	b, err = c.resolvConf()
	if want := "# written by bridgehook\nnameserver 10.5.0.1\nnameserver fd05::1\nsearch corp.example\n"; err != nil || string(b) != want {
		t.Errorf("names: got %q %v, want %q", b, err, want)
	}

	c.Names = false
	hostResolvConfs = []string{stub}
	if _, err := c.resolvConf(); err == nil || !strings.Contains(input.Render(err, marked), "<dns>") {
		t.Errorf("only loopback: %v", err)
	}
}
