// Package oci is bridgehook's OCI hook face: a runtime's container state
// on stdin (ReadState), the annotations it asks with (Request), and what
// the state's status asks of the hook (ActionFor). It is the only package
// that knows the runtime-spec; the orchestration is package hook's.
//
// Spell names the settings in this face's words, the hook's flags and the
// annotations, for the errors it shows.
package oci

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
)

// Setup wires the container of OCI state st into network c.
func Setup(c hook.Config, st specs.State, opts ...hook.Option) (hook.Result, error) {
	if err := CheckPID(st); err != nil {
		return hook.Result{}, err
	}
	req, err := Request(c, st)
	if err != nil {
		return hook.Result{}, err
	}
	return hook.Join(c, req, opts...)
}

// Teardown takes container id off network c.
func Teardown(c hook.Config, id string, opts ...hook.Option) (hook.Result, error) {
	if err := hook.CheckID(id); err != nil {
		return hook.Result{}, err
	}
	return hook.Leave(c, id, opts...)
}

// Spell names field f as this face's users give it: a flag of the hook's
// arguments, or an annotation of the container's.
func Spell(f input.Field) string {
	switch f {
	case input.Ports:
		return "annotation " + AnnotationPorts
	case input.IP:
		return "annotation " + AnnotationIP
	case input.IP6:
		return "annotation " + AnnotationIP6
	case input.Aliases:
		return "annotation " + AnnotationAliases
	case input.ID:
		return "container id"
	case input.Netns, input.MAC:
		return "" // the state's pid names it; a MAC is never asked here
	}
	return "--" + string(f)
}
