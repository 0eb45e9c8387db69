// Package cni is bridgehook's CNI face: a CNI plugin (spec 1.1.0, and the
// configurations of 0.3.1, 0.4.0 and 1.0.0) over the same orchestration,
// store and rules as the OCI hook (package hook). It turns CNI's
// environment and configuration into a hook.Config and a hook.Request, and
// the hook's result into CNI's.
//
// A container attached through CNI is known by its namespace's path, not
// a pid, and keyed by (container id, interface): its lease's id is
// "CONTAINER_ID/IFNAME", its host veth "bhc" and a hash of that id.
//
// cni.go has the verbs; conf.go the configuration in (its keys, and
// Spell, which names the settings by them in errors); result.go what ADD
// returns.
package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/ipam"
)

// Versions are the CNI versions whose configurations the plugin takes; it
// answers each in its own result version.
var Versions = version.PluginSupports("0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Wants reports whether the process was started as a CNI plugin: with
// CNI_COMMAND set and a network configuration on stdin (or VERSION with
// none). A runtime that passes its own environment on to its hooks gives
// a hook CNI_COMMAND too, but an OCI state on stdin: that alone goes to
// the hook face. Anything else, garbage included, is the plugin's to
// refuse in CNI's terms.
func Wants(command string, stdin []byte) bool {
	return command != "" && !isOCIState(stdin)
}

// isOCIState reports whether stdin is a runtime's container state: an
// object with "ociVersion", or with "id" and "status" and no
// "cniVersion" (a state written by hand).
func isOCIState(stdin []byte) bool {
	var probe struct {
		CNIVersion *string `json:"cniVersion"`
		OCIVersion *string `json:"ociVersion"`
		ID         *string `json:"id"`
		Status     *string `json:"status"`
	}
	if json.Unmarshal(stdin, &probe) != nil {
		return false
	}
	return probe.OCIVersion != nil || probe.CNIVersion == nil && probe.ID != nil && probe.Status != nil
}

// checkStdin refuses what is no network configuration before skel reads
// it: what does not decode as a JSON object (6), and an object without
// the keys every configuration has (7). VERSION needs none.
func checkStdin(command string, stdin []byte) *types.Error {
	if command == "VERSION" && len(bytes.TrimSpace(stdin)) == 0 {
		return nil
	}
	var conf map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "network configuration on stdin: not a JSON object; want the network's configuration, with \"cniVersion\", \"name\" and \"type\"", "")
	}
	for _, key := range []string{"cniVersion", "name", "type"} {
		if _, ok := conf[key]; !ok && command != "VERSION" {
			return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("network configuration on stdin: missing %q", key), "")
		}
	}
	return nil
}

// Main runs the plugin on stdin, which the caller has read already, and
// returns the exit status. Errors go to stdout as CNI error JSON. opts
// are the orchestration's (tests pass fakes).
func Main(stdin []byte, about string, opts ...hook.Option) int {
	if e := checkStdin(os.Getenv("CNI_COMMAND"), stdin); e != nil {
		e.Print()
		return 1
	}
	// skel reads the configuration from os.Stdin itself.
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bridgehook: %v\n", err)
		return 1
	}
	go func() { w.Write(stdin); w.Close() }()
	os.Stdin = r
	p := plugin{opts: opts, out: os.Stdout}
	funcs := skel.CNIFuncs{Add: p.add, Del: p.del, Check: p.check, GC: p.gc, Status: p.status}
	if e := skel.PluginMainFuncsWithError(funcs, Versions, about); e != nil {
		e.Print()
		return 1
	}
	return 0
}

// plugin is the verbs over the orchestration, with the world it drives
// (opts) and where results go.
type plugin struct {
	opts []hook.Option
	out  io.Writer
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
		return nil, asCNI(err)
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

func (p plugin) add(args *skel.CmdArgs) error {
	c, err := newCall(args)
	if err != nil {
		return err
	}
	req, err := c.conf.request(c.id(), args.Netns, args.Args)
	if err != nil {
		return c.done("add", err)
	}
	res, err := hook.Join(c.cfg, req, p.opts...)
	if err != nil {
		return c.done("add", err)
	}
	result, err := c.result(res.Lease, req.MAC).GetAsVersion(c.conf.CNIVersion)
	if err == nil {
		err = result.PrintTo(p.out)
	}
	if err != nil {
		return c.done("add", types.NewError(types.ErrIOFailure, err.Error(), ""))
	}
	return c.done("add", nil, "ip", res.Lease.IP.String(), "veth", res.Lease.Veth)
}

// del is idempotent: an unknown attachment, a namespace that is gone and
// a second DEL all succeed.
func (p plugin) del(args *skel.CmdArgs) error {
	c, err := newCall(args)
	if err != nil {
		return err
	}
	res, err := hook.Leave(c.cfg, c.id(), p.opts...)
	if err != nil || !res.Found {
		return c.done("del", err, "found", false)
	}
	return c.done("del", nil, "ip", res.Lease.IP.String())
}

// check verifies the attachment against prevResult: the lease, the
// addresses, the default routes, the veth and the rules.
func (p plugin) check(args *skel.CmdArgs) error {
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
	_, err = hook.Check(c.cfg, c.id(), addrs, gws, p.opts...)
	return c.done("check", err)
}

// gc releases every attachment of the network that the runtime no longer
// lists as valid.
func (p plugin) gc(args *skel.CmdArgs) error {
	c, err := newCall(args)
	if err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, a := range c.conf.ValidAttachments {
		valid[a.ContainerID+"/"+a.IfName] = true
	}
	report, err := hook.Collect(c.cfg, func(id string) bool { return valid[id] }, p.opts...)
	return c.done("gc", err, "actions", report)
}

// status fails when the network's store or firewall cannot be used.
func (p plugin) status(args *skel.CmdArgs) error {
	c, err := newCall(args)
	if err != nil {
		return err
	}
	if err := hook.Status(c.cfg, p.opts...); err != nil {
		return c.done("status", types.NewError(types.ErrPluginNotAvailable, err.Error(), ""))
	}
	return c.done("status", nil)
}

// asCNI turns a hook error into CNI's, its settings named by their keys:
// bad input is an invalid configuration (7), or a bad environment (4)
// where CNI's environment gave the setting (the namespace, the interface,
// the container id); a full subnet is something to try again later (11).
func asCNI(err error) error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	msg := input.Render(err, Spell)
	var in *input.Error
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return types.NewError(types.ErrTryAgainLater, msg, "")
	case errors.As(err, &in) && errors.Is(err, input.Err):
		if in.Field == input.Netns || in.Field == input.Iface || in.Field == input.ID {
			return types.NewError(types.ErrInvalidEnvironmentVariables, msg, "")
		}
		return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
	}
	return types.NewError(types.ErrInternal, msg, "")
}
