// Command bridgehook is an OCI runtime hook that puts a container on a
// NAT'd Linux bridge (createRuntime or prestart) and takes it off again
// (poststop).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/bridgehook/bridgehook/hook"
)

const usage = `bridgehook - put an OCI container on a NAT'd Linux bridge

Usage:
  bridgehook [flags] [setup|teardown]
  bridgehook [flags] repair

As a hook, bridgehook reads the container state the runtime writes on stdin
and decides from its "status": "creating", "created" or "running" sets the
container up, "stopped" tears it down. "setup" and "teardown" say so
explicitly. List it under createRuntime (or prestart) and under poststop in
config.json, with the same flags in both.

A setup that finds the network's bridge as it left it trusts its firewall
rules and runs no iptables. After something flushed the firewall
(firewalld reload, iptables-restore), "repair" puts the network's bridge
and rules back.

Examples:
  echo '{"id":"c1","pid":4242,"status":"creating"}' | bridgehook
  echo '{"id":"c1","status":"stopped"}' | bridgehook
  bridgehook --bridge br1 --subnet 10.88.0.0/24 setup < state.json
  bridgehook --bridge br1 --subnet 10.88.0.0/24 repair

Flags:
`

// Exit codes: 1 when the host failed us, 2 when the input was wrong.
const (
	exitFail  = 1
	exitInput = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stderr))
}

func run(args []string, stdin io.Reader, stderr io.Writer) int {
	cfg := hook.Defaults()
	var subnet, logFile string
	fs := flag.NewFlagSet("bridgehook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Bridge, "bridge", cfg.Bridge, "name of the bridge to attach containers to")
	fs.StringVar(&subnet, "subnet", cfg.Subnet.String(), "the network's IPv4 `CIDR`; the bridge gets its first address, the gateway")
	fs.IntVar(&cfg.MTU, "mtu", 0, "MTU of the bridge (when created) and the veths; 0: the bridge's own, 1500 for a new bridge")
	fs.StringVar(&cfg.Iface, "iface", cfg.Iface, "name of the interface inside the container")
	fs.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "where the lease store lives; under /run, leases die with a reboot as containers do")
	debug := fs.Bool("debug", false, "report how long each step takes, on stderr")
	fs.StringVar(&logFile, "log-file", "", "append a JSON line per setup, teardown and failure to this `file` (crun discards hook output)")

	// Flags may come before and after the command.
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	cmd := ""
	if fs.NArg() > 0 {
		cmd = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return usageExit(err)
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "bridgehook: unexpected argument %q (see bridgehook --help)\n", fs.Arg(0))
			return exitInput
		}
	}

	log, closeLog := newLogger(logFile, stderr)
	if *debug {
		cfg.Debug = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	defer closeLog()
	fail := func(err error) int {
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintf(stderr, "bridgehook: %s\n", msg)
		log.file.Error("failed", "command", cmd, "error", msg)
		if errors.Is(err, hook.ErrInput) {
			return exitInput
		}
		return exitFail
	}

	p, err := hook.ParseSubnet(subnet)
	if err != nil {
		return fail(err)
	}
	cfg.Subnet = p
	if err := cfg.Check(); err != nil {
		return fail(err)
	}

	if cmd == "repair" {
		if err := checkRoot(); err != nil {
			return fail(err)
		}
		if err := hook.Repair(cfg); err != nil {
			return fail(fmt.Errorf("repair: %w", err))
		}
		log.both.Info("repaired", "bridge", cfg.Bridge, "subnet", cfg.Subnet.String())
		return 0
	}

	var action hook.Action
	switch cmd {
	case "setup":
		action = hook.ActionSetup
	case "teardown":
		action = hook.ActionTeardown
	case "":
	default:
		fmt.Fprintf(stderr, "bridgehook: unknown command %q; want setup, teardown or repair (see bridgehook --help)\n", cmd)
		return exitInput
	}
	st, err := hook.ReadState(stdin)
	if err != nil {
		return fail(err)
	}
	if action == 0 {
		if action, err = hook.ActionFor(st); err != nil {
			return fail(err)
		}
	}
	if err := checkRoot(); err != nil {
		return fail(err)
	}

	start := time.Now()
	var res hook.Result
	if action == hook.ActionSetup {
		cmd = "setup"
		res, err = hook.Setup(cfg, st)
	} else {
		cmd = "teardown"
		res, err = hook.Teardown(cfg, st.ID)
	}
	if err != nil {
		return fail(fmt.Errorf("%s %s: %w", cmd, st.ID, err))
	}
	attrs := []any{"command", cmd, "id", st.ID, "bridge", cfg.Bridge, "duration", time.Since(start).String()}
	if res.Found {
		attrs = append(attrs, "ip", res.Lease.IP.String(), "veth", res.Lease.Veth)
	}
	msg := "done"
	switch {
	case res.Reused:
		msg = "already set up"
	case !res.Found:
		msg = "nothing to tear down"
	}
	log.both.Info(msg, attrs...)
	return 0
}

// logs are the hook's two audiences: a person reading stderr, and the
// --log-file, the only trace left when the runtime discards hook output.
type logs struct {
	file *slog.Logger // the log file only
	both *slog.Logger // the log file and stderr
}

func newLogger(path string, stderr io.Writer) (logs, func()) {
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

func checkRoot() error {
	if os.Geteuid() != 0 {
		return hook.InputErr("must run as root: it creates interfaces, firewall rules and leases (run it from the runtime's hooks, or with sudo)")
	}
	return nil
}

func usageExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return exitInput
}
