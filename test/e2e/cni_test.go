package e2e

// The CNI face, through libcni (what containerd, podman's CNI backend and
// CRI-O use) against the built binary, and by hand where a test needs a
// malformed call. Every plugin runs in a sandbox host: libcni execs it
// from a thread inside the sandbox's namespace.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/bridgehook/bridgehook/hook"
)

// debianPlugins is where Debian's containernetworking-plugins live.
const debianPlugins = "/usr/lib/cni"

// cniWorld is libcni set up for a sandbox: bridgehook (and Debian's
// plugins) on its path, its cache in a directory of the test's.
type cniWorld struct {
	sb  *sandbox
	cni *libcni.CNIConfig
	seq int
}

func newCNIWorld(t *testing.T, sb *sandbox) *cniWorld {
	t.Helper()
	for _, p := range []string{"bridge", "host-local", "tuning", "bandwidth", "loopback"} {
		if _, err := os.Stat(filepath.Join(debianPlugins, p)); err != nil {
			t.Fatalf("%s: install containernetworking-plugins (see make deps)", err)
		}
	}
	dir := t.TempDir()
	if err := os.Symlink(binary, filepath.Join(dir, "bridgehook")); err != nil {
		t.Fatal(err)
	}
	return &cniWorld{sb: sb, cni: libcni.NewCNIConfigWithCacheDir([]string{dir, debianPlugins}, t.TempDir(), nil)}
}

