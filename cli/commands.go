package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/firewalld"
	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/names"
	"github.com/bridgehook/bridgehook/oci"
)

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
	e.report(report, "gc", "action")
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
	e.report(report, "repaired", "network")
	if err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	return nil
}

// report prints what a command did, a line each, and logs each line as
// msg, under key.
func (e *env) report(lines []string, msg, key string) {
	for _, line := range lines {
		fmt.Fprintln(e.stdout, line)
		e.log.file.Info(msg, key, line)
	}
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
	fmt.Fprintln(e.stdout, Version())
	return nil
}

// version is the release, as `make build` has it from git describe, in
// the spelling of the Debian package's version (see the Makefile); empty
// from a plain go build, which has the module's version instead.
var version string

// Version is what the Go toolchain stamped into the binary.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "bridgehook " + version + " (no build info)"
	}
	v := "bridgehook " + bi.Main.Version
	if version != "" {
		v = "bridgehook " + version
	}
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
