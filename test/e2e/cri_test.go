package e2e

// The kubelet's path: containerd's CRI plugin runs the CNI chain for each
// pod sandbox, driven here by crictl as the kubelet drives it over CRI.
// containerd runs in the sandbox's network namespace and a mount
// namespace of its own, with a tmpfs over /run/containerd and its root,
// state, socket, plugins' dir and CNI directories under the test's.

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// crictlVersion is the cri-tools release the test builds crictl from.
const crictlVersion = "v1.37.0"

var (
	crictlOnce sync.Once
	crictlPath string
	crictlErr  error
)

// crictl builds crictl into a temporary directory, once per test binary.
func crictl(t *testing.T) string {
	crictlOnce.Do(func() {
		dir, err := os.MkdirTemp("", "crictl-")
		if err != nil {
			crictlErr = err
			return
		}
		cmd := exec.Command("go", "install", "sigs.k8s.io/cri-tools/cmd/crictl@"+crictlVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			crictlErr = fmt.Errorf("go install crictl: %v\n%s", err, out)
			return
		}
		crictlPath = filepath.Join(dir, "crictl")
	})
	if crictlErr != nil {
		t.Fatal(crictlErr)
	}
	return crictlPath
}

// cri is a containerd with its CRI plugin, in sandbox sb.
type cri struct {
	t       *testing.T
	sb      *sandbox
	dir     string
	crictl  string
	daemon  *exec.Cmd
	network string // the conflist's plugin configuration
}

