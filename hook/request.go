package hook

// The OCI face: a runtime's container state in, a Request out.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/nat"
)

// Setup wires the container of OCI state st into network c (Open checks
// c, before anything is touched).
func Setup(c Config, st specs.State, debug *slog.Logger) (Result, error) {
	if err := CheckID(st.ID); err != nil {
		return Result{}, err
	}
	if err := CheckPID(st); err != nil {
		return Result{}, err
	}
	req, err := c.requestOf(st)
	if err != nil {
		return Result{}, err
	}
	return connected(c, debug, func(n *Network) (Result, error) { return n.Setup(req) })
}

// Teardown takes container id off network c.
func Teardown(c Config, id string, debug *slog.Logger) (Result, error) {
	if err := CheckID(id); err != nil {
		return Result{}, err
	}
	return connected(c, debug, func(n *Network) (Result, error) { return n.Teardown(id) })
}

// connected runs fn on network c, opened for it and closed after.
func connected(c Config, debug *slog.Logger, fn func(*Network) (Result, error)) (Result, error) {
	n, err := Open(c)
	if err != nil {
		return Result{}, err
	}
	defer n.Close()
	n.Debug = debug
	return fn(n)
}

// The annotations a container asks with.
const (
	// AnnotationPorts publishes ports: [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/PROTO],...
	AnnotationPorts = "bridgehook.ports"
	// AnnotationIP asks for a static address in the IPv4 subnet.
	AnnotationIP = "bridgehook.ip"
	// AnnotationIP6 asks for a static address in the IPv6 subnet.
	AnnotationIP6 = "bridgehook.ip6"
)

// maxSpec caps the config.json read for annotations.
const maxSpec = 16 << 20

// requestOf reads what the container asks of the network, checked before
// anything is changed: its annotations from the state, or from the
// bundle's config.json when the runtime sent none, and its root when DNS
// is to be written.
func (c Config) requestOf(st specs.State) (Request, error) {
	req := Request{ID: st.ID, PID: st.Pid}
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
			req.Rootfs = spec.Root.Path
			if !filepath.IsAbs(req.Rootfs) {
				req.Rootfs = filepath.Join(st.Bundle, req.Rootfs)
			}
		}
	}
	if wantDNS && req.Rootfs == "" {
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
		for _, p := range ports {
			if p.HostIP.IsValid() && !c.has(p.HostIP.Is6()) {
				return req, inputErr("annotation %s: %s: network %s has no %s subnet; publish on a host address of its family, or none", AnnotationPorts, p, c.Bridge, familyName(p.HostIP.Is6()))
			}
		}
		req.Ports = ports
	}
	for _, a := range []struct {
		key string
		v6  bool
		to  *netip.Addr
	}{{AnnotationIP, false, &req.IP}, {AnnotationIP6, true, &req.IP6}} {
		s, ok := ann[a.key]
		if !ok {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Is6() != a.v6 || ip.Zone() != "" {
			return req, inputErr("annotation %s: %q is not an %s address", a.key, s, familyName(a.v6))
		}
		if !c.has(a.v6) {
			return req, inputErr("annotation %s: network %s has no %s subnet (--subnet %v)", a.key, c.Bridge, familyName(a.v6), c.Subnets)
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

func portStrings(ports []nat.Port) []string {
	var s []string
	for _, p := range ports {
		s = append(s, p.String())
	}
	return s
}

// published is what nat needs to add or remove a lease's port rules.
func published(l ipam.Lease) (nat.Published, error) {
	id := l.ID
	p := nat.Published{ID: id, IP: l.IP, IP6: l.IP6}
	for _, s := range l.Ports {
		ps, err := nat.ParsePorts(s)
		if err != nil {
			return p, fmt.Errorf("lease of %s: %w", id, err)
		}
		p.Ports = append(p.Ports, ps...)
	}
	return p, nil
}
