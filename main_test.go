package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCLI(t *testing.T) {
	tests := []struct {
		args     []string
		stdin    string
		code     int
		out, err string // substrings of stdout and stderr
	}{
		{[]string{"--help"}, "", 0, "", "Commands:"},
		{[]string{"help", "gc"}, "", 0, "bridgehook [flags] gc [--all]", ""},
		{[]string{"gc", "--help"}, "", 0, "", "Brings the lease store and the kernel"},
		{[]string{"help", "nope"}, "", 2, `no help for "nope"`, ""},
		{[]string{"version"}, "", 0, "bridgehook ", ""},
		{[]string{"bogus"}, "", 2, "", `unknown command "bogus"`},
		{[]string{"inspect"}, "", 2, "", "inspect wants one container id"},
		{[]string{"network", "up"}, "", 2, "", `want "network rm"`},
		{[]string{"ls", "extra"}, "", 2, "", `unexpected argument "extra"`},
		{[]string{"--subnet", "10.0.0.1/24", "ls"}, "", 2, "", "did you mean 10.0.0.0/24"},
		{[]string{"--bridge", "much-too-long-name"}, "", 2, "", "--bridge"},
		{nil, "", 2, "", "state on stdin: empty"},
		{[]string{"setup"}, `{"id":"c1","status":"creating"}`, 2, "", `missing "pid"`},
		{[]string{"--state-dir", "/nonexistent-bridgehook", "ls"}, "", 0, "", "no networks under /nonexistent-bridgehook"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != tt.code || !strings.Contains(stdout.String(), tt.out) || !strings.Contains(stderr.String(), tt.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, %q, %q",
					code, stdout.String(), stderr.String(), tt.code, tt.out, tt.err)
			}
			if code == 2 && strings.Count(stderr.String(), "\n") > 1 {
				t.Errorf("error spans lines: %q", stderr.String())
			}
		})
	}
}
