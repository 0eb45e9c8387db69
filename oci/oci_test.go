package oci

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The OCI face, as far as it goes without root: it checks its input,
// opens the network, and refuses the hook's own namespace before touching
// anything.
func TestOCIFace(t *testing.T) {
	c := hook.Defaults()
	c.StateDir = t.TempDir()
	for name, st := range map[string]specs.State{
		"bad id":   {ID: "../x", Pid: 5, Status: specs.StateCreating},
		"no pid":   {ID: "x", Status: specs.StateCreating},
		"own pid":  {ID: "x", Pid: os.Getpid(), Status: specs.StateCreating},
		"dead pid": {ID: "x", Pid: 4194305, Status: specs.StateCreating},
	} {
		_, err := Setup(c, st)
		if !errors.Is(err, input.Err) {
			t.Errorf("%s: %v, want bad input", name, err)
		}
	}
	_, err := Setup(c, specs.State{ID: "x", Pid: os.Getpid()})
	if err == nil || !strings.Contains(err.Error(), "the hook's own network namespace") {
		t.Errorf("setup of the hook's own namespace: %v", err)
	}
	if res, err := Teardown(c, "never"); err != nil || res.Found {
		t.Errorf("teardown of an unknown id: %+v %v", res, err)
	}
	bad := c
	bad.Bridge = ""
	if _, err := Teardown(bad, "x"); !errors.Is(err, input.Err) {
		t.Errorf("teardown with no bridge: %v", err)
	}
}
