// Package input is bad input as the core reports it: which setting was
// wrong, what is wrong with it and what to do, with the setting named by
// a neutral Field. Each face (the CLI and OCI hook, the CNI plugin) spells
// the fields in its own words when it shows the error (Render), so no face
// rewrites another's messages; modelled on CNI's types.Error and moby's
// errdefs.
package input

import (
	"errors"
	"fmt"
	"strings"
)

// Err marks errors in what bridgehook was given, as opposed to failures of
// the host: errors.Is(err, input.Err). Faces exit 2 on it (CNI: a code of
// its own).
var Err = errors.New("bad input")

// Field is a setting by its neutral name.
type Field string

// The settings a face can get wrong.
const (
	Bridge        Field = "bridge"
	Subnet        Field = "subnet"
	MTU           Field = "mtu"
	Iface         Field = "iface"
	StateDir      Field = "state-dir"
	ICC           Field = "icc"
	Internal      Field = "internal"
	NonMasquerade Field = "non-masquerade-cidr"
	Firewall      Field = "firewall"
	DNS           Field = "dns"
	HostDNS       Field = "resolv-conf"
	Names         Field = "names"
	DefaultRoute  Field = "default-route"
	SpoofCheck    Field = "spoof-check"
	// Ports, IP, IP6 and MAC are what one container asks for.
	Ports Field = "ports"
	IP    Field = "ip"
	IP6   Field = "ip6"
	MAC   Field = "mac"
	// Aliases are names a container answers to besides its own.
	Aliases Field = "aliases"
	// ID and Netns name the container: its id, and its network namespace
	// (by process or by path).
	ID    Field = "id"
	Netns Field = "netns"
)

// Fields are every Field, for the faces' tables and their tests.
var Fields = []Field{Bridge, Subnet, MTU, Iface, StateDir, ICC, Internal, NonMasquerade, Firewall, DNS, HostDNS,
	Names, DefaultRoute, SpoofCheck, Ports, IP, IP6, MAC, Aliases, ID, Netns}

// Error is bad input. Msg may name other settings as {field}, e.g.
// "choose another {subnet}", which Render spells too. Run, when set, is
// a bridgehook command line that fixes it: a command of the CLI in every
// face.
type Error struct {
	Field Field // "" when no setting is at fault (the state on stdin, say)
	Msg   string
	Run   string
	// Cause, when set, is a failure of the host that Msg explains and
	// says what to do about: the error is then no bad input, and
	// errors.Is and errors.As see Cause.
	Cause error
}

// Errorf makes an Error about field f.
func Errorf(f Field, format string, a ...any) *Error {
	return &Error{Field: f, Msg: fmt.Sprintf(format, a...)}
}

// Explain is the failure cause with what to do about it.
func Explain(cause error, format string, a ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, a...), Cause: cause}
}

// Is makes errors.Is(err, Err) true for bad input.
func (e *Error) Is(target error) bool { return target == Err && e.Cause == nil }

// Unwrap is the failure Msg explains, if any.
func (e *Error) Unwrap() error { return e.Cause }

// Error spells the fields by their neutral names.
func (e *Error) Error() string { return e.In(neutral) }

func neutral(f Field) string { return string(f) }

// In spells e with the fields named by spell; spell returns "" for a
// field its face does not show.
func (e *Error) In(spell func(Field) string) string {
	msg := e.Msg
	if strings.IndexByte(msg, '{') >= 0 {
		for _, f := range Fields {
			msg = strings.ReplaceAll(msg, "{"+string(f)+"}", spell(f))
		}
	}
	if e.Run != "" {
		msg += " (run: " + e.Run + ")"
	}
	label := spell(e.Field)
	switch {
	case e.Field == "" || label == "":
		return strings.TrimPrefix(msg, ": ")
	case strings.HasPrefix(msg, ": "):
		return label + msg
	}
	return label + " " + msg
}

// Render is err's message with the fields of the Error it wraps spelt by
// spell; the context wrapped around it is kept as it is.
func Render(err error, spell func(Field) string) string {
	var e *Error
	if !errors.As(err, &e) {
		return err.Error()
	}
	return strings.Replace(err.Error(), e.Error(), e.In(spell), 1)
}
