package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
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
		{"ADD", `not json`, false},
		{"", `{"cniVersion":"1.1.0"}`, false},
	} {
		if got := Wants(tc.command, []byte(tc.stdin)); got != tc.want {
			t.Errorf("Wants(%q, %s) = %v, want %v", tc.command, tc.stdin, got, tc.want)
		}
	}
}

func TestConfigMirrorsTheFlags(t *testing.T) {
	conf, err := parse([]byte(`{"cniVersion":"1.1.0","name":"n","type":"bridgehook","bridge":"cni0",
		"subnet":["fd10::/64","10.10.0.0/24"],"mtu":1400,"icc":false,"internal":true,"defaultRoute":false,
		"dns":{"nameservers":["10.10.0.53"],"search":["svc.local"]},"firewall":"nftables","stateDir":"/run/x",
		"nonMasqueradeCIDRs":["10.244.0.0/16"]}`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := conf.config("net1")
	if err != nil {
		t.Fatal(err)
	}
	if c.Bridge != "cni0" || fmt.Sprint(c.Subnets) != "[10.10.0.0/24 fd10::/64]" || c.MTU != 1400 || c.ICC || !c.Internal ||
		c.DefaultRoute || c.Firewall != "nftables" || c.StateDir != "/run/x" || c.Iface != "net1" ||
		fmt.Sprint(c.NonMasquerade) != "[10.244.0.0/16]" {
		t.Errorf("config %+v", c)
	}
	// One subnet as a string, and the hook's defaults for what is left out.
	conf, _ = parse([]byte(`{"cniVersion":"1.0.0","name":"n","type":"bridgehook","subnet":"10.20.0.0/16"}`))
	c, err = conf.config("")
	d := hook.Defaults()
	if err != nil || fmt.Sprint(c.Subnets) != "[10.20.0.0/16]" || c.Bridge != d.Bridge || !c.ICC || !c.DefaultRoute || c.Iface != "eth0" {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

func TestBadConfigsNameTheirKeys(t *testing.T) {
	for stdin, want := range map[string]string{
		`{"subnet":"10.0.0.1/24"}`:              `"subnet" 10.0.0.1/24: not a network address`,
		`{"subnet":{"a":1}}`:                    `"subnet": want a string`,
		`{"bridge":"a/b"}`:                      `"bridge" "a/b"`,
		`{"mtu":10}`:                            `"mtu" 10`,
		`{"firewall":"pf"}`:                     `"firewall" "pf"`,
		`{"stateDir":"run"}`:                    `"stateDir" "run"`,
		`{"subnet":"fd00::/64","mtu":1000}`:     `"mtu" 1000: IPv6 needs 1280`,
		`{"dns":{"nameservers":["1.2.3"]}}`:     `"dns": nameserver "1.2.3"`,
		`{"icc":"yes"}`:                         `network configuration`,
		`{"nonMasqueradeCIDRs":["x"]}`:          `"nonMasqueradeCIDRs": "x"`,
		`{"nonMasqueradeCIDRs":["10.0.0.1/8"]}`: `"nonMasqueradeCIDRs" 10.0.0.1/8: want a network address`,
	} {
		conf, err := parse([]byte(stdin))
		if err == nil {
			_, err = conf.config("eth0")
			err = asCNI(err)
		}
		var e *types.Error
		if !errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, want) {
			t.Errorf("%s: %v, want code 7 with %q", stdin, err, want)
		}
	}
}

func TestRequestFromRuntimeConfig(t *testing.T) {
	conf, err := parse([]byte(`{"runtimeConfig":{
		"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"TCP"},{"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"2001:db8::1"}],
		"ips":["10.10.0.9/24","fd10::9"],"mac":"02:00:00:00:00:09"}}`))
	if err != nil {
		t.Fatal(err)
	}
	req, err := conf.request("c/eth0", "/run/netns/p")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(req.Ports) == "" || req.Ports[0].String() != "8080:80/tcp" || req.Ports[1].String() != "[2001:db8::1]:53:53/udp" ||
		req.IP.String() != "10.10.0.9" || req.IP6.String() != "fd10::9" || req.MAC.String() != "02:00:00:00:00:09" ||
		req.Netns.Path != "/run/netns/p" || req.ID != "c/eth0" {
		t.Errorf("request %+v", req)
	}
	internal := hook.Defaults()
	internal.Internal = true
	if err := req.Check(internal); err == nil || !strings.Contains(asCNI(err).Error(), `"internal"`) {
		t.Errorf("ports on an internal network: %v", err)
	}
	for stdin, want := range map[string]string{
		`{"runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}`:             "not a port number",
		`{"runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":1,"hostIP":"x"}]}}`: "hostIP",
		`{"runtimeConfig":{"ips":["nope"]}}`:                                                 "ips",
		`{"runtimeConfig":{"mac":"zz"}}`:                                                     "mac",
	} {
		conf, _ := parse([]byte(stdin))
		if _, err := conf.request("c/eth0", "/p"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", stdin, err, want)
		}
	}
}

func TestResultHasWhatChainedPluginsNeed(t *testing.T) {
	conf, _ := parse([]byte(`{"dns":{"nameservers":["10.10.0.53"]}}`))
	cfg := hook.Defaults()
	cfg.Subnets = []netip.Prefix{netip.MustParsePrefix("10.10.0.0/24"), netip.MustParsePrefix("fd10::/64")}
	c := &call{args: &skel.CmdArgs{ContainerID: "c", IfName: "eth0", Netns: "/run/netns/p"}, conf: conf, cfg: cfg}
	l := ipam.Lease{ID: "c/eth0", IP: netip.MustParseAddr("10.10.0.2"), IP6: netip.MustParseAddr("fd10::2"), Veth: "bhc0123456789ab", Iface: "eth0"}
	r := c.result(l, nil)
	got := []string{r.Interfaces[0].Name, r.Interfaces[0].Sandbox, r.Interfaces[1].Name, r.Interfaces[1].Sandbox, r.Interfaces[1].Mac}
	if fmt.Sprint(got) != "[bhc0123456789ab  eth0 /run/netns/p 0a:58:0a:0a:00:02]" {
		t.Errorf("interfaces %v", got)
	}
	if len(r.IPs) != 2 || r.IPs[0].String() == "" || r.IPs[0].Address.String() != "10.10.0.2/24" || r.IPs[0].Gateway.String() != "10.10.0.1" ||
		r.IPs[1].Address.String() != "fd10::2/64" || *r.IPs[1].Interface != 1 {
		t.Errorf("ips %v", r.IPs)
	}
	if len(r.Routes) != 2 || r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[1].Dst.String() != "::/0" || r.Routes[1].GW.String() != "fd10::1" {
		t.Errorf("routes %v", r.Routes)
	}
	if r.DNS.Nameservers[0] != "10.10.0.53" {
		t.Errorf("dns %v", r.DNS)
	}
	c.cfg.DefaultRoute = false
	if r := c.result(l, nil); len(r.Routes) != 0 {
		t.Errorf("defaultRoute false: routes %v", r.Routes)
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
