package e2e

// A real CNI client: Debian's containerd runs busybox containers with
// `ctr run --cni`, using a conflist that names bridgehook. containerd has
// its own root, state and socket, and runs in a private mount namespace
// where temporary directories are bind-mounted over /etc/cni/net.d and
// /opt/cni/bin: the host's configuration stays untouched.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ociImage writes an OCI image layout tarball of rootfs named name, for
// `ctr images import`; it runs sh unless told cmd.
func ociImage(t *testing.T, rootfs, name, path string, cmd ...string) {
	t.Helper()
	if len(cmd) == 0 {
		cmd = []string{"sh"}
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	err := filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == rootfs {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&os.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = strings.TrimPrefix(p, rootfs+"/")
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(data)
			return err
		}
		return nil
	})
	if err != nil || tw.Close() != nil {
		t.Fatalf("layer: %v", err)
	}
	blobs := map[string][]byte{}
	blob := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d, len(b)
	}
	layerDigest, layerSize := blob(layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": cmd, "Env": []string{"PATH=/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	configDigest, configSize := blob(config)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	manifestDigest, manifestSize := blob(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
			"annotations": map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"},
		}},
	})
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := tar.NewWriter(f)
	add := func(name string, data []byte) {
		out.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		out.Write(data)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for d, b := range blobs {
		add("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestContainerdRunsWithCNI(t *testing.T) {
	requireRoot(t, "containerd", "ctr", "containerd-shim-runc-v2", "runc", "busybox")
	sb := newSandbox(t)
	dir := t.TempDir()
	image := "docker.io/library/bhbusybox:latest"
	ociImage(t, rootfs(t), image, filepath.Join(dir, "image.tar"))
	bin := filepath.Join(dir, "bin")
	netd := filepath.Join(dir, "net.d")
	for _, d := range []string{bin, netd} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(binary, filepath.Join(bin, "bridgehook")); err != nil {
		t.Fatal(err)
	}
	plugins, _ := filepath.Glob(debianPlugins + "/*")
	for _, p := range plugins {
		os.Symlink(p, filepath.Join(bin, filepath.Base(p)))
	}
	conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bh","plugins":[{"type":"bridgehook","bridge":"ctrd0","subnet":"10.91.0.0/24","stateDir":%q,"logFile":%q}]}`,
		sb.stateDir, filepath.Join(sb.stateDir, "log"))
	if err := os.WriteFile(filepath.Join(netd, "10-bridgehook.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "containerd.sock"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// One shell in the sandbox's network namespace and a mount namespace
	// of its own runs containerd and ctr: ctr runs the CNI plugins itself,
	// so it must see the bind mounts too.
	script := `set -e
mount --make-rprivate /
for d in /etc /opt; do
	mkdir -p "$T/over$d/up" "$T/over$d/work"
	mount -t overlay overlay -o "lowerdir=$d,upperdir=$T/over$d/up,workdir=$T/over$d/work" "$d"
done
mkdir -p /etc/cni/net.d /opt/cni/bin
mount --bind "$T/net.d" /etc/cni/net.d
mount --bind "$T/bin" /opt/cni/bin
containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
daemon=$!
trap 'kill $daemon; wait $daemon' EXIT
ctr() { command ctr --address "$T/containerd.sock" "$@"; }
for i in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
ctr images import "$T/image.tar" >/dev/null
ctr run --cni --rm "$IMAGE" first sleep 600 >"$T/first.log" 2>&1 &
first=$!
# ctr names the attachment NAMESPACE-ID: the lease is default-first/eth0.
for i in $(seq 100); do grep -q '"default-first/eth0"' "$STATE"/*/leases/* 2>/dev/null && break; sleep 0.1; done
ctr run --cni --rm "$IMAGE" second sh -c 'ping -c1 -W2 10.91.0.1 && ping -c1 -W2 10.91.0.2'
echo SECOND-PINGED
ctr task kill -s KILL first
wait $first || true
`
	c := sb.cmd("unshare", "-m", "sh", "-c", script)
	c.Env = append(os.Environ(), "T="+dir, "IMAGE="+image, "STATE="+sb.stateDir)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = c.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		c.Process.Kill()
		<-done
	}
	if err != nil || !strings.Contains(string(out), "SECOND-PINGED") {
		log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
		t.Fatalf("ctr run --cni: %v\n%s\ncontainerd:\n%s", err, out, log)
	}
	// Both containers have exited and ctr has run DEL: nothing is left.
	if ids := sb.leaseIDs(); len(ids) != 0 {
		t.Errorf("leases left: %v", ids)
	}
	waitFor(t, "the containers' veths to go", func() bool {
		links, _ := sb.nl.LinkList()
		for _, l := range links {
			if l.Type() == "veth" {
				return false
			}
		}
		return true
	})
}