// conflist is a network configuration list of version v: bridgehook with
// the sandbox's state directory and the keys in extra, then plugins.
func (w *cniWorld) conflist(t *testing.T, v string, extra string, plugins ...string) *libcni.NetworkConfigList {
	t.Helper()
	bh := fmt.Sprintf(`{"type":"bridgehook","stateDir":%q,"logFile":%q,"capabilities":{"portMappings":true,"ips":true,"mac":true,"aliases":true}%s}`,
		w.sb.stateDir, filepath.Join(w.sb.stateDir, "log"), extra)
	list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":%q,"name":"bhnet","plugins":[%s]}`, v, strings.Join(append([]string{bh}, plugins...), ","))))
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// netns makes a pod's network namespace, as a runtime does: a bind mount
// under /run/netns, removed when the test ends.
func (w *cniWorld) netns(t *testing.T) string {
	t.Helper()
	w.seq++
	name := fmt.Sprintf("%s-pod%d", w.sb.name, w.seq)
	if out, err := w.sb.cmd("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { w.sb.cmd("ip", "netns", "del", name).Run() })
	return "/run/netns/" + name
}

// in runs fn where libcni must run: on a thread in the sandbox.
func (w *cniWorld) in(t *testing.T, fn func(ctx context.Context)) {
	inNetns(t, w.sb.ns, func() { fn(context.Background()) })
}

func (w *cniWorld) add(t *testing.T, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (res types.Result, err error) {
	w.in(t, func(ctx context.Context) { res, err = w.cni.AddNetworkList(ctx, list, rt) })
	return res, err
}

func (w *cniWorld) mustAdd(t *testing.T, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) *types100.Result {
	t.Helper()
	res, err := w.add(t, list, rt)
	if err != nil {
		t.Fatalf("ADD %s: %v", rt.ContainerID, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (w *cniWorld) del(t *testing.T, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (err error) {
	w.in(t, func(ctx context.Context) { err = w.cni.DelNetworkList(ctx, list, rt) })
	return err
}

func (w *cniWorld) check(t *testing.T, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (err error) {
	w.in(t, func(ctx context.Context) { err = w.cni.CheckNetworkList(ctx, list, rt) })
	return err
}

// addrsIn lists the global addresses of iface in the namespace at path.
func addrsIn(t *testing.T, path, iface string) []string {
	t.Helper()
	h := insidePath(t, path)
	defer h.Close()
	link, err := h.LinkByName(iface)
	if err != nil {
		return nil
	}
	addrs, _ := h.AddrList(link, netlink.FAMILY_ALL)
	var out []string
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			out = append(out, a.IPNet.String())
		}
	}
	slices.Sort(out)
	return out
}

// leaseIDs lists the ids of the leases of every network in the sandbox,
// as ls --all shows them.
func (s *sandbox) leaseIDs() []string {
	s.t.Helper()
	stdout, stderr, code := s.run("", "ls", "--all", "--json")
	var nets []hook.NetworkView
	if code != 0 || json.Unmarshal([]byte(stdout), &nets) != nil {
		s.t.Fatalf("ls --all --json: exit %d %s %s", code, stdout, stderr)
	}
	var ids []string
	for _, n := range nets {
		for _, ep := range n.Endpoints {
			ids = append(ids, ep.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestCNIConfigVersions: ADD, CHECK, DEL, GC and STATUS through libcni for
// every configuration version the plugin takes, each answered in its own
// result version.
func TestCNIConfigVersions(t *testing.T) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			sb := newSandbox(t)
			w := newCNIWorld(t, sb)
			list := w.conflist(t, v, `,"subnet":["10.89.0.0/24","fd89::/64"],"dns":{"nameservers":["10.89.0.53"]}`)
			path := w.netns(t)
			rt := &libcni.RuntimeConf{ContainerID: "pod1", NetNS: path, IfName: "eth0",
				CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}}}
			res, err := w.add(t, list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Errorf("result version %s, want %s", res.Version(), v)
			}
			r, _ := types100.NewResultFromResult(res)
			if len(r.IPs) != 2 || r.IPs[0].Address.String() != "10.89.0.2/24" || r.IPs[1].Address.String() != "fd89::2/64" ||
				len(r.Routes) != 2 || !slices.Equal(r.DNS.Nameservers, []string{"10.89.0.53"}) ||
				len(r.Interfaces) != 2 || r.Interfaces[1].Sandbox != path || !strings.HasPrefix(r.Interfaces[0].Name, "bhc") {
				b, _ := json.Marshal(r)
				t.Fatalf("result %s", b)
			}
			if got := addrsIn(t, path, "eth0"); !slices.Equal(got, []string{"10.89.0.2/24", "fd89::2/64"}) {
				t.Errorf("eth0 has %v", got)
			}
			if ids := sb.leaseIDs(); !slices.Equal(ids, []string{"pod1/eth0"}) {
				t.Errorf("ls shows %v", ids)
			}
			if !slices.ContainsFunc(sb.rules(), func(r string) bool { return strings.Contains(r, "8080") }) {
				t.Errorf("no rule for the port mapping: %v", sb.rules())
			}
			if v != "0.3.1" {
				if err := w.check(t, list, rt); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if v == "1.1.0" {
				w.in(t, func(ctx context.Context) { err = w.cni.GetStatusNetworkList(ctx, list) })
				if err != nil {
					t.Errorf("STATUS: %v", err)
				}
				w.in(t, func(ctx context.Context) {
					err = w.cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "pod1", IfName: "eth0"}}})
				})
				if err != nil || !slices.Equal(sb.leaseIDs(), []string{"pod1/eth0"}) {
					t.Errorf("GC keeping pod1: %v; leases %v", err, sb.leaseIDs())
				}
			}
			for range 2 { // DEL is idempotent
				if err := w.del(t, list, rt); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			sb.assertEmptyOf("netns0")
		})
	}
}

// assertEmptyOf is assertEmpty for a network whose bridge stays: no
// lease, no veth of ours and no port rule are left.
func (s *sandbox) assertEmptyOf(bridge string) {
	s.t.Helper()
	if ids := s.leaseIDs(); len(ids) != 0 {
		s.t.Errorf("leases left: %v", ids)
	}
	links, _ := s.nl.LinkList()
	for _, l := range links {
		if l.Type() == "veth" && (strings.HasPrefix(l.Attrs().Name, "bhc") || strings.HasPrefix(l.Attrs().Name, "netnsv")) {
			s.t.Errorf("veth left: %s", l.Attrs().Name)
		}
	}
	for _, r := range s.rules() {
		if strings.Contains(r, "-j DNAT") || strings.Contains(r, "dnat ") {
			s.t.Errorf("port rule left: %s", r)
		}
	}
}

// TestCNIDelAfterTheNamespaceWent: a DEL for a pod whose namespace is
// gone already succeeds, and releases the lease.
func TestCNIDelAfterTheNamespaceWent(t *testing.T) {
	sb := newSandbox(t)
	w := newCNIWorld(t, sb)
	list := w.conflist(t, "1.0.0", "")
	path := w.netns(t)
	rt := &libcni.RuntimeConf{ContainerID: "gone", NetNS: path, IfName: "eth0"}
	w.mustAdd(t, list, rt)
	if out, err := sb.cmd("ip", "netns", "del", filepath.Base(path)).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if err := w.del(t, list, rt); err != nil {
		t.Fatalf("DEL after the namespace went: %v", err)
	}
	sb.waitVethsGone()
	waitFor(t, "the kernel to delete the pod's veth", func() bool {
		links, _ := sb.nl.LinkList()
		return !slices.ContainsFunc(links, func(l netlink.Link) bool { return strings.HasPrefix(l.Attrs().Name, "bhc") })
	})
	if ids := sb.leaseIDs(); len(ids) != 0 {
		t.Errorf("leases left: %v", ids)
	}
}

// TestCNIGCRemovesWhatIsNotValid: GC with valid-attachments releases the
// attachments not listed, veth and rules with them, and keeps the others
// and the hook's own containers.
func TestCNIGCRemovesWhatIsNotValid(t *testing.T) {
	sb := newSandbox(t)
	w := newCNIWorld(t, sb)
	list := w.conflist(t, "1.1.0", "")
	keep, drop := w.netns(t), w.netns(t)
	w.mustAdd(t, list, &libcni.RuntimeConf{ContainerID: "keep", NetNS: keep, IfName: "eth0"})
	w.mustAdd(t, list, &libcni.RuntimeConf{ContainerID: "drop", NetNS: drop, IfName: "eth0",
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 9090, "containerPort": 90}}}})
	sb.mustHook(setupState("hooked", sb.container())) // the same network, through the hook
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"bhnet","type":"bridgehook","stateDir":%q,"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}`, sb.stateDir)
	if out, code := sb.cniExec(conf, "GC", "", "", ""); code != 0 {
		t.Fatalf("GC: exit %d %s", code, out)
	}
	if ids := sb.leaseIDs(); !slices.Equal(ids, []string{"hooked", "keep/eth0"}) {
		t.Errorf("after GC: leases %v", ids)
	}
	if slices.ContainsFunc(sb.rules(), func(r string) bool { return strings.Contains(r, "9090") }) {
		t.Error("the dropped attachment's port rule is left")
	}
	if got := addrsIn(t, drop, "eth0"); len(got) != 0 {
		t.Errorf("the dropped pod still has eth0 with %v", got)
	}
	if got := addrsIn(t, keep, "eth0"); len(got) != 1 {
		t.Errorf("the kept pod's eth0 has %v", got)
	}

	// The hook's commands handle attachments too: inspect finds one by
	// its key, network rm refuses while its namespace lives, and gc
	// reclaims it once the runtime has removed the namespace without a
	// DEL (a crashed runtime).
	if stdout, stderr, code := sb.run("", "inspect", "keep/eth0"); code != 0 || !strings.Contains(stdout, `"id": "keep/eth0"`) {
		t.Errorf("inspect keep/eth0: exit %d %s %s", code, stdout, stderr)
	}
	sb.mustHook(stopState("hooked"))
	if _, stderr, code := sb.run("", "network", "rm"); code != 2 || !strings.Contains(stderr, "keep/eth0") {
		t.Errorf("network rm with a live pod: exit %d %s", code, stderr)
	}
	if out, err := sb.cmd("ip", "netns", "del", filepath.Base(keep)).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	stdout, stderr, code := sb.run("", "gc")
	if code != 0 || !strings.Contains(stdout, "from keep/eth0") {
		t.Errorf("gc after the pod's namespace went: exit %d %q %q", code, stdout, stderr)
	}
	if ids := sb.leaseIDs(); len(ids) != 0 {
		t.Errorf("after gc: leases %v", ids)
	}
	if stdout, stderr, code := sb.run("", "network", "rm"); code != 0 {
		t.Errorf("network rm: exit %d %s %s", code, stdout, stderr)
	}
	sb.assertEmpty()
}

