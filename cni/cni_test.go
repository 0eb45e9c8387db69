package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/internal/fake"
	"github.com/bridgehook/bridgehook/ipam"
)

func TestWants(t *testing.T) {
	for _, tc := range []struct {
		command, stdin string
		want           bool
	}{
		{"ADD", `{"cniVersion":"1.1.0","name":"n","type":"bridgehook"}`, true},
		{"VERSION", ``, true},
		{"VERSION", `{"cniVersion":"1.0.0"}`, true},
		// A hook whose runtime passed its CNI environment on.
		{"ADD", `{"ociVersion":"1.0.2","id":"c","pid":5,"status":"creating"}`, false},
		{"ADD", `{"cniVersion":"1.0.0","ociVersion":"1.0.2","id":"c"}`, false},
		{"ADD", `not json`, true},
		{"ADD", `[1,2]`, true},
		{"ADD", `{"name":"n"}`, true},
		{"ADD", `{"id":"c","pid":5,"status":"creating"}`, false},
		{"", `{"cniVersion":"1.1.0"}`, false},
	} {
		if got := Wants(tc.command, []byte(tc.stdin)); got != tc.want {
			t.Errorf("Wants(%q, %s) = %v, want %v", tc.command, tc.stdin, got, tc.want)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code uint
	}{
		{fmt.Errorf("open: %w", input.Errorf(input.Netns, "/x: not a network namespace")), types.ErrInvalidEnvironmentVariables},
		{input.Errorf(input.Iface, `"a/b": not allowed`), types.ErrInvalidEnvironmentVariables},
		{fmt.Errorf("%w in 10.0.0.0/30", ipam.ErrExhausted), types.ErrTryAgainLater},
		{input.Errorf(input.Subnet, "x"), types.ErrInvalidNetworkConfig},
		{errors.New("netlink: boom"), types.ErrInternal},
	} {
		var e *types.Error
		if !errors.As(asCNI(tc.err), &e) || e.Code != tc.code {
			t.Errorf("%v: got %v, want code %d", tc.err, asCNI(tc.err), tc.code)
		}
	}
	var e *types.Error
	if errors.As(asCNI(fmt.Errorf("setup: %w", input.Errorf(input.Subnet, "x: use {mtu}"))), &e); e.Msg != `setup: "subnet" x: use "mtu"` {
		t.Errorf("settings not named by their keys: %s", e.Msg)
	}
}

// verbs is the plugin over the fakes of package fake, with a namespace
// bound at a path per pod.
type verbs struct {
	t        *testing.T
	p        plugin
	out      *bytes.Buffer
	sys      *fake.System
	host     *fake.Host
	fw       *fake.Firewall
	stateDir string
	log      string
}

func newVerbs(t *testing.T) *verbs {
	sys := fake.NewSystem()
	fails := fake.Fails{}
	v := &verbs{t: t, out: &bytes.Buffer{}, sys: sys, host: fake.NewHost(sys, fails), fw: fake.NewFirewall(fails),
		stateDir: t.TempDir(), log: filepath.Join(t.TempDir(), "cni.log")}
	opts := []hook.Option{hook.WithHost(v.host), hook.WithFirewall(v.fw), hook.WithGuard(fake.NewGuard(fails)), hook.WithTenant(nil), hook.WithStores(&ipam.Memories{}), hook.WithSystem(sys), hook.WithGeneration((&fake.Gen{}).Get)}
	v.p = plugin{opts: opts, out: v.out}
	return v
}

// conf is the network configuration, with extra keys added.
func (v *verbs) conf(extra string) []byte {
	return fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"n","type":"bridgehook","subnet":["10.10.0.0/24","fd10::/64"],"stateDir":%q,"logFile":%q%s}`,
		v.stateDir, v.log, extra)
}

// args is a call for pod's eth0, its namespace a fake container's.
func (v *verbs) args(pod string, pid int, stdin []byte) *skel.CmdArgs {
	path := "/run/netns/" + pod
	v.sys.Paths[path] = v.sys.Container(pid)
	return &skel.CmdArgs{ContainerID: pod, Netns: path, IfName: "eth0", StdinData: stdin}
}

// The verbs over the orchestration: ADD answers with the addresses and
// routes CHECK is then given, GC keeps what the runtime lists, DEL is
// idempotent, and each call is logged.
func TestVerbs(t *testing.T) {
	v := newVerbs(t)
	add := v.args("pod1", 10, v.conf(`,"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}`))
	if err := v.p.add(add); err != nil {
		t.Fatal(err)
	}
	var res types100.Result
	if err := json.Unmarshal(v.out.Bytes(), &res); err != nil {
		t.Fatalf("ADD printed %s: %v", v.out, err)
	}
	if len(res.IPs) != 2 || res.IPs[0].Address.String() != "10.10.0.2/24" || res.IPs[1].Address.String() != "fd10::2/64" || len(res.Routes) != 2 {
		t.Errorf("ADD result %s", v.out)
	}
	if len(v.fw.Ports["netns0"]) != 1 {
		t.Errorf("published %v", v.fw.Ports)
	}
	// CHECK against the result ADD gave.
	prev := strings.TrimSuffix(string(v.conf("")), "}") + `,"prevResult":` + v.out.String() + "}"
	if err := v.p.check(v.args("pod1", 10, []byte(prev))); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	for name, stdin := range map[string]string{
		"no prevResult":  string(v.conf("")),
		"bad prevResult": strings.TrimSuffix(string(v.conf("")), "}") + `,"prevResult":{"cniVersion":"1.1.0","ips":"x"}}`,
	} {
		var e *types.Error
		if err := v.p.check(v.args("pod1", 10, []byte(stdin))); !errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig {
			t.Errorf("CHECK with %s: %v", name, err)
		}
	}
	v.host.Kill(10, false)
	if err := v.p.check(v.args("pod1", 10, []byte(prev))); err == nil {
		t.Error("CHECK of a pod whose veth is gone: nil")
	}
	// GC keeps the valid attachment and releases the others.
	v.out.Reset()
	if err := v.p.add(v.args("pod2", 11, v.conf(""))); err != nil {
		t.Fatal(err)
	}
	gc := strings.TrimSuffix(string(v.conf("")), "}") + `,"cni.dev/valid-attachments":[{"containerID":"pod2","ifname":"eth0"}]}`
	if err := v.p.gc(&skel.CmdArgs{StdinData: []byte(gc)}); err != nil {
		t.Errorf("GC: %v", err)
	}
	if err := v.p.status(&skel.CmdArgs{StdinData: v.conf("")}); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	for range 2 {
		if err := v.p.del(v.args("pod2", 11, v.conf(""))); err != nil {
			t.Errorf("DEL: %v", err)
		}
	}
	if len(v.host.Veths) != 0 {
		t.Errorf("veths left: %v", v.host.Veths)
	}
	log, err := os.ReadFile(v.log)
	for _, want := range []string{`"command":"cni-add"`, `"command":"cni-check"`, `"command":"cni-gc"`, `"command":"cni-del","id":"pod2/eth0"`} {
		if err != nil || !strings.Contains(string(log), want) {
			t.Errorf("log lacks %s: %v\n%s", want, err, log)
		}
	}
}

