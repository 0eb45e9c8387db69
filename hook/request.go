package hook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/bridgehook/bridgehook/nat"
)

// The annotations a container asks with.
const (
	// AnnotationPorts publishes ports: [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/PROTO],...
	AnnotationPorts = "bridgehook.ports"
	// AnnotationIP asks for a static address in the subnet.
	AnnotationIP = "bridgehook.ip"
)

// request is what one container asks of the network, checked before
// anything is changed.
type request struct {
	ports  []nat.Port
	ip     netip.Addr // invalid: any
	rootfs string     // the container's root, for resolv.conf
}

// maxSpec caps the config.json read for annotations.
const maxSpec = 16 << 20

// requestOf reads the container's annotations from the state, or from the
// bundle's config.json when the runtime sent none, and its root when DNS
// is to be written.
func (c Config) requestOf(st specs.State) (request, error) {
	var req request
	ann := st.Annotations
	wantDNS := len(c.DNS) > 0 || c.HostDNS
	if (ann == nil || wantDNS) && st.Bundle != "" {
		spec, err := readSpec(st.Bundle, wantDNS)
		if err != nil {
			return req, err
		}
		if ann == nil {
			ann = spec.Annotations
		}
		if spec.Root != nil {
			req.rootfs = spec.Root.Path
			if !filepath.IsAbs(req.rootfs) {
				req.rootfs = filepath.Join(st.Bundle, req.rootfs)
			}
		}
	}
	if wantDNS && req.rootfs == "" {
		return req, inputErr("--dns/--resolv-conf: no root filesystem: the state has no \"bundle\", or its config.json no \"root\"")
	}
	if s, ok := ann[AnnotationPorts]; ok {
		ports, err := nat.ParsePorts(s)
		if err != nil {
			return req, inputErr("annotation %s: %v", AnnotationPorts, err)
		}
		if c.Internal {
			return req, inputErr("annotation %s: network %s is --internal, so nothing can be published on it", AnnotationPorts, c.Bridge)
		}
		req.ports = ports
	}
	if s, ok := ann[AnnotationIP]; ok {
		ip, err := netip.ParseAddr(s)
		if err != nil || !ip.Is4() {
			return req, inputErr("annotation %s: %q is not an IPv4 address", AnnotationIP, s)
		}
		req.ip = ip
	}
	return req, nil
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

func portStrings(ports []nat.Port) []string {
	var s []string
	for _, p := range ports {
		s = append(s, p.String())
	}
	return s
}

// published is what nat needs to add or remove a lease's port rules.
func published(id string, ip netip.Addr, ports []string) (nat.Published, error) {
	p := nat.Published{ID: id, IP: ip}
	for _, s := range ports {
		ps, err := nat.ParsePorts(s)
		if err != nil {
			return p, fmt.Errorf("lease of %s: %w", id, err)
		}
		p.Ports = append(p.Ports, ps...)
	}
	return p, nil
}