// cniExec runs the binary as a CNI runtime would, in the sandbox, and
// returns its stdout and exit status.
func (s *sandbox) cniExec(stdin, command, containerID, netnsPath, ifname string) (string, int) {
	s.t.Helper()
	c := s.cmd(binary)
	c.Stdin = strings.NewReader(stdin)
	c.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_PATH="+debianPlugins)
	for k, v := range map[string]string{"CNI_CONTAINERID": containerID, "CNI_NETNS": netnsPath, "CNI_IFNAME": ifname} {
		if v != "" {
			c.Env = append(c.Env, k+"="+v)
		}
	}
	out, err := c.Output()
	code := 0
	if err != nil {
		code = c.ProcessState.ExitCode()
	}
	return string(out), code
}

// TestCNIChainWithTuningAndBandwidth: Debian's tuning and bandwidth
// plugins take bridgehook's result as their prevResult.
func TestCNIChainWithTuningAndBandwidth(t *testing.T) {
	sb := newSandbox(t)
	w := newCNIWorld(t, sb)
	list := w.conflist(t, "1.0.0", "",
		`{"type":"tuning","sysctl":{"net.core.somaxconn":"512"}}`,
		`{"type":"bandwidth","ingressRate":1000000,"ingressBurst":200000}`)
	path := w.netns(t)
	rt := &libcni.RuntimeConf{ContainerID: "chained", NetNS: path, IfName: "eth0"}
	r := w.mustAdd(t, list, rt)
	if got := sb.sysctl(path, "/proc/sys/net/core/somaxconn"); got != "512" {
		t.Errorf("tuning: somaxconn %s in the pod, want 512", got)
	}
	host, err := sb.nl.LinkByName(r.Interfaces[0].Name)
	if err != nil {
		t.Fatalf("host veth %s: %v", r.Interfaces[0].Name, err)
	}
	qdiscs, _ := sb.nl.QdiscList(host)
	if !slices.ContainsFunc(qdiscs, func(q netlink.Qdisc) bool { return q.Type() == "tbf" }) {
		t.Errorf("bandwidth: no tbf qdisc on %s: %v", host.Attrs().Name, qdiscs)
	}
	if err := w.check(t, list, rt); err != nil {
		t.Errorf("CHECK of the chain: %v", err)
	}
	if err := w.del(t, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	sb.assertEmptyOf("netns0")
}

// TestCNIFiftyConcurrentAdds: 50 ADDs at once get 50 distinct addresses;
// 50 DELs leave nothing.
func TestCNIFiftyConcurrentAdds(t *testing.T) {
	sb := newSandbox(t)
	w := newCNIWorld(t, sb)
	list := w.conflist(t, "1.1.0", `,"subnet":"10.90.0.0/24"`)
	const n = 50
	rts := make([]*libcni.RuntimeConf, n)
	for i := range rts {
		rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprint("p", i), NetNS: w.netns(t), IfName: "eth0"}
	}
	ips := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := w.add(t, list, rts[i])
			if err != nil {
				t.Errorf("ADD %d: %v", i, err)
				return
			}
			r, _ := types100.NewResultFromResult(res)
			ips[i] = r.IPs[0].Address.String()
		})
	}
	wg.Wait()
	if seen := slices.Compact(slices.Sorted(slices.Values(ips))); len(seen) != n || seen[0] == "" {
		t.Fatalf("%d distinct addresses of %d: %v", len(seen), n, ips)
	}
	for i := range n {
		if got := addrsIn(t, rts[i].NetNS, "eth0"); !slices.Equal(got, []string{ips[i]}) {
			t.Errorf("pod %d has %v, its result says %s", i, got, ips[i])
		}
	}
	for i := range n {
		wg.Go(func() {
			if err := w.del(t, list, rts[i]); err != nil {
				t.Errorf("DEL %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	sb.assertEmptyOf("netns0")
}

// TestCNIBadInput: each bad configuration or environment is a CNI error
// with the spec's code and a message naming what to fix, and leaves
// nothing behind.
func TestCNIBadInput(t *testing.T) {
	sb := newSandbox(t)
	w := newCNIWorld(t, sb)
	path := w.netns(t)
	notNS := filepath.Join(t.TempDir(), "not-a-netns")
	os.WriteFile(notNS, nil, 0o600)
	conf := func(extra string) string {
		return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"bhnet","type":"bridgehook","stateDir":%q%s}`, sb.stateDir, extra)
	}
	for _, tc := range []struct {
		name, stdin, netns, ifname string
		code                       int
		want                       string
	}{
		{"bad subnet", conf(`,"subnet":"10.0.0.5/24"`), path, "eth0", 7, `"subnet" 10.0.0.5/24: not a network address`},
		{"three subnets", conf(`,"subnet":["10.0.0.0/24","fd00::/64","10.1.0.0/24"]`), path, "eth0", 7, "one IPv4 and one IPv6"},
		{"subnet not a string", conf(`,"subnet":5`), path, "eth0", 7, `"subnet": want a string`},
		{"unknown firewall", conf(`,"firewall":"pf"`), path, "eth0", 7, `"firewall" "pf": want iptables or nftables`},
		{"bad dns", conf(`,"dns":{"nameservers":["x"]}`), path, "eth0", 7, `"dns": nameserver "x" is not an IP address`},
		{"port on ::1", conf(`,"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"::1"}]}`), path, "eth0", 7, "IPv6 cannot forward loopback"},
		{"static ip outside", conf(`,"runtimeConfig":{"ips":["10.99.0.5/24"]}`), path, "eth0", 7, "runtimeConfig.ips: address not leasable: 10.99.0.5 is outside subnet 172.19.0.0/16"},
		{"multicast mac", conf(`,"runtimeConfig":{"mac":"01:00:5e:00:00:01"}`), path, "eth0", 7, "not a unicast Ethernet address"},
		{"not a netns", conf(""), notNS, "eth0", 4, "not a network namespace"},
		{"missing CNI_IFNAME", conf(""), path, "", 4, "CNI_IFNAME"},
		{"CNI_IFNAME lo", conf(""), path, "lo", 4, `CNI_IFNAME "lo": the loopback interface`},
		{"CNI_IFNAME too long", conf(""), path, "eth0123456789abc", 4, "interface name is too long"},
		{"CNI_IFNAME with a slash", conf(""), path, "a/b", 4, "interface name contains /"},
		{"the plugin's own netns", conf(""), sb.path, "eth0", 4, "the plugin's own network namespace"},
		// PID 1's namespace is the real host's. Here /proc/1/ns/net
		// cannot be opened (a refusal of its own); on a host where it
		// can, it is refused as the host's.
		{"PID 1's netns", conf(""), "/proc/1/ns/net", "eth0", 4, "CNI_NETNS /proc/1/ns/net"},
		{"garbage on stdin", "garbage", path, "eth0", 6, "not a JSON object"},
		{"a JSON array on stdin", "[1,2]", path, "eth0", 6, "not a JSON object"},
		{"10 MB of junk on stdin", strings.Repeat("junk", 10<<18), path, "eth0", 6, "not a JSON object"},
		{"no name", `{"cniVersion":"1.1.0","type":"bridgehook"}`, path, "eth0", 7, `missing "name"`},
		{"old version", `{"cniVersion":"0.2.0","name":"bhnet","type":"bridgehook"}`, path, "eth0", 1, "incompatible CNI versions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := sb.cniExec(tc.stdin, "ADD", "pod1", tc.netns, tc.ifname)
			var e types.Error
			if code != 1 || json.Unmarshal([]byte(out), &e) != nil || int(e.Code) != tc.code || !strings.Contains(e.Msg+" "+e.Details, tc.want) {
				t.Errorf("exit %d, stdout %s; want CNI error %d naming %q", code, out, tc.code, tc.want)
			}
			if ids := sb.leaseIDs(); len(ids) != 0 {
				t.Errorf("leases left: %v", ids)
			}
			if links, _ := sb.nl.LinkList(); slices.ContainsFunc(links, func(l netlink.Link) bool { return l.Type() == "veth" }) {
				t.Error("a veth is left")
			}
		})
	}
	// A runtime that passes CNI_COMMAND on to its hooks: an OCI state on
	// stdin is still a hook run.
	c := sb.bridgehook(setupState("oci", sb.container()))
	c.Env = append(os.Environ(), "CNI_COMMAND=ADD")
	if out, err := c.CombinedOutput(); err != nil {
		t.Errorf("hook run with CNI_COMMAND set: %v %s", err, out)
	}
	if ids := sb.leaseIDs(); !slices.Equal(ids, []string{"oci"}) {
		t.Errorf("leases %v, want the hook's", ids)
	}
}
