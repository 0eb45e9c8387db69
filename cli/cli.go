// Package cli is bridgehook's command line: the hook face (no command,
// the OCI state on stdin) and the commands that look after the networks,
// defined once with cobra, which also makes their help, the shell
// completions and the man pages.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/oci"
)

// Exit codes: 1 when the host failed us, 2 when the input was wrong.
const (
	exitFail  = 1
	exitInput = 2
)

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
	all     bool // ls, gc, repair --all
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	log     logs
}

// Run runs the command line args (without the program's name) and returns
// the exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	newEnv := func() *env {
		return &env{cfg: hook.Defaults(), stdin: stdin, stdout: stdout, stderr: stderr}
	}
	e := newEnv()
	ok, err := e.hook(args)
	if !ok {
		e = newEnv()
		root := e.Command()
		root.SetArgs(longFlags(root.PersistentFlags(), args))
		root.SetIn(stdin)
		root.SetOut(stdout)
		root.SetErr(stderr)
		err = root.Execute()
	}
	if err == nil {
		return 0
	}
	msg := strings.ReplaceAll(input.Render(err, oci.Spell), "\n", " ")
	fmt.Fprintf(stderr, "bridgehook: %s\n", msg)
	if e.log.file != nil {
		e.log.file.Error("failed", "command", e.cmd, "error", msg)
	}
	if errors.Is(err, input.Err) {
		return exitInput
	}
	return exitFail
}

// hook runs the hook face, the path every container start takes, with its
// flags parsed by pflag alone: cobra's tree of commands, their help and
// its dispatch cost a start-up a tenth of a millisecond or more, and are
// built only for the rest (ok false: anything but flags, and setup,
// teardown or version). version is here because it is what a start-up
// costs when nothing is done: scripts and packaging run it, and make
// bench measures the hook's start-up by it.
func (e *env) hook(args []string) (ok bool, err error) {
	fs := pflag.NewFlagSet("bridgehook", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.networkFlags(fs)
	if fs.Parse(longFlags(fs, args)) != nil || fs.NArg() > 1 {
		return false, nil
	}
	switch name := fs.Arg(0); name {
	case "", "setup", "teardown":
		return true, e.run(name, true, runHook, nil)
	case "version":
		return true, e.run(name, false, runVersion, nil)
	}
	return false, nil
}

// Command is the whole command line: the hook as the root, and the
// commands under it. Its flags are bound to e.
func (e *env) Command() *cobra.Command {
	root := &cobra.Command{
		Use:   "bridgehook",
		Short: "put OCI containers on a NAT'd Linux bridge",
		Long: `bridgehook puts OCI containers on a NAT'd Linux bridge.

With no command it is the OCI runtime hook: list it under createRuntime
(or prestart) and under poststop in config.json, with the same flags in
both; it reads the container state on stdin and sets the container up or
tears it down by its "status" (see "bridgehook help setup"). Run with
CNI_COMMAND set and a CNI network configuration on stdin, it is a CNI
plugin instead (containerd, CRI-O, Kubernetes).

The flags define the network, and every command takes them.`,
		Example: `  echo '{"id":"c1","pid":4242,"status":"creating"}' | bridgehook
  echo '{"id":"c1","status":"stopped"}' | bridgehook
  bridgehook --bridge br1 --subnet 10.88.0.0/24 ls`,
		Args:              unknownCommand,
		RunE:              e.action(true, runHook),
		SilenceErrors:     true,
		SilenceUsage:      true,
		DisableAutoGenTag: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return input.Errorf("", "%s (see bridgehook --help)", err)
	})
	e.networkFlags(root.PersistentFlags())
	for _, c := range e.commands() {
		root.AddCommand(c)
	}
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [command]",
		Short: "explain a command",
		Args:  cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			c, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				return input.Errorf("", "no help for %q (see bridgehook --help)", strings.Join(args, " "))
			}
			return c.Help()
		},
	})
	return root
}

// unknownCommand refuses words the root does not know as commands.
func unknownCommand(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return input.Errorf("", "unknown command %q (see bridgehook --help)", args[0])
	}
	return nil
}

// action is what command c runs: see run.
func (e *env) action(asRoot bool, run func(e *env, args []string) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		name := ""
		if c.HasParent() {
			name = c.Name()
		}
		return e.run(name, asRoot, run, args)
	}
}

// run checks the network the flags define, then runs command name (""
// for the hook deciding by the state). asRoot says the command changes
// the host, so needs root.
func (e *env) run(name string, asRoot bool, run func(e *env, args []string) error, args []string) error {
	e.cmd = name
	if len(e.subnets) > 0 {
		if err := e.cfg.ParseSubnets(e.subnets); err != nil {
			return err
		}
	}
	if err := e.cfg.Check(); err != nil {
		return err
	}
	if asRoot && os.Geteuid() != 0 {
		return input.Errorf("", "must run as root: it changes interfaces, firewall rules and leases (run it from the runtime's hooks, or with sudo)")
	}
	var closeLog func()
	e.log, closeLog = newLogs(e.logFile, e.stderr)
	defer closeLog()
	if e.debug {
		e.opts = append(e.opts, hook.WithDebug(slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	}
	return run(e, args)
}

// longFlags respells the single-dash long flags of configurations written
// for the flag package (-bridge, -state-dir=/x) with two dashes, as pflag
// wants them: a hook's config.json outlives the binary it names.
func longFlags(fs *pflag.FlagSet, args []string) []string {
	known := map[string]bool{"json": true, "all": true, "help": true}
	fs.VisitAll(func(f *pflag.Flag) { known[f.Name] = true })
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if len(a) > 2 && a[0] == '-' && a[1] != '-' && known[name] {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}

// Root is the command line as the man pages and completions describe it.
func Root() *cobra.Command {
	e := &env{cfg: hook.Defaults(), stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	root := e.Command()
	root.InitDefaultCompletionCmd()
	return root
}
