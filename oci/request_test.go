package oci

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRequestFromStateOrBundle(t *testing.T) {
	bundle := t.TempDir()
	spec := `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"annotations":{"bridgehook.ports":"8080:80","bridgehook.ip":"172.19.0.9"}}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	c := hook.Defaults()
	// The runtime sent no annotations: they come from config.json.
	req, err := Request(c, specs.State{ID: "a", Bundle: bundle})
	if err != nil || len(req.Ports) != 1 || req.Ports[0].String() != "8080:80/tcp" || req.IP.String() != "172.19.0.9" {
		t.Fatalf("from config.json: %+v %v", req, err)
	}
	// The state's annotations win.
	req, err = Request(c, specs.State{ID: "a", Bundle: bundle, Annotations: map[string]string{"x": "y"}})
	if err != nil || len(req.Ports) != 0 || req.IP.IsValid() {
		t.Fatalf("from the state: %+v %v", req, err)
	}
	c.DNS = []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	if req, err = Request(c, specs.State{ID: "a", Bundle: bundle, Annotations: map[string]string{}}); err != nil || req.Rootfs != filepath.Join(bundle, "rootfs") {
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
		if _, err := Request(hook.Defaults(), specs.State{ID: "a", Annotations: a}); err == nil || !strings.Contains(input.Render(err, Spell), want) {
			t.Errorf("%s: %v, want %q", ann, err, want)
		}
	}
	internal := hook.Defaults()
	internal.Internal = true
	req, err = Request(internal, specs.State{ID: "a", Pid: 5, Annotations: map[string]string{"bridgehook.ports": "80:80"}})
	if err == nil {
		err = req.Check(internal)
	}
	if err == nil || !strings.Contains(input.Render(err, Spell), "--internal") {
		t.Errorf("ports on an internal network: %v", err)
	}
}

func TestNamesFromTheBundle(t *testing.T) {
	// As podman lays a container out: GRAPHROOT/vfs-containers/ID/userdata,
	// with containers.json beside the containers' directories.
	root := t.TempDir()
	bundle := filepath.Join(root, "vfs-containers", "c1", "userdata")
	os.MkdirAll(bundle, 0o755)
	os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.0.2","hostname":"c1short","root":{"path":"rootfs"}}`), 0o644)
	os.WriteFile(filepath.Join(root, "vfs-containers", "containers.json"), []byte(`[{"id":"c0","names":["other"]},{"id":"c1","names":["db"]}]`), 0o644)
	c := hook.Defaults()
	c.Names = true
	st := specs.State{ID: "c1", Bundle: bundle, Annotations: map[string]string{"io.container.manager": "libpod", "bridgehook.aliases": "database, pg"}}
	req, err := Request(c, st)
	if err != nil || strings.Join(req.Names, " ") != "c1short db database pg" || req.Rootfs != filepath.Join(bundle, "rootfs") {
		t.Errorf("names %v, rootfs %s, %v", req.Names, req.Rootfs, err)
	}
	// Without names, none is read.
	c.Names = false
	if req, _ := Request(c, st); req.Names != nil {
		t.Errorf("names without names: %v", req.Names)
	}
}
