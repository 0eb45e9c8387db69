package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func run(args []string, stdin string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLI(t *testing.T) {
	tests := []struct {
		args     []string
		stdin    string
		code     int
		out, err string // substrings of stdout and stderr
	}{
		{[]string{"--help"}, "", 0, "Available Commands:", ""},
		{[]string{"help", "gc"}, "", 0, "bridgehook gc [flags]", ""},
		{[]string{"gc", "--help"}, "", 0, "Brings the lease store and the kernel", ""},
		{[]string{"help", "nope"}, "", 2, "", `no help for "nope"`},
		{[]string{"version"}, "", 0, "bridgehook ", ""},
		{[]string{"--bridge", "br1", "version"}, "", 0, "bridgehook ", ""},
		{[]string{"version", "extra"}, "", 2, "", `unexpected argument "extra"`},
		{[]string{"version", "--bridge", "much-too-long-name"}, "", 2, "", "--bridge"},
		{[]string{"version", "--help"}, "", 0, "bridgehook version [flags]", ""},
		{[]string{"bogus"}, "", 2, "", `unknown command "bogus"`},
		{[]string{"inspect"}, "", 2, "", "inspect wants one container id"},
		{[]string{"network", "up"}, "", 2, "", `want "network rm"`},
		{[]string{"ls", "extra"}, "", 2, "", `unexpected argument "extra"`},
		{[]string{"--subnet", "10.0.0.1/24", "ls"}, "", 2, "", "did you mean 10.0.0.0/24"},
		{[]string{"--bridge", "much-too-long-name"}, "", 2, "", "--bridge"},
		{nil, "", 2, "", "state on stdin: empty"},
		{[]string{"setup"}, `{"id":"c1","status":"creating"}`, 2, "", `missing "pid"`},
		{[]string{"--state-dir", "/nonexistent-bridgehook", "ls"}, "", 0, "", "no networks under /nonexistent-bridgehook"},
		{[]string{"--non-masquerade-cidr", "10.0.0.0/33", "ls"}, "", 2, "", `invalid argument "10.0.0.0/33" for "--non-masquerade-cidr" flag: want a network such as 10.244.0.0/16`},
		{[]string{"--mtu", "big", "ls"}, "", 2, "", `invalid argument "big" for "--mtu" flag`},
		{[]string{"--no-such-flag"}, "", 2, "", "unknown flag: --no-such-flag"},
		{[]string{"ls", "--subnet"}, "", 2, "", "flag needs an argument: --subnet"},
		{[]string{"--dns", "1.1.1.1,x", "ls"}, "", 2, "", `"--dns" flag: "x" is not an IP address`},
		// The spellings of configurations written for earlier versions.
		{[]string{"-state-dir", "/nonexistent-bridgehook", "ls"}, "", 0, "", "no networks under /nonexistent-bridgehook"},
		{[]string{"-state-dir=/nonexistent-bridgehook", "ls", "-all"}, "", 0, "", "no networks under /nonexistent-bridgehook"},
		{[]string{"--state-dir=/nonexistent-bridgehook", "ls", "--json"}, "", 0, "[]", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := run(tt.args, tt.stdin)
			if code != tt.code || !strings.Contains(stdout, tt.out) || !strings.Contains(stderr, tt.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, %q, %q", code, stdout, stderr, tt.code, tt.out, tt.err)
			}
			if code == 2 && strings.Count(stderr, "\n") > 1 {
				t.Errorf("error spans lines: %q", stderr)
			}
		})
	}
}

// every is each command of the tree, the root first.
func every(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		out = append(out, every(sub)...)
	}
	return out
}

func TestEveryCommandsHelpIsPrintedOnce(t *testing.T) {
	for _, c := range every(Root()) {
		path := strings.Fields(c.CommandPath())[1:]
		for _, args := range [][]string{append(path, "--help"), append([]string{"help"}, path...)} {
			code, stdout, stderr := run(args, "")
			if code != 0 || strings.Count(stdout, "Usage:") != 1 || stderr != "" {
				t.Errorf("%v: exit %d, %d usages, stderr %q", args, code, strings.Count(stdout, "Usage:"), stderr)
			}
			if c.Long != "" && strings.Count(stdout, c.Long) != 1 {
				t.Errorf("%v: its description %d times", args, strings.Count(stdout, c.Long))
			}
		}
	}
}

// badValues are values each flag refuses; flags that take anything (a
// log file that cannot be opened is a warning, not a refusal) have none.
var badValues = map[string]string{
	"bridge": "much-too-long-name", "subnet": "10.0.0.0/33", "mtu": "big", "iface": "a/b",
	"state-dir": "relative", "non-masquerade-cidr": "10.0.0.0/33", "firewall": "pf", "dns": "x",
	"all": "maybe", "json": "maybe",
}

func TestEveryBadFlagValueIsOneLineAndExit2(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range every(Root()) {
		path := strings.Fields(c.CommandPath())[1:]
		if len(path) > 0 && (path[0] == "completion" || path[0] == "help") {
			continue
		}
		visit := func(f *pflag.Flag) {
			bad, ok := badValues[f.Name]
			if f.Value.Type() == "bool" {
				bad, ok = "maybe", f.Name != "help"
			}
			if !ok || f.Name == "log-file" {
				return
			}
			seen[f.Name] = true
			args := append(append([]string{}, path...), "--"+f.Name+"="+bad)
			if f.Name != "state-dir" && (len(path) == 0 || path[0] == "setup" || path[0] == "teardown") {
				args = append(args, "--state-dir=/nonexistent-bridgehook")
			}
			code, _, stderr := run(args, "")
			if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "--"+f.Name) {
				t.Errorf("%v: exit %d, %q; want one line naming --%s, exit 2", args, code, stderr, f.Name)
			}
		}
		c.LocalFlags().VisitAll(visit)
		c.InheritedFlags().VisitAll(visit)
	}
	for name := range badValues {
		if !seen[name] {
			t.Errorf("no command has --%s", name)
		}
	}
}

func TestTheBashCompletionLoads(t *testing.T) {
	code, script, stderr := run([]string{"completion", "bash"}, "")
	if code != 0 || stderr != "" {
		t.Fatalf("completion bash: exit %d, %s", code, stderr)
	}
	f := filepath.Join(t.TempDir(), "bridgehook.bash")
	if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", "-n", f).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	out, err := exec.Command("bash", "-c", "source "+f+" && complete -p bridgehook").CombinedOutput()
	if err != nil || !regexp.MustCompile(`complete .*-F \S+ bridgehook`).Match(out) {
		t.Errorf("complete -p bridgehook after sourcing: %v\n%s", err, out)
	}
	for _, shell := range []string{"zsh", "fish"} {
		if code, script, _ := run([]string{"completion", shell}, ""); code != 0 || !strings.Contains(script, "bridgehook") {
			t.Errorf("completion %s: exit %d", shell, code)
		}
	}
}
