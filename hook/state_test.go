package hook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadStateRejects(t *testing.T) {
	long := strings.Repeat("a", MaxID+1)
	tests := []struct {
		name, in, want string
		setup          bool // the error shows only when setting up
	}{
		{"empty", "", "empty", false},
		{"blank", " \n\t", "empty", false},
		{"invalid JSON", `{"id":`, "invalid JSON", false},
		{"not an object", `[1,2]`, "not a JSON object", false},
		{"a string", `"c1"`, "not a JSON object", false},
		{"pid as string", `{"id":"c1","pid":"42","status":"creating"}`, `"pid" is a JSON string; want a number`, false},
		{"id as number", `{"id":7,"pid":42,"status":"creating"}`, `"id" is a JSON number; want a string`, false},
		{"empty id", `{"id":"","pid":42,"status":"creating"}`, `missing "id"`, false},
		{"no id", `{"pid":42,"status":"creating"}`, `missing "id"`, false},
		{"long id", `{"id":"` + long + `","pid":42}`, "1025 bytes", false},
		{"slash in id", `{"id":"../etc","pid":42}`, `'/'`, false},
		{"space in id", `{"id":"a b","pid":42}`, `' '`, false},
		{"dot id", `{"id":"..","pid":42}`, "not allowed", false},
		{"missing pid", `{"id":"c1","status":"creating"}`, `missing "pid"`, true},
		{"zero pid", `{"id":"c1","pid":0,"status":"creating"}`, `"pid" is 0`, true},
		{"negative pid", `{"id":"c1","pid":-5,"status":"creating"}`, `"pid" is -5`, true},
		{"too big", `{"id":"c1","x":"` + strings.Repeat("x", MaxState) + `"}`, "over", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ReadState(strings.NewReader(tt.in))
			if tt.setup {
				if err != nil {
					t.Fatalf("ReadState: %v", err)
				}
				err = CheckPID(st)
			}
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
			if !errors.Is(err, ErrInput) {
				t.Errorf("error %q is not ErrInput", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans lines", err)
			}
		})
	}
}

func TestReadStateRuntimes(t *testing.T) {
	tests := []struct {
		file   string
		id     string
		pid    int
		action Action
	}{
		{"state-runc-createRuntime.json", "web-1", 4242, ActionSetup},
		{"state-runc-poststop.json", "web-1", noPID, ActionTeardown},
		{"state-crun-createRuntime.json", "web-2", 4343, ActionSetup},
		{"state-crun-poststop.json", "web-2", 0, ActionTeardown},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := os.Open("../testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, err := ReadState(f)
			if err != nil {
				t.Fatalf("ReadState: %v", err)
			}
			if st.ID != tt.id || st.Pid != tt.pid {
				t.Errorf("got id %q pid %d, want %q %d", st.ID, st.Pid, tt.id, tt.pid)
			}
			a, err := ActionFor(st)
			if err != nil || a != tt.action {
				t.Errorf("ActionFor = %v, %v; want %v", a, err, tt.action)
			}
			if err := CheckPID(st); (err == nil) != (tt.action == ActionSetup) {
				t.Errorf("CheckPID = %v", err)
			}
		})
	}
}

