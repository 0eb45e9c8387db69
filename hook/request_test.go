package hook

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRequestFromStateOrBundle(t *testing.T) {
	bundle := t.TempDir()
	spec := `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"annotations":{"bridgehook.ports":"8080:80","bridgehook.ip":"172.19.0.9"}}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	// The runtime sent no annotations: they come from config.json.
	req, err := c.requestOf(specs.State{ID: "a", Bundle: bundle})
	if err != nil || len(req.Ports) != 1 || req.Ports[0].String() != "8080:80/tcp" || req.IP.String() != "172.19.0.9" {
		t.Fatalf("from config.json: %+v %v", req, err)
	}
	// The state's annotations win.
	req, err = c.requestOf(specs.State{ID: "a", Bundle: bundle, Annotations: map[string]string{"x": "y"}})
	if err != nil || len(req.Ports) != 0 || req.IP.IsValid() {
		t.Fatalf("from the state: %+v %v", req, err)
	}
	c.DNS = []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	if req, err = c.requestOf(specs.State{ID: "a", Bundle: bundle, Annotations: map[string]string{}}); err != nil || req.Rootfs != filepath.Join(bundle, "rootfs") {
		t.Fatalf("rootfs: %+v %v", req, err)
	}

	for ann, want := range map[string]string{
		`{"bridgehook.ports":"80"}`:           "annotation bridgehook.ports",
		`{"bridgehook.ports":"8080:80/icmp"}`: "protocol",
		`{"bridgehook.ip":"fd00::1"}`:         "not an IPv4 address",
	} {
		var a map[string]string
		if err := jsonUnmarshal(ann, &a); err != nil {
			t.Fatal(err)
		}
		if _, err := Defaults().requestOf(specs.State{ID: "a", Annotations: a}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", ann, err, want)
		}
	}
	internal := Defaults()
	internal.Internal = true
	if _, err := internal.requestOf(specs.State{ID: "a", Annotations: map[string]string{"bridgehook.ports": "80:80"}}); err == nil || !strings.Contains(err.Error(), "--internal") {
		t.Errorf("ports on an internal network: %v", err)
	}
}

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

func TestHostResolversSkipLoopback(t *testing.T) {
	dir := t.TempDir()
	stub, up := filepath.Join(dir, "stub"), filepath.Join(dir, "up")
	os.WriteFile(stub, []byte("nameserver 127.0.0.53\nsearch lan\n"), 0o644)
	os.WriteFile(up, []byte("nameserver 127.0.0.1\nnameserver 192.0.2.53\nsearch corp.example\n"), 0o644)
	defer func(old []string) { hostResolvConfs = old }(hostResolvConfs)

	hostResolvConfs = []string{filepath.Join(dir, "missing"), stub, up}
	servers, search, err := hostResolvers()
	if err != nil || len(servers) != 1 || servers[0].String() != "192.0.2.53" || strings.Join(search, " ") != "corp.example" {
		t.Errorf("got %v %v %v", servers, search, err)
	}
	hostResolvConfs = []string{stub}
	if _, _, err := hostResolvers(); err == nil || !strings.Contains(err.Error(), "--dns") {
		t.Errorf("only loopback: %v", err)
	}
}

func TestVethNames(t *testing.T) {
	c := Defaults()
	for iface, want := range map[string]string{"eth0": "netnsv0-4194304", "eth1": "netnsv1-4194304"} {
		c.Iface = iface
		if got := c.vethName(4194304); got != want {
			t.Errorf("%s: %s, want %s", iface, got, want)
		}
	}
	c.Iface = "uplink-a"
	if got := c.vethName(4194304); len(got) > 15 || !strings.HasPrefix(got, "bh") {
		t.Errorf("uplink-a: %s", got)
	}
	// gc recognises our names, and only ours, on an unlabelled veth.
	for _, iface := range []string{"eth0", "eth7", "uplink-a"} {
		c.Iface = iface
		if name := c.vethName(77); !isVethName(name) {
			t.Errorf("isVethName(%q) = false", name)
		}
	}
	for _, name := range []string{"veth1234", "netnsv0-", "netnsv10-5", "netnsv0-12a", "bhxyz12-5", "bh12345", "eth0", "docker0"} {
		if isVethName(name) {
			t.Errorf("isVethName(%q) = true", name)
		}
	}
}