// Bad input in each verb is a CNI error of the right code naming the key,
// and leaves nothing behind.
func TestVerbsRefuse(t *testing.T) {
	v := newVerbs(t)
	v.sys.Listen("udp", netip.MustParseAddr("127.0.0.1"), 8053)
	for name, tc := range map[string]struct {
		verb func(*skel.CmdArgs) error
		args *skel.CmdArgs
		code uint
		want string
	}{
		"bad json":         {v.p.add, v.args("p", 10, []byte(`{`)), types.ErrInvalidNetworkConfig, "network configuration"},
		"bad subnet":       {v.p.add, v.args("p", 10, v.conf(`,"subnet":"10.0.0.1/8"`)), types.ErrInvalidNetworkConfig, `"subnet" 10.0.0.1/8`},
		"bad ifname":       {v.p.add, &skel.CmdArgs{ContainerID: "p", Netns: "/x", IfName: "a/b", StdinData: v.conf("")}, types.ErrInvalidEnvironmentVariables, "CNI_IFNAME"},
		"no namespace":     {v.p.add, &skel.CmdArgs{ContainerID: "p", Netns: "/nowhere", IfName: "eth0", StdinData: v.conf("")}, types.ErrInvalidEnvironmentVariables, "CNI_NETNS /nowhere: not a network namespace"},
		"bad id":           {v.p.add, &skel.CmdArgs{ContainerID: "p q", Netns: "/x", IfName: "eth0", StdinData: v.conf("")}, types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID"},
		"bad mapping":      {v.p.add, v.args("p", 10, v.conf(`,"runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}`)), types.ErrInvalidNetworkConfig, "portMappings"},
		"internal ports":   {v.p.add, v.args("p", 10, v.conf(`,"internal":true,"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80}]}`)), types.ErrInvalidNetworkConfig, `runtimeConfig.portMappings: network netns0 is "internal"`},
		"static outside":   {v.p.add, v.args("p", 10, v.conf(`,"runtimeConfig":{"ips":["10.99.0.5"]}`)), types.ErrInvalidNetworkConfig, "runtimeConfig.ips: address not leasable"},
		"host port in use": {v.p.add, v.args("p", 10, v.conf(`,"runtimeConfig":{"portMappings":[{"hostPort":8053,"containerPort":53,"protocol":"udp"}]}`)), types.ErrInvalidNetworkConfig, "runtimeConfig.portMappings: host port 8053/udp on 0.0.0.0 (every address) is in use"},
		"unwritable log":   {v.p.del, v.args("p", 10, []byte(`{"cniVersion":"1.1.0","name":"n","type":"bridgehook","logFile":"/nonexistent/x/log"}`)), types.ErrIOFailure, `"logFile"`},
		"bad gc conf":      {v.p.gc, &skel.CmdArgs{StdinData: v.conf(`,"mtu":1`)}, types.ErrInvalidNetworkConfig, `"mtu" 1`},
		"bad status conf":  {v.p.status, &skel.CmdArgs{StdinData: v.conf(`,"firewall":"pf"`)}, types.ErrInvalidNetworkConfig, `"firewall" "pf"`},
		"bad check conf":   {v.p.check, v.args("p", 10, v.conf(`,"bridge":"a b"`)), types.ErrInvalidNetworkConfig, `"bridge" "a b"`},
		"bad del conf":     {v.p.del, v.args("p", 10, v.conf(`,"stateDir":"rel"`)), types.ErrInvalidNetworkConfig, `"stateDir" "rel"`},
	} {
		err := tc.verb(tc.args)
		var e *types.Error
		if !errors.As(err, &e) || e.Code != tc.code || !strings.Contains(e.Msg, tc.want) {
			t.Errorf("%s: %v, want code %d naming %q", name, err, tc.code, tc.want)
		}
	}
	if len(v.host.Veths)+len(v.host.Bridges) != 0 {
		t.Errorf("left behind: veths %v, bridges %v", v.host.Veths, v.host.Bridges)
	}
}

// Main is what the binary runs: VERSION answers without a configuration.
func TestMainVersion(t *testing.T) {
	t.Setenv("CNI_COMMAND", "VERSION")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stdin := os.Stdout, os.Stdin
	os.Stdout = w
	code := Main(nil, "test")
	os.Stdout, os.Stdin = stdout, stdin
	w.Close()
	out, _ := io.ReadAll(r)
	if code != 0 || !strings.Contains(string(out), `"supportedVersions":["0.3.1","0.4.0","1.0.0","1.1.0"]`) {
		t.Errorf("VERSION: exit %d, %s", code, out)
	}
}

// What is no network configuration is refused in CNI's terms before skel
// reads it: 6 for what does not decode, 7 for an object without the keys
// every configuration has.
func TestCheckStdin(t *testing.T) {
	for _, tc := range []struct {
		command, stdin string
		code           uint
	}{
		{"ADD", "garbage", types.ErrDecodingFailure},
		{"ADD", "[1,2]", types.ErrDecodingFailure},
		{"ADD", strings.Repeat("x", 1<<20), types.ErrDecodingFailure},
		{"DEL", `{"name":"n","type":"bridgehook"}`, types.ErrInvalidNetworkConfig},
		{"ADD", `{"cniVersion":"1.1.0","type":"bridgehook"}`, types.ErrInvalidNetworkConfig},
		{"VERSION", "", 0},
		{"VERSION", `{"cniVersion":"1.0.0"}`, 0},
		{"ADD", `{"cniVersion":"1.1.0","name":"n","type":"bridgehook"}`, 0},
	} {
		e := checkStdin(tc.command, []byte(tc.stdin))
		if tc.code == 0 && e != nil || tc.code != 0 && (e == nil || e.Code != tc.code) {
			t.Errorf("%s %.20q: %v, want code %d", tc.command, tc.stdin, e, tc.code)
		}
	}
}
