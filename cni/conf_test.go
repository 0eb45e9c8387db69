package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

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
	req, err := conf.request("c/eth0", "/run/netns/p", "")
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
		if _, err := conf.request("c/eth0", "/p", ""); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", stdin, err, want)
		}
	}
}

func TestNamesOfAPod(t *testing.T) {
	conf, err := parse([]byte(`{"name":"bhnet","names":true,"dns":{"nameservers":["192.0.2.53"],"search":["corp"]},
		"runtimeConfig":{"aliases":{"bhnet":["www","web2"],"other":["not-ours"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	req, err := conf.request("c/eth0", "/p", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web")
	if err != nil || !slices.Equal(req.Names, []string{"web", "www", "web2"}) {
		t.Errorf("names %v %v", req.Names, err)
	}
	cfg, err := conf.config("eth0")
	if err != nil || !cfg.Names || len(cfg.DNS) != 1 || cfg.DNS[0].String() != "192.0.2.53" {
		t.Errorf("config %+v %v", cfg, err)
	}
	// The result names the network's server, and keeps the search list.
	c := &call{conf: conf, cfg: cfg, args: &skel.CmdArgs{Netns: "/p"}}
	r := c.result(ipam.Lease{IP: netip.MustParseAddr("172.19.0.2"), Veth: "v", Iface: "eth0"}, nil)
	if !slices.Equal(r.DNS.Nameservers, []string{"172.19.0.1"}) || !slices.Equal(r.DNS.Search, []string{"corp"}) {
		t.Errorf("result dns %+v", r.DNS)
	}
	// Without names, no name is read.
	conf.Names = false
	if req, _ := conf.request("c/eth0", "/p", "K8S_POD_NAME=web"); req.Names != nil {
		t.Errorf("names without names: %v", req.Names)
	}
}
