package cni

import (
	"net"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// result is what ADD returns: the host veth, the container's interface
// in its sandbox, its addresses with their gateways, a default route per
// family, and the name servers for the runtime to write.
func (c *call) result(l ipam.Lease, mac net.HardwareAddr) *types100.Result {
	if mac == nil {
		mac = bridge.MAC(l.IP)
	}
	r := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: l.Veth},
			{Name: l.Iface, Mac: mac.String(), Sandbox: c.args.Netns},
		},
		DNS: c.conf.DNS,
	}
	if c.cfg.Names {
		r.DNS.Nameservers = nil
		for _, ip := range c.cfg.NameServers() {
			r.DNS.Nameservers = append(r.DNS.Nameservers, ip.String())
		}
	}
	for _, p := range c.cfg.Subnets {
		ip := l.Addr(p.Addr().Is6())
		if !ip.IsValid() {
			continue
		}
		gw := p.Addr().Next()
		r.IPs = append(r.IPs, &types100.IPConfig{
			Interface: types100.Int(1),
			Address:   net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(p.Bits(), ip.BitLen())},
			Gateway:   gw.AsSlice(),
		})
		if c.cfg.DefaultRoute {
			r.Routes = append(r.Routes, &types.Route{
				Dst: net.IPNet{IP: make(net.IP, ip.BitLen()/8), Mask: net.CIDRMask(0, ip.BitLen())},
				GW:  gw.AsSlice(),
			})
		}
	}
	return r
}
