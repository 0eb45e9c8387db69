package cni

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/containernetworking/cni/pkg/skel"
)

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
