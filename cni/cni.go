// Package cni is bridgehook's CNI face: a CNI plugin (spec 1.1.0, and the
// configurations of 0.3.1, 0.4.0 and 1.0.0) over the same orchestration,
// store and rules as the OCI hook (package hook). It turns CNI's
// environment and configuration into a hook.Config and a hook.Request, and
// the hook's result into CNI's.
//
// A container attached through CNI is known by its namespace's path, not
// a pid, and keyed by (container id, interface): its lease's id is
// "CONTAINER_ID/IFNAME", its host veth "bhc" and a hash of that id.
package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/ipam"
)

// Versions are the CNI versions whose configurations the plugin takes; it
// answers each in its own result version.
var Versions = version.PluginSupports("0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Wants reports whether the process was started as a CNI plugin: with
// CNI_COMMAND set and a network configuration on stdin (or VERSION with
// none). A runtime that passes its own environment on to its hooks gives
// a hook CNI_COMMAND too, but an OCI state on stdin, which has no
// "cniVersion".
func Wants(command string, stdin []byte) bool {
	if command == "" {
		return false
	}
	if command == "VERSION" && len(bytes.TrimSpace(stdin)) == 0 {
		return true
	}
	var probe struct {
		CNIVersion *string `json:"cniVersion"`
		OCIVersion *string `json:"ociVersion"`
	}
	return json.Unmarshal(stdin, &probe) == nil && probe.CNIVersion != nil && probe.OCIVersion == nil
}

// Main runs the plugin on stdin, which the caller has read already, and
// returns the exit status. Errors go to stdout as CNI error JSON.
func Main(stdin []byte, about string) int {
	// skel reads the configuration from os.Stdin itself.
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bridgehook: %v\n", err)
		return 1
	}
	go func() { w.Write(stdin); w.Close() }()
	os.Stdin = r
	funcs := skel.CNIFuncs{Add: add, Del: del, Check: check, GC: gc, Status: status}
	if e := skel.PluginMainFuncsWithError(funcs, Versions, about); e != nil {
		e.Print()
		return 1
	}
	return 0
}

// call is one CNI call: its configuration, the network it names, and its
// log.
type call struct {
	args  *skel.CmdArgs
	conf  *netConf
	cfg   hook.Config
	log   *slog.Logger
	close func()
	start time.Time
}

func newCall(args *skel.CmdArgs) (*call, error) {
	conf, err := parse(args.StdinData)
	if err != nil {
		return nil, err
	}
	cfg, err := conf.config(args.IfName)
	if err != nil {
		return nil, err
	}
	c := &call{args: args, conf: conf, cfg: cfg, close: func() {}, start: time.Now()}
	c.log = slog.New(slog.DiscardHandler)
	if conf.LogFile != "" {
		f, err := os.OpenFile(conf.LogFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, types.NewError(types.ErrIOFailure, fmt.Sprintf(`"logFile": %v`, err), "")
		}
		c.log, c.close = slog.New(slog.NewJSONHandler(f, nil)), func() { f.Close() }
	}
	return c, nil
}

// id is the attachment's lease id.
func (c *call) id() string { return c.args.ContainerID + "/" + c.args.IfName }

// done logs how the call ended and turns its error into CNI's.
func (c *call) done(verb string, err error, attrs ...any) error {
	defer c.close()
	attrs = append([]any{"command", "cni-" + verb, "id", c.id(), "bridge", c.cfg.Bridge, "duration", time.Since(c.start).String()}, attrs...)
	if err != nil {
		err = asCNI(err)
		c.log.Error("failed", append(attrs, "error", err.Error())...)
		return err
	}
	c.log.Info("done", attrs...)
	return nil
}

func add(args *skel.CmdArgs) error {
	c, err := newCall(args)
	if err != nil {
		return err
	}
	req, err := c.conf.request(c.id(), args.Netns, c.cfg)
	if err != nil {
		return c.done("add", err)
	}
	res, err := hook.Join(c.cfg, req, nil)
	if err != nil {
		return c.done("add", err)
	}
	result := c.result(res.Lease, req.MAC)
	if err := types.PrintResult(result, c.conf.CNIVersion); err != nil {
		return c.done("add", types.NewError(types.ErrIOFailure, err.Error(), ""))
	}
	return c.done("add", nil, "ip", res.Lease.IP.String(), "veth", res.Lease.Veth)
}

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

// del is idempotent: an unknown attachment, a namespace that is gone and
// a second DEL all succeed.
func del(args *skel.CmdArgs) error {
	c, err := newCall(args)
	if err != nil {
		return err
	}
	res, err := hook.Leave(c.cfg, c.id(), nil)
	if err != nil || !res.Found {
		return c.done("del", err, "found", false)
	}
	return c.done("del", nil, "ip", res.Lease.IP.String())
}

// check verifies the attachment against prevResult: the lease, the
// addresses, the default routes, the veth and the rules.
func check(args *skel.CmdArgs) error {
	c, err := newCall(args)
	if err != nil {
		return err
	}
	if err := version.ParsePrevResult(&c.conf.PluginConf); err != nil {
		return c.done("check", invalid("prevResult: %v", err))
	}
	if c.conf.PrevResult == nil {
		return c.done("check", invalid("prevResult: missing; CHECK needs the result of ADD"))
	}
	prev, err := types100.NewResultFromResult(c.conf.PrevResult)
	if err != nil {
		return c.done("check", invalid("prevResult: %v", err))
	}
	var addrs []netip.Prefix
	for _, ipc := range prev.IPs {
		ip, _ := netip.AddrFromSlice(ipc.Address.IP)
		ones, _ := ipc.Address.Mask.Size()
		addrs = append(addrs, netip.PrefixFrom(ip.Unmap(), ones))
	}
	var gws []netip.Addr
	for _, r := range prev.Routes {
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			gw, _ := netip.AddrFromSlice(r.GW)
			gws = append(gws, gw.Unmap())
		}
	}
	_, err = hook.Check(c.cfg, c.id(), addrs, gws)
	return c.done("check", err)
}

// gc releases every attachment of the network that the runtime no longer
// lists as valid.
func gc(args *skel.CmdArgs) error {
	c, err := newCall(args)
	if err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, a := range c.conf.ValidAttachments {
		valid[a.ContainerID+"/"+a.IfName] = true
	}
	report, err := hook.Collect(c.cfg, func(id string) bool { return valid[id] })
	return c.done("gc", err, "actions", report)
}

// status fails when the network's store or firewall cannot be used.
func status(args *skel.CmdArgs) error {
	c, err := newCall(args)
	if err != nil {
		return err
	}
	if err := hook.Status(c.cfg); err != nil {
		return c.done("status", types.NewError(types.ErrPluginNotAvailable, err.Error(), ""))
	}
	return c.done("status", nil)
}

// asCNI turns a hook error into CNI's: bad input is an invalid
// configuration (7), a path that is no network namespace a bad
// environment (4), a full subnet something to try again later (11).
func asCNI(err error) error {
	var e *types.Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, hook.ErrNetns):
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS: "+err.Error(), "")
	case errors.Is(err, ipam.ErrExhausted):
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	case errors.Is(err, hook.ErrInput):
		return types.NewError(types.ErrInvalidNetworkConfig, flagsToKeys(err.Error()), "")
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
