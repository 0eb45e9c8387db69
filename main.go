// Command bridgehook is an OCI runtime hook that puts a container on a
// NAT'd Linux bridge (createRuntime or prestart) and takes it off again
// (poststop), plus the commands to look after the networks it makes.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bridgehook/bridgehook/cni"
	"github.com/bridgehook/bridgehook/firewalld"
	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/names"
	"github.com/bridgehook/bridgehook/oci"
	"golang.org/x/sys/unix"
)

// Exit codes: 1 when the host failed us, 2 when the input was wrong.
const (
	exitFail  = 1
	exitInput = 2
)

const overview = `bridgehook - put OCI containers on a NAT'd Linux bridge

Usage:
  bridgehook [flags] [command] [args]

Commands:
  (none)       read the OCI state on stdin; set up or tear down by its status
  setup        read the OCI state on stdin and set the container up
  teardown     read the OCI state on stdin and tear the container down
  ls           list networks and their endpoints
  inspect ID   print one container's endpoint as JSON
  gc           reclaim leases, veths and rules of containers that are gone
  repair       re-create the network's bridge and firewall rules
  network rm   remove the network's bridge, rules and store when unused
  watch        repair every network each time firewalld reloads or restarts
  dns          serve the names of the networks that have --names
  version      print the version
  help CMD     explain a command

List bridgehook under createRuntime (or prestart) and under poststop in
config.json, with the same flags in both; see "bridgehook help hook".
Run with CNI_COMMAND set and a CNI network configuration on stdin, it is a
CNI plugin instead (containerd, CRI-O, Kubernetes; see the README).

Flags (every command takes them; they define the network):
`

// command is one subcommand: its help, and what it does.
type command struct {
	usage string
	root  bool // acts on the host, so needs root
	run   func(e *env, args []string) error
}

var commands = map[string]*command{
	"hook": {root: true, usage: `bridgehook [flags] [setup|teardown] < state.json

As a hook, bridgehook reads the container state the runtime writes on stdin
and decides from its "status": "creating", "created" or "running" sets the
container up, "stopped" tears it down. "setup" and "teardown" say so
explicitly. Setup leases an address, creates the bridge and its firewall
rules if missing, and gives the container eth0 with a default route via the
gateway; teardown releases the container's lease and deletes its veth, or,
once the container has exited, leaves the veth to the kernel, which
deletes it with the container's namespace (the address is not handed out
again until it has). A teardown of an unknown id succeeds: poststop may
run twice, or after a failed create.

Examples:
  echo '{"id":"c1","pid":4242,"status":"creating"}' | bridgehook
  echo '{"id":"c1","status":"stopped"}' | bridgehook
  bridgehook --bridge br1 --subnet 10.88.0.0/24 setup < state.json
`},
	"ls": {usage: `bridgehook [flags] ls [--json] [--all]

Lists the network's endpoints: IP, CONTAINER, PID, VETH, PORTS, CREATED and
STATUS ("running" while the container's network namespace lives, "stale"
after it died without a poststop; "bridgehook gc" reclaims stale ones).
--all lists every network under --state-dir; --json prints the networks and
their endpoints as JSON.

Examples:
  bridgehook ls
  bridgehook ls --all --json | jq '.[].endpoints[].ip'
`},
	"inspect": {usage: `bridgehook [flags] inspect ID

Prints the endpoint of container ID as JSON, looking in every network under
--state-dir. Exits 2 if no network knows the id.

Example:
  bridgehook inspect web-1
`},
	"gc": {root: true, usage: `bridgehook [flags] gc [--all]

Brings the lease store and the kernel back into agreement, and prints what
it did: releases leases whose container's network namespace is gone (the
pid is gone, or reused by a process in another namespace); frees the
addresses that teardowns held back until the kernel deleted their veths,
deleting those veths itself if they are still there; rebuilds leases that
the store lost or cannot read from the live veths on the bridge; deletes
veths no lease accounts for, and port rules no lease accounts for; frees
the lease of a setup that was killed before it gave its container a veth.
When it returns, nothing is left of a container that is gone: no lease,
no veth, no rule. Safe to run while hooks run: it leaves setups in
progress alone. --all does every network under --state-dir.

Examples:
  bridgehook gc
  bridgehook gc --all    # e.g. from a systemd timer
`},
	"repair": {root: true, usage: `bridgehook [flags] repair [--all]

After something flushed the firewall (a firewalld reload, an
iptables-restore, a restart of nftables.service), repair puts the
network's bridge, address and rules back. Running it again
changes nothing. --all repairs every network under --state-dir, each with
the options (--icc, --internal, --firewall) its rules were installed
with: what the systemd units in systemd/ run. Setups check their
network's rules too, and reinstall them if they are gone, so repair is
for networks where no container starts.

Given a --firewall other than the network's, repair moves its rules to
that backend: out of the old one first, so both never hold them.

Examples:
  bridgehook --bridge br1 --subnet 10.88.0.0/24 repair
  bridgehook repair --all
  bridgehook --firewall nftables repair    # move netns0 to nftables
`},
	"network": {root: true, usage: `bridgehook [flags] network rm

Removes the network's bridge, its firewall rules and its lease store. It
refuses, naming them, while containers with live network namespaces hold
leases.

Example:
  bridgehook --bridge br1 --subnet 10.88.0.0/24 network rm
`},
	"watch": {root: true, usage: `bridgehook [flags] watch

Waits on the system bus for firewalld: each time it reloads
(firewall-cmd --reload) or starts again, which flush the rules it did not
make, runs what "repair --all" runs, and says what it repaired. It runs
until the bus goes; systemd/bridgehook-firewalld.service runs it. Give it
the --state-dir your hooks use, if not the default.

Example:
  bridgehook watch
`},
	"dns": {root: true, usage: `bridgehook [flags] dns

The name server of the networks under --state-dir that have --names: on
each one's gateway addresses, port 53, UDP and TCP, it answers the names
of that network's containers (id, hostname, name, aliases; A, AAAA and
PTR) and forwards other names to the --dns servers, then the host's. The
first setup that needs it starts it; it ends when no network with names
has a container. systemd/bridgehook-dns.service runs it at boot.

Example:
  bridgehook dns --debug
`},
	"version": {usage: `bridgehook version

Prints the module version and the VCS revision it was built from.
`},
}

