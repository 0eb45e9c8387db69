package oci

import (
	"encoding/json"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/bridgehook/bridgehook/names"
)

// namesOf are the names a container of state st answers to, besides its
// id and its aliases: the hostname of its config.json, and its name where
// its engine keeps one we can find. Names that cannot be DNS names are
// left out; they are the runtime's, not the user's, to get right.
func namesOf(st specs.State, spec specs.Spec) []string {
	var ns []string
	for _, n := range []string{spec.Hostname, podmanName(st)} {
		if _, ok := names.Canonical(n); ok {
			ns = append(ns, n)
		}
	}
	return ns
}

// podmanName is the --name of a podman container. podman passes a hook no
// name (its hostname is the short id), but its store, containers/storage,
// lists each container's names beside the containers' directories, and
// the bundle is one of those: GRAPHROOT/DRIVER-containers/ID/userdata.
func podmanName(st specs.State) string {
	if st.Annotations["io.container.manager"] != "libpod" || filepath.Base(st.Bundle) != "userdata" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(st.Bundle, "..", "..", "containers.json"))
	if err != nil {
		return ""
	}
	var cs []struct {
		ID    string   `json:"id"`
		Names []string `json:"names"`
	}
	if json.Unmarshal(b, &cs) != nil {
		return ""
	}
	for _, c := range cs {
		if c.ID == st.ID && len(c.Names) > 0 {
			return c.Names[0]
		}
	}
	return ""
}
