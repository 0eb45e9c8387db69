package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
)

// MaxState caps what is read from stdin. Runtimes send a few hundred bytes
// plus annotations; anything near this is not a container state.
const MaxState = 1 << 20

// noPID marks a state without a "pid" key, which no real pid can be.
const noPID = math.MinInt32

// inputErr is bad input that no one setting is at fault for.
func inputErr(format string, a ...any) error { return input.Errorf("", format, a...) }

// ReadState reads and checks an OCI container state from r. It checks what
// every command needs (an object, a valid id); Setup checks the pid.
func ReadState(r io.Reader) (specs.State, error) {
	var st specs.State
	b, err := io.ReadAll(io.LimitReader(r, MaxState+1))
	if err != nil {
		return st, fmt.Errorf("state on stdin: %w", err)
	}
	if len(b) > MaxState {
		return st, inputErr("state on stdin: over %d bytes; want the OCI state JSON the runtime sends", MaxState)
	}
	if len(trimSpace(b)) == 0 {
		return st, inputErr("state on stdin: empty; the runtime sends the container state on stdin (to test by hand: echo '{\"id\":\"c1\",\"pid\":1234,\"status\":\"creating\"}' | bridgehook)")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return st, inputErr("state on stdin: invalid JSON at byte %d: %v", syn.Offset, err)
		}
		return st, inputErr("state on stdin: not a JSON object; want the OCI state {\"id\":...,\"pid\":...,\"status\":...}")
	}
	if err := json.Unmarshal(b, &st); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return st, inputErr("state on stdin: %q is a JSON %s; want a %s", typ.Field, typ.Value, kindOf(typ.Field))
		}
		return st, inputErr("state on stdin: %v", err)
	}
	if _, ok := fields["pid"]; !ok {
		st.Pid = noPID // runc leaves it out on poststop; crun sends 0
	}
	if st.ID == "" {
		return st, inputErr("state on stdin: missing \"id\"; want the container id")
	}
	if err := hook.CheckID(st.ID); err != nil {
		return st, err
	}
	return st, nil
}

func kindOf(field string) string {
	switch field {
	case "pid":
		return "number"
	case "annotations":
		return "object of strings"
	}
	return "string"
}

// CheckPID checks the pid that setup will look up.
func CheckPID(st specs.State) error {
	switch {
	case st.Pid == noPID:
		return inputErr("state on stdin: missing \"pid\"; setup needs the container's process (is this hook listed under \"createRuntime\" or \"prestart\", not \"poststop\"?)")
	case st.Pid <= 0:
		return inputErr("state on stdin: \"pid\" is %d; want the pid of the container's process", st.Pid)
	}
	return nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

// Action is what a state asks of the hook.
type Action int

const (
	ActionSetup Action = iota + 1
	ActionTeardown
)

// ActionFor decides from the runtime's status: runc says "creating" in
// createRuntime and prestart, crun says "created"; both say "stopped" in
// poststop.
func ActionFor(st specs.State) (Action, error) {
	switch st.Status {
	case specs.StateCreating, specs.StateCreated, specs.StateRunning:
		return ActionSetup, nil
	case specs.StateStopped:
		return ActionTeardown, nil
	case "":
		return 0, inputErr("state on stdin: missing \"status\"; run \"bridgehook setup\" or \"bridgehook teardown\" to say which")
	}
	return 0, inputErr("state on stdin: unknown status %q; run \"bridgehook setup\" or \"bridgehook teardown\" to say which", st.Status)
}