func init() {
	commands["setup"], commands["teardown"] = commands["hook"], commands["hook"]
	commands["hook"].run = runHook
	commands["ls"].run = runLs
	commands["inspect"].run = runInspect
	commands["gc"].run = runGC
	commands["repair"].run = runRepair
	commands["network"].run = runNetwork
	commands["version"].run = runVersion
	commands["watch"].run = runWatch
	commands["dns"].run = runDNS
}

// env is what every command gets: the network's config, the world it
// drives, where to write, and the logs.
type env struct {
	cfg     hook.Config
	subnets []string // --subnet, as given
	opts    []hook.Option
	logFile string
	debug   bool // --debug: step timings
	cmd     string
	json    bool // ls --json
	all     bool // ls, gc --all
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	log     logs
}

func main() {
	// The CNI face, when a CNI runtime runs the binary: CNI_COMMAND set
	// and anything but an OCI state on stdin (see cni.Wants).
	if command := os.Getenv("CNI_COMMAND"); command != "" {
		stdin, err := io.ReadAll(io.LimitReader(os.Stdin, oci.MaxState+1))
		if err == nil && cni.Wants(command, stdin) {
			os.Exit(cni.Main(stdin, version()+" (CNI plugin)"))
		}
		os.Exit(run(os.Args[1:], bytes.NewReader(stdin), os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{cfg: hook.Defaults(), stdin: stdin, stdout: stdout, stderr: stderr}
	fs := e.flags()
	name, pos, err := parseArgs(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return helpFor(pos, fs, stderr)
	case err != nil:
		fmt.Fprintf(stderr, "bridgehook: %s (see bridgehook --help)\n", flagError(err))
		return exitInput
	case name == "help":
		return helpFor(pos, fs, stdout)
	}
	c, ok := commands[name]
	if name == "" {
		c = commands["hook"]
	} else if !ok {
		fmt.Fprintf(stderr, "bridgehook: unknown command %q (see bridgehook --help)\n", name)
		return exitInput
	}
	e.cmd = name
	var closeLog func()
	e.log, closeLog = newLogs(e.logFile, stderr)
	defer closeLog()
	if e.debug {
		e.opts = append(e.opts, hook.WithDebug(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	}
	if err := e.runCommand(c, pos); err != nil {
		msg := strings.ReplaceAll(input.Render(err, oci.Spell), "\n", " ")
		fmt.Fprintf(stderr, "bridgehook: %s\n", msg)
		e.log.file.Error("failed", "command", e.cmd, "error", msg)
		if errors.Is(err, input.Err) {
			return exitInput
		}
		return exitFail
	}
	return 0
}

// flags binds every flag to e: they define the network, and every
// command takes them.
func (e *env) flags() *flag.FlagSet {
	cfg := &e.cfg
	fs := flag.NewFlagSet("bridgehook", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed in one line, help by helpFor
	fs.StringVar(&cfg.Bridge, "bridge", cfg.Bridge, "name of the bridge to attach containers to")
	fs.Func("subnet", "the network's `CIDR`; the bridge gets its first address, the gateway. Twice, an IPv4 and an IPv6 one, for dual-stack (default 172.19.0.0/16)", func(v string) error {
		e.subnets = append(e.subnets, v)
		return nil
	})
	fs.IntVar(&cfg.MTU, "mtu", 0, "MTU of a new bridge and of the veths; 0: the bridge's own, 1500 for a new bridge")
	fs.StringVar(&cfg.Iface, "iface", cfg.Iface, "name of the interface inside the container")
	fs.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "where the lease store lives; under /run, leases die with a reboot as containers do")
	fs.StringVar(&e.logFile, "log-file", "", "append a JSON line per setup, teardown and failure to this `file` (crun discards hook output)")
	fs.BoolVar(&cfg.ICC, "icc", true, "let containers on the bridge reach each other; false isolates them (they still reach the gateway and beyond)")
	fs.Func("non-masquerade-cidr", "traffic to this `CIDR` leaves with the container's own address, not the host's (a cluster's pod CIDR, routed by its nodes); may be repeated", func(v string) error {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return fmt.Errorf("want a network such as 10.244.0.0/16")
		}
		cfg.NonMasquerade = append(cfg.NonMasquerade, p)
		return nil
	})
	fs.BoolVar(&cfg.Internal, "internal", false, "no way out: no MASQUERADE, no forwarding out of the bridge; containers reach each other and the gateway")
	fs.StringVar(&cfg.Firewall, "firewall", "", "where the network's rules go: `iptables` or nftables (a table of its own, over netlink); default: the network's own, iptables for a new one")
	fs.BoolVar(&cfg.SpoofCheck, "spoof-check", true, "drop what a container sends as another (another MAC or address, ARP and neighbour advertisements for others) and router advertisements and DHCP servers' replies; false for containers that route others' traffic")
	fs.BoolVar(&cfg.DefaultRoute, "default-route", true, "give the container a default route via the gateway (skipped when an earlier network gave it one)")
	fs.Func("dns", "write `servers` (comma-separated) to the container's /etc/resolv.conf", func(v string) error {
		for _, s := range strings.Split(v, ",") {
			ip, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%q is not an IP address", s)
			}
			cfg.DNS = append(cfg.DNS, ip)
		}
		return nil
	})
	fs.BoolVar(&cfg.Names, "names", false, "give the network a name server on its gateways, where containers find each other by id, hostname, name and alias; --dns servers become its upstreams, before the host's")
	fs.BoolVar(&cfg.HostDNS, "resolv-conf", false, "write the host's name servers (loopback ones skipped) to the container's /etc/resolv.conf")
	fs.BoolVar(&e.debug, "debug", false, "report how long each step takes, on stderr")
	fs.BoolVar(&e.json, "json", false, "ls: print JSON")
	fs.BoolVar(&e.all, "all", false, "ls, gc, repair: every network under --state-dir")
	return fs
}

// parseArgs parses flags that may come before and after the command and
// its arguments: the command's name, then its arguments.
func parseArgs(fs *flag.FlagSet, args []string) (name string, pos []string, err error) {
	for rest := args; ; rest = fs.Args()[1:] {
		if err := fs.Parse(rest); err != nil {
			return "", pos, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
	}
	if len(pos) > 0 {
		name, pos = pos[0], pos[1:]
	}
	return name, pos, nil
}

// flagError is the flag package's message about a flag, with the flag
// spelt as the docs spell it: --name.
func flagError(err error) string {
	return strings.NewReplacer("flag -", "flag --", "argument: -", "argument: --", "defined: -", "defined: --").Replace(err.Error())
}

// runCommand checks the network the flags define, then runs c.
func (e *env) runCommand(c *command, pos []string) error {
	if len(e.subnets) > 0 {
		if err := e.cfg.ParseSubnets(e.subnets); err != nil {
			return err
		}
	}
	if err := e.cfg.Check(); err != nil {
		return err
	}
	if c.root && os.Geteuid() != 0 {
		return input.Errorf("", "must run as root: it changes interfaces, firewall rules and leases (run it from the runtime's hooks, or with sudo)")
	}
	return c.run(e, pos)
}

// helpFor prints the overview, or a command's usage, and the flags.
func helpFor(pos []string, fs *flag.FlagSet, w io.Writer) int {
	if len(pos) == 0 {
		fmt.Fprint(w, overview)
		printFlags(fs, w)
		return 0
	}
	c, ok := commands[pos[0]]
	if !ok {
		fmt.Fprintf(w, "bridgehook: no help for %q (see bridgehook --help)\n", pos[0])
		return exitInput
	}
	fmt.Fprintf(w, "Usage:\n  %sFlags:\n", c.usage)
	printFlags(fs, w)
	return 0
}

// printFlags lists the flags as the docs spell them, --name.
func printFlags(fs *flag.FlagSet, w io.Writer) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return input.Errorf("", "unexpected argument %q (see bridgehook --help)", args[0])
	}
	return nil
}

func runHook(e *env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	st, err := oci.ReadState(e.stdin)
	if err != nil {
		return err
	}
	action := oci.ActionSetup
	switch e.cmd {
	case "teardown":
		action = oci.ActionTeardown
	case "":
		if action, err = oci.ActionFor(st); err != nil {
			return err
		}
	}
	start := time.Now()
	var res hook.Result
	if action == oci.ActionSetup {
		e.cmd = "setup"
		res, err = oci.Setup(e.cfg, st, e.opts...)
	} else {
		e.cmd = "teardown"
		res, err = oci.Teardown(e.cfg, st.ID, e.opts...)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", e.cmd, st.ID, err)
	}
	attrs := []any{"command", e.cmd, "id", st.ID, "bridge", e.cfg.Bridge, "duration", time.Since(start).String()}
	if res.Found {
		attrs = append(attrs, "ip", res.Lease.IP.String())
		if res.Lease.IP6.IsValid() {
			attrs = append(attrs, "ip6", res.Lease.IP6.String())
		}
		attrs = append(attrs, "veth", res.Lease.Veth)
	}
	if res.RulesRestored {
		attrs = append(attrs, "rules_restored", true)
	}
	msg := "done"
	switch {
	case res.Reused:
		msg = "already set up"
	case !res.Found:
		msg = "nothing to tear down"
	}
	e.log.both.Info(msg, attrs...)
	return nil
}

func runLs(e *env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	nets, err := hook.List(e.cfg, e.all, e.opts...)
	if err != nil {
		return err
	}
	if e.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(nets)
	}
	for i, n := range nets {
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		names := ""
		if n.Names {
			names = "  names"
		}
		fmt.Fprintf(e.stdout, "NETWORK %s  %s  gateway %s  mtu %d  firewall %s%s\n", n.Bridge,
			strings.Join(n.Subnets, " "), strings.Join(n.Gateways, " "), n.MTU, n.Firewall, names)
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		dual := len(n.Subnets) > 1
		if dual {
			fmt.Fprint(tw, "IP\tIP6\t")
		} else {
			fmt.Fprint(tw, "IP\t")
		}
		fmt.Fprintln(tw, "CONTAINER\tPID\tVETH\tPORTS\tCREATED\tSTATUS")
		for _, ep := range n.Endpoints {
			ports := strings.Join(ep.Ports, ",")
			if ports == "" {
				ports = "-"
			}
			if dual {
				fmt.Fprintf(tw, "%s\t%s\t", ep.IP, ep.IP6)
			} else {
				fmt.Fprintf(tw, "%s\t", ep.IP)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", ep.ID, ep.PID, ep.Veth, ports,
				ep.Created.Local().Format(time.DateTime), ep.Status)
		}
		tw.Flush()
		for _, p := range n.Unreadable {
			fmt.Fprintf(e.stdout, "unreadable lease file %s (run bridgehook gc)\n", p)
		}
	}
	if len(nets) == 0 {
		fmt.Fprintf(e.stderr, "bridgehook: no networks under %s\n", e.cfg.StateDir)
	}
	return nil
}

func runInspect(e *env, args []string) error {
	if len(args) != 1 {
		return input.Errorf("", "inspect wants one container id (see bridgehook help inspect)")
	}
	ep, err := hook.Inspect(e.cfg, args[0], e.opts...)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(ep)
}

func runGC(e *env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	report, err := hook.GC(e.cfg, e.all, e.opts...)
	for _, line := range report {
		fmt.Fprintln(e.stdout, line)
		e.log.file.Info("gc", "action", line)
	}
	if err == nil && len(report) == 0 {
		fmt.Fprintln(e.stdout, "nothing to do")
	}
	return err
}

func runRepair(e *env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	report, err := hook.Repair(e.cfg, e.all, e.opts...)
	for _, line := range report {
		fmt.Fprintln(e.stdout, line)
		e.log.file.Info("repaired", "network", line)
	}
	if err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	return nil
}

func runNetwork(e *env, args []string) error {
	if len(args) != 1 || args[0] != "rm" {
		return input.Errorf("", "want \"network rm\" (see bridgehook help network)")
	}
	report, err := hook.RemoveNetwork(e.cfg, e.opts...)
	for _, line := range report {
		fmt.Fprintln(e.stdout, line)
		e.log.file.Info("network rm", "action", line)
	}
	return err
}

func runWatch(e *env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	return firewalld.Watch(func(why string) {
		report, err := hook.Repair(e.cfg, true, e.opts...)
		for _, line := range report {
			e.log.both.Info(why, "repaired", line)
		}
		if err != nil {
			e.log.both.Error(why, "error", err.Error())
		}
	})
}

func runDNS(e *env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	log := e.log.both
	if e.debug {
		log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return names.Serve(ctx, e.cfg.StateDir, log)
}

func runVersion(e *env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, version())
	return nil
}

// version reads what the Go toolchain stamped into the binary.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "bridgehook (no build info)"
	}
	v := "bridgehook " + bi.Main.Version
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		v += " " + rev
		if settings["vcs.modified"] == "true" {
			v += "-dirty"
		}
		if t := settings["vcs.time"]; t != "" {
			v += " " + t
		}
	}
	return v + " " + bi.GoVersion
}

// logs are the hook's two audiences: a person reading stderr, and the
// --log-file, the only trace left when the runtime discards hook output.
type logs struct {
	file *slog.Logger // the log file only
	both *slog.Logger // the log file and stderr
}

func newLogs(path string, stderr io.Writer) (logs, func()) {
	text := slog.NewTextHandler(stderr, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			return a
		},
	})
	if path == "" {
		return logs{file: slog.New(slog.DiscardHandler), both: slog.New(text)}, func() {}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintf(stderr, "bridgehook: warning: --log-file: %v\n", err)
		return logs{file: slog.New(slog.DiscardHandler), both: slog.New(text)}, func() {}
	}
	file := slog.NewJSONHandler(f, nil)
	return logs{file: slog.New(file), both: slog.New(slog.NewMultiHandler(file, text))}, func() { f.Close() }
}
