package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
)

func TestReadStateRejects(t *testing.T) {
	long := strings.Repeat("a", hook.MaxID+1)
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
			if !errors.Is(err, input.Err) {
				t.Errorf("error %q is not input.Err", err)
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
		if _, err := ActionFor(st); !errors.Is(err, input.Err) {
			t.Errorf("status %q: got %v, want an input error", status, err)
		}
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
			if !errors.Is(err, input.Err) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not a one-line input error", err)
			}
			return
		}
		if hook.CheckID(st.ID) != nil || strings.ContainsAny(st.ID, "/ \"\\\x00") || st.ID == "." || st.ID == ".." {
			t.Fatalf("accepted unsafe id %q", st.ID)
		}
		ActionFor(st)
		CheckPID(st)
	})
}