func newCRI(t *testing.T, sb *sandbox, plugin string) *cri {
	requireRoot(t, "containerd", "ctr", "containerd-shim-runc-v2", "runc", "busybox", "go")
	c := &cri{t: t, sb: sb, dir: t.TempDir(), crictl: crictl(t), network: plugin}
	for _, d := range []string{"bin", "net.d", "logs", "opt"} {
		if err := os.Mkdir(filepath.Join(c.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The CRI plugin runs loopback for every pod: Debian's, beside ours.
	for name, to := range map[string]string{"bridgehook": binary, "loopback": debianPlugins + "/loopback"} {
		if err := os.Symlink(to, filepath.Join(c.dir, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	conflist := `{"cniVersion":"1.0.0","name":"bh","plugins":[` + plugin + `]}`
	c.write("net.d/10-bridgehook.conflist", conflist)
	c.write("crictl.yaml", "")
	c.write("config.toml", fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/bhpause:latest"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[5]q
    conf_dir = %[6]q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`, c.path("root"), c.path("state"), c.path("containerd.sock"), c.path("opt"), c.path("bin"), c.path("net.d")))
	root := rootfs(t)
	ociImage(t, root, "docker.io/library/bhpause:latest", c.path("pause.tar"), "sleep", "inf")
	ociImage(t, root, "docker.io/library/bhbusybox:latest", c.path("busybox.tar"))
	c.start()
	return c
}

func (c *cri) path(p string) string { return filepath.Join(c.dir, p) }

func (c *cri) write(p, data string) {
	if err := os.WriteFile(c.path(p), []byte(data), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// start runs containerd, waits for its socket and imports the images.
func (c *cri) start() {
	t := c.t
	script := `set -e
mount --make-rprivate /
mkdir -p /run/containerd
mount -t tmpfs tmpfs /run/containerd
exec containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1`
	c.daemon = c.sb.cmd("unshare", "-m", "sh", "-c", script)
	c.daemon.Env = append(os.Environ(), "T="+c.dir)
	if err := c.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.daemon.Process.Kill()
		c.daemon.Wait()
		// Shims outlive a killed containerd: theirs name its socket.
		exec.Command("pkill", "-KILL", "-f", c.path("containerd.sock")).Run()
	})
	waitFor(t, "containerd's socket", func() bool {
		return exec.Command("ctr", "--address", c.path("containerd.sock"), "version").Run() == nil
	})
	// Pods a failed test left: containerd stops them, or their processes
	// outlive it and its shims.
	t.Cleanup(func() { c.run("rmp", "-fa") })
	for _, img := range []string{"pause.tar", "busybox.tar"} {
		if out, err := exec.Command("ctr", "--address", c.path("containerd.sock"), "-n", "k8s.io", "images", "import", c.path(img)).CombinedOutput(); err != nil {
			t.Fatalf("ctr images import %s: %v\n%s", img, err, out)
		}
	}
}

// run runs crictl against the daemon: its output, and its complaints in
// the error.
func (c *cri) run(args ...string) (string, error) {
	base := []string{"--config", c.path("crictl.yaml"), "--runtime-endpoint", "unix://" + c.path("containerd.sock"),
		"--image-endpoint", "unix://" + c.path("containerd.sock"), "--timeout", "60s"}
	var stderr strings.Builder
	// In the sandbox: the stream server that exec goes through listens on
	// its 127.0.0.1.
	cmd := c.sb.cmd(append([]string{c.crictl}, append(base, args...)...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%v: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), err
}

func (c *cri) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		log, _ := os.ReadFile(c.path("containerd.log"))
		c.t.Fatalf("crictl %s: %v\n%s\ncontainerd:\n%s", strings.Join(args, " "), err, out, tail(string(log), 30))
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pod runs a pod sandbox with one busybox container running sh -c cmd,
// publishing hostPort to its port 80 if hostPort is not 0: the pod's and
// the container's ids.
func (c *cri) pod(name string, hostPort int, cmd string) (pod, ctr string) {
	var ports []any
	if hostPort != 0 {
		// crictl's pod config takes the protocol as a number: 0 is TCP.
		ports = append(ports, map[string]any{"protocol": 0, "container_port": 80, "host_port": hostPort})
	}
	podCfg, _ := json.Marshal(map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": "uid-" + name, "attempt": 0},
		"hostname":      name,
		"log_directory": c.path("logs/" + name),
		"port_mappings": ports,
		"linux":         map[string]any{},
	})
	ctrCfg, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"name": "main"},
		"image":    map[string]any{"image": "docker.io/library/bhbusybox:latest"},
		"command":  []string{"sh", "-c", cmd},
		"log_path": "main.log",
		"linux":    map[string]any{},
	})
	c.write(name+"-pod.json", string(podCfg))
	c.write(name+"-ctr.json", string(ctrCfg))
	pod = c.must("runp", c.path(name+"-pod.json"))
	ctr = c.must("create", pod, c.path(name+"-ctr.json"), c.path(name+"-pod.json"))
	c.must("start", ctr)
	return pod, ctr
}

// addrs are the pod's addresses as the CRI reports them.
func (c *cri) addrs(pod string) []netip.Addr {
	c.t.Helper()
	var st struct {
		Status struct {
			Network struct {
				IP            string `json:"ip"`
				AdditionalIPs []struct {
					IP string `json:"ip"`
				} `json:"additionalIps"`
			} `json:"network"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(c.must("inspectp", pod)), &st); err != nil {
		c.t.Fatal(err)
	}
	ips := []string{st.Status.Network.IP}
	for _, a := range st.Status.Network.AdditionalIPs {
		ips = append(ips, a.IP)
	}
	var out []netip.Addr
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// ping pings addr from container ctr.
func (c *cri) ping(ctr string, addr netip.Addr) bool {
	out, err := c.run("exec", ctr, "ping", "-c1", "-W2", addr.String())
	if err != nil {
		c.t.Logf("ping %v: %v\n%s", addr, err, out)
	}
	return err == nil
}

// TestTheKubeletsPath runs two pods through containerd's CRI plugin on a
// bridgehook network, IPv4 and dual-stack: their addresses come from the
// network, they reach each other, the gateway and a client outside, a
// hostPort answers from outside, `bridgehook ls` shows them, and stopp
// and rmp leave no lease, veth or port rule.
func TestTheKubeletsPath(t *testing.T) {
	for _, tc := range []struct {
		name    string
		subnets []string
	}{
		{"ipv4", []string{"10.93.0.0/24"}},
		{"dual-stack", []string{"10.94.0.0/24", "fd94::/64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSandbox(t)
			cl := sb.addClient6()
			subnets, _ := json.Marshal(tc.subnets)
			plugin := fmt.Sprintf(`{"type":"bridgehook","bridge":"cri0","subnet":%s,"stateDir":%q,"capabilities":{"portMappings":true}}`, subnets, sb.stateDir)
			c := newCRI(t, sb, plugin)
			a, ctrA := c.pod("a", 8080, "mkdir -p /www && echo hello from a > /www/index.html && exec httpd -f -p 80 -h /www")
			b, ctrB := c.pod("b", 0, "exec sleep inf")
			addrA, addrB := c.addrs(a), c.addrs(b)
			c.checkPods(tc.subnets, addrA, addrB)
			for _, p := range []struct {
				ctr  string
				dst  netip.Addr
				what string
			}{
				{ctrA, addrB[0], "pod b"}, {ctrB, addrA[0], "pod a"},
				{ctrA, gatewayOf(tc.subnets[0]), "the gateway"}, {ctrB, netip.MustParseAddr(clientAddr), "the client outside"},
			} {
				if !c.ping(p.ctr, p.dst) {
					t.Errorf("%s cannot reach %s (%v)", p.ctr[:12], p.what, p.dst)
				}
			}
			if len(tc.subnets) > 1 && (!c.ping(ctrA, addrB[1]) || !c.ping(ctrB, netip.MustParseAddr(clientAddr6))) {
				t.Errorf("IPv6: pod a to pod b (%v), pod b to the client (%v)", addrB[1], clientAddr6)
			}
			waitFor(t, "the hostPort from outside", func() bool {
				out, err := httpGet(t, cl.ns, hostAddr+":8080")
				return err == nil && out == "hello from a\n"
			})
			c.checkLs(addrA[0], addrB[0])
			for _, pod := range []string{a, b} {
				c.must("stopp", pod)
				c.must("rmp", pod)
			}
			if ids := sb.leaseIDs(); len(ids) != 0 {
				t.Errorf("leases left after stopp and rmp: %v", ids)
			}
			sb.waitVethsGone()
			for _, r := range sb.rules() {
				if strings.Contains(r, "8080") {
					t.Errorf("port rule left: %s", r)
				}
			}
		})
	}
}

// checkPods checks that each pod has an address in each subnet, and
// that they differ.
func (c *cri) checkPods(subnets []string, pods ...[]netip.Addr) {
	c.t.Helper()
	for i, addrs := range pods {
		if len(addrs) != len(subnets) {
			c.t.Fatalf("pod %d has addresses %v; want one in each of %v", i, addrs, subnets)
		}
		for j, s := range subnets {
			if !netip.MustParsePrefix(s).Contains(addrs[j]) {
				c.t.Errorf("pod %d: %v is not in %s", i, addrs[j], s)
			}
		}
	}
	if pods[0][0] == pods[1][0] {
		c.t.Errorf("both pods have %v", pods[0][0])
	}
}

// checkLs checks that `bridgehook ls`, run where containerd mounts the
// pods' namespaces, shows the pods running.
func (c *cri) checkLs(addrs ...netip.Addr) {
	c.t.Helper()
	args := []string{"--mount=/proc/" + fmt.Sprint(c.daemon.Process.Pid) + "/ns/mnt", binary, "--state-dir", c.sb.stateDir, "ls", "--all"}
	out, err := c.sb.cmd(append([]string{"nsenter"}, args...)...).CombinedOutput()
	for _, a := range addrs {
		if err != nil || !strings.Contains(string(out), a.String()) || strings.Contains(string(out), "stale") {
			c.t.Errorf("bridgehook ls: %v\n%s\nwant %v running", err, out, a)
		}
	}
}

func gatewayOf(subnet string) netip.Addr {
	return netip.MustParsePrefix(subnet).Masked().Addr().Next()
}
