package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/port"
)

// The annotations a container asks with.
const (
	// AnnotationPorts publishes ports: [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/PROTO],...
	AnnotationPorts = "bridgehook.ports"
	// AnnotationIP asks for a static address in the IPv4 subnet.
	AnnotationIP = "bridgehook.ip"
	// AnnotationIP6 asks for a static address in the IPv6 subnet.
	AnnotationIP6 = "bridgehook.ip6"
	// AnnotationAliases are names, comma-separated, the container answers
	// to on a network with names.
	AnnotationAliases = "bridgehook.aliases"
)

// maxSpec caps the config.json read for annotations.
const maxSpec = 16 << 20

// Request reads what the container of state st asks of network c: its
// annotations from the state, or from the bundle's config.json when the
// runtime sent none, its root when DNS is to be written, and its names on
// a network with names. It parses them; hook.Request.Check checks them
// against the network.
func Request(c hook.Config, st specs.State) (hook.Request, error) {
	req := hook.Request{ID: st.ID, Netns: hook.Netns{PID: st.Pid}}
	ann := st.Annotations
	wantDNS := len(c.DNS) > 0 || c.HostDNS || c.Names
	if (ann == nil || wantDNS) && st.Bundle != "" {
		spec, err := readSpec(st.Bundle, wantDNS)
		if err != nil {
			return req, err
		}
		if ann == nil {
			ann = spec.Annotations
		}
		if spec.Root != nil {
			req.Rootfs = spec.Root.Path
			if !filepath.IsAbs(req.Rootfs) {
				req.Rootfs = filepath.Join(st.Bundle, req.Rootfs)
			}
		}
		if c.Names {
			req.Names = namesOf(st, spec)
		}
	}
	if s := ann[AnnotationAliases]; c.Names && s != "" {
		for _, a := range strings.Split(s, ",") {
			req.Names = append(req.Names, strings.TrimSpace(a))
		}
	}
	if wantDNS && !c.Names && req.Rootfs == "" {
		return req, input.Errorf(input.DNS, ": no root filesystem: the state has no \"bundle\", or its config.json no \"root\"")
	}
	if s, ok := ann[AnnotationPorts]; ok {
		ports, err := port.Parse(s)
		if err != nil {
			return req, input.Errorf(input.Ports, ": %v", err)
		}
		req.Ports = ports
	}
	for _, a := range []struct {
		key   string
		field input.Field
		v6    bool
		to    *netip.Addr
	}{{AnnotationIP, input.IP, false, &req.IP}, {AnnotationIP6, input.IP6, true, &req.IP6}} {
		s, ok := ann[a.key]
		if !ok {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Is6() != a.v6 || ip.Zone() != "" {
			return req, input.Errorf(a.field, "%q is not an %s address", s, familyName(a.v6))
		}
		*a.to = ip
	}
	return req, nil
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// readSpec reads the bundle's config.json. runc and crun put the
// annotations in the state already, so on the hot path the file is only
// parsed when it mentions bridgehook at all, or when whole is set.
func readSpec(bundle string, whole bool) (specs.Spec, error) {
	var spec specs.Spec
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return spec, inputErr("bundle %s has no config.json", bundle)
	}
	if err != nil {
		return spec, fmt.Errorf("read bundle: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSpec))
	if err != nil {
		return spec, fmt.Errorf("read bundle: %w", err)
	}
	if !whole && !bytes.Contains(b, []byte(`"bridgehook.`)) {
		return spec, nil
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return spec, inputErr("bundle %s: config.json: %v", bundle, err)
	}
	return spec, nil
}