func TestActionForStatus(t *testing.T) {
	for status, want := range map[string]Action{
		"creating": ActionSetup, "created": ActionSetup, "running": ActionSetup, "stopped": ActionTeardown,
	} {
		st, err := ReadState(strings.NewReader(`{"id":"c1","pid":3,"status":"` + status + `"}`))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ActionFor(st); err != nil || got != want {
			t.Errorf("status %s: got %v, %v; want %v", status, got, err, want)
		}
	}
	for _, status := range []string{"", "paused"} {
		st, _ := ReadState(strings.NewReader(`{"id":"c1","pid":3,"status":"` + status + `"}`))
		if _, err := ActionFor(st); !errors.Is(err, ErrInput) {
			t.Errorf("status %q: got %v, want an input error", status, err)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	bad := map[string]func(*Config){
		"long bridge":  func(c *Config) { c.Bridge = "abcdefghijklmnop" },
		"empty bridge": func(c *Config) { c.Bridge = "" },
		"slash bridge": func(c *Config) { c.Bridge = "a/b" },
		"space iface":  func(c *Config) { c.Iface = "eth 0" },
		"tiny mtu":     func(c *Config) { c.MTU = 100 },
		"relative dir": func(c *Config) { c.StateDir = "run/x" },
		"no subnet":    func(c *Config) { c.Subnets = nil },
		"IPv6 first": func(c *Config) {
			c.Subnets = []netip.Prefix{netip.MustParsePrefix("fd19::/64"), netip.MustParsePrefix("10.0.0.0/24")}
		},
		"IPv6 mtu below 1280": func(c *Config) {
			c.Subnets, c.MTU = []netip.Prefix{netip.MustParsePrefix("fd19::/64")}, 1279
		},
	}
	if err := Defaults().Check(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, mod := range bad {
		c := Defaults()
		mod(&c)
		if err := c.Check(); !errors.Is(err, ErrInput) {
			t.Errorf("%s: got %v, want an input error", name, err)
		}
	}
	for in, want := range map[string]string{
		"172.19.0.5/16":       "did you mean 172.19.0.0/16",
		"fd19::5/64":          "host bits set); did you mean fd19::/64",
		"10.0.0.0/31":         "too small",
		"fd19::/121":          "want an IPv6 prefix of /120 or larger",
		"nonsense":            "want a network such as",
		"224.1.0.0/16":        "multicast",
		"ff05::/64":           "multicast",
		"169.254.0.0/16":      "link-local",
		"fe80::/64":           "link-local",
		"127.0.0.0/8":         "loopback",
		"::1/128":             "loopback",
		"0.0.0.0/0":           "whole address space",
		"::/0":                "whole address space",
		"fe80::/64%eth0":      "want a network such as",
		"::ffff:10.0.0.0/120": "want a network such as",
	} {
		if _, err := ParseSubnet(in); err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrInput) {
			t.Errorf("ParseSubnet(%q) = %v, want %q", in, err, want)
		}
	}
	for _, in := range []string{"10.1.0.0/29", "fd19::/64", "2001:db8:1::/48", "fd19::ff00/120"} {
		if p, err := ParseSubnet(in); err != nil || p.String() != in {
			t.Errorf("ParseSubnet(%s) = %v, %v", in, p, err)
		}
	}
}

func TestSetSubnets(t *testing.T) {
	p := netip.MustParsePrefix
	var c Config
	if err := c.SetSubnets([]netip.Prefix{p("fd19::/64"), p("10.0.0.0/24")}); err != nil || fmt.Sprint(c.Subnets) != "[10.0.0.0/24 fd19::/64]" {
		t.Errorf("dual-stack: %v %v, want IPv4 first", c.Subnets, err)
	}
	for _, bad := range [][]netip.Prefix{
		nil,
		{p("10.0.0.0/24"), p("10.1.0.0/24")},
		{p("fd19::/64"), p("fd20::/64")},
		{p("10.0.0.0/24"), p("fd19::/64"), p("fd20::/64")},
	} {
		if err := c.SetSubnets(bad); !errors.Is(err, ErrInput) {
			t.Errorf("SetSubnets(%v) = %v, want an input error", bad, err)
		}
	}
}

func TestUndoRunsInReverseAndCarriesOn(t *testing.T) {
	var got []int
	var u undoStack
	for i := 1; i <= 3; i++ {
		u.push(func() error {
			got = append(got, i)
			if i == 2 {
				return errors.New("two")
			}
			return nil
		})
	}
	if err := u.run(); err == nil || err.Error() != "two" {
		t.Errorf("run = %v, want the failure", err)
	}
	if len(got) != 3 || got[0] != 3 || got[2] != 1 {
		t.Errorf("ran %v, want [3 2 1]", got)
	}
}

func TestAliasFitsIfAlias(t *testing.T) {
	if a := alias("c1"); a != "bridgehook:c1" {
		t.Errorf("alias(c1) = %q", a)
	}
	long := strings.Repeat("x", MaxID)
	if a := alias(long); len(a) > 255 || a == alias(long[1:]) {
		t.Errorf("alias of a long id: %q", a)
	}
}

func BenchmarkReadState(b *testing.B) {
	in, err := os.ReadFile("../testdata/state-crun-createRuntime.json")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ReadState(strings.NewReader(string(in))); err != nil {
			b.Fatal(err)
		}
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// FuzzReadState feeds the state parser anything: it must never panic, and
// whatever it accepts has an id that is safe as a file name and an
// iptables comment.
func FuzzReadState(f *testing.F) {
	for _, pattern := range []string{"../testdata/state-*.json", "../testdata/states/*"} {
		seeds, _ := filepath.Glob(pattern)
		for _, s := range seeds {
			b, err := os.ReadFile(s)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		st, err := ReadState(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrInput) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not a one-line input error", err)
			}
			return
		}
		if CheckID(st.ID) != nil || strings.ContainsAny(st.ID, "/ \"\\\x00") || st.ID == "." || st.ID == ".." {
			t.Fatalf("accepted unsafe id %q", st.ID)
		}
		ActionFor(st)
		CheckPID(st)
	})
}
