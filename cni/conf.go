package cni

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/names"
	"github.com/bridgehook/bridgehook/port"
)

// netConf is the plugin's configuration: the network's keys mirror the
// hook's flags, and the runtime adds runtimeConfig (the capabilities
// portMappings, ips and mac) and, for CHECK, prevResult.
type netConf struct {
	types.PluginConf
	Bridge   string  `json:"bridge"`
	Subnet   subnets `json:"subnet"`
	MTU      int     `json:"mtu"`
	ICC      *bool   `json:"icc"`
	Internal bool    `json:"internal"`
	// NonMasquerade mirrors --non-masquerade-cidr.
	NonMasquerade []string `json:"nonMasqueradeCIDRs"`
	DefaultRoute  *bool    `json:"defaultRoute"`
	SpoofCheck    *bool    `json:"spoofCheck"`
	// Names mirrors --names.
	Names bool `json:"names"`
	// DNS goes into the result as it is, for the runtime to write; it is
	// CNI's own object (libcni parses it too). On a network with names,
	// the result names the network's server, and these nameservers are
	// its upstreams.
	DNS      types.DNS `json:"dns"`
	Firewall string    `json:"firewall"`
	StateDir string    `json:"stateDir"`
	LogFile  string    `json:"logFile"`

	RuntimeConfig struct {
		PortMappings []portMapping `json:"portMappings"`
		IPs          []string      `json:"ips"`
		MAC          string        `json:"mac"`
		// Aliases are the names of the container per network, as
		// podman's CNI backend passes them: {"NETWORK": ["name", ...]}.
		Aliases map[string][]string `json:"aliases"`
	} `json:"runtimeConfig"`
}

type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP"`
}

// subnets is "subnet": one prefix as a string, or a list of one or two.
type subnets []string

func (s *subnets) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*s = []string{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf(`"subnet": want a string such as "172.19.0.0/16", or a list of an IPv4 and an IPv6 prefix`)
	}
	*s = list
	return nil
}

// parse reads the configuration on stdin.
func parse(stdin []byte) (*netConf, error) {
	var c netConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, invalid("network configuration: %v", err)
	}
	for _, s := range c.DNS.Nameservers {
		if _, err := netip.ParseAddr(s); err != nil {
			return nil, invalid(`"dns": nameserver %q is not an IP address`, s)
		}
	}
	return &c, nil
}

// config is the network c describes, for the container's interface
// ifname, checked as the hook checks its flags.
func (c *netConf) config(ifname string) (hook.Config, error) {
	cfg := hook.Defaults()
	if ifname != "" { // GC and STATUS name none
		cfg.Iface = ifname
	}
	if c.Bridge != "" {
		cfg.Bridge = c.Bridge
	}
	if len(c.Subnet) > 0 {
		if err := cfg.ParseSubnets(c.Subnet); err != nil {
			return cfg, err
		}
	}
	cfg.MTU, cfg.Internal, cfg.Firewall, cfg.Names = c.MTU, c.Internal, c.Firewall, c.Names
	if c.Names {
		for _, s := range c.DNS.Nameservers {
			cfg.DNS = append(cfg.DNS, netip.MustParseAddr(s)) // checked by parse
		}
	}
	for _, s := range c.NonMasquerade {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return cfg, invalid(`"nonMasqueradeCIDRs": %q is not a network such as "10.244.0.0/16"`, s)
		}
		cfg.NonMasquerade = append(cfg.NonMasquerade, p)
	}
	if c.ICC != nil {
		cfg.ICC = *c.ICC
	}
	if c.DefaultRoute != nil {
		cfg.DefaultRoute = *c.DefaultRoute
	}
	if c.SpoofCheck != nil {
		cfg.SpoofCheck = *c.SpoofCheck
	}
	if c.StateDir != "" {
		cfg.StateDir = c.StateDir
	}
	return cfg, cfg.Check()
}

// keys are the configuration's names of the settings whose key is not
// their neutral name.
var keys = map[input.Field]string{
	input.StateDir:      `"stateDir"`,
	input.NonMasquerade: `"nonMasqueradeCIDRs"`,
	input.DefaultRoute:  `"defaultRoute"`,
	input.SpoofCheck:    `"spoofCheck"`,
	input.Iface:         "CNI_IFNAME",
	input.Netns:         "CNI_NETNS",
	input.ID:            "CNI_CONTAINERID",
	input.Ports:         "runtimeConfig.portMappings",
	input.IP:            "runtimeConfig.ips",
	input.IP6:           "runtimeConfig.ips",
	input.MAC:           "runtimeConfig.mac",
	input.Aliases:       "runtimeConfig.aliases",
	input.HostDNS:       "", // the runtime writes resolv.conf from "dns"
}

// Spell names field f as this face's users give it: a key of the
// network configuration, a capability, or CNI's environment.
func Spell(f input.Field) string {
	if k, ok := keys[f]; ok {
		return k
	}
	return `"` + string(f) + `"`
}

// request is what the runtime asks for the container: its ports, static
// addresses and MAC, and on a network with names its names: the pod's
// name, which CRI-O, containerd and podman pass in CNI_ARGS as
// K8S_POD_NAME (podman's container name), and the aliases capability.
func (c *netConf) request(id, netns, args string) (hook.Request, error) {
	req := hook.Request{ID: id, Netns: hook.Netns{Path: netns}}
	rc := c.RuntimeConfig
	if c.Names {
		req.Names = append(podName(args), rc.Aliases[c.Name]...)
	}
	if len(rc.PortMappings) > 0 {
		var specs []string
		for _, m := range rc.PortMappings {
			proto := strings.ToLower(m.Protocol)
			if proto == "" {
				proto = "tcp"
			}
			host := ""
			if m.HostIP != "" {
				ip, err := netip.ParseAddr(m.HostIP)
				if err != nil {
					return req, invalid("portMappings: hostIP %q is not an IP address", m.HostIP)
				}
				if host = ip.String() + ":"; ip.Is6() {
					host = "[" + ip.String() + "]:"
				}
			}
			specs = append(specs, fmt.Sprintf("%s%d:%d/%s", host, m.HostPort, m.ContainerPort, proto))
		}
		ports, err := port.Parse(strings.Join(specs, ","))
		if err != nil {
			return req, invalid("portMappings: %v", err)
		}
		req.Ports = ports
	}
	for _, s := range rc.IPs {
		ip, err := netip.ParseAddr(s)
		if p, perr := netip.ParsePrefix(s); perr == nil {
			ip, err = p.Addr(), nil
		}
		if err != nil {
			return req, invalid("ips: %q is not an IP address", s)
		}
		if ip.Is6() {
			req.IP6 = ip
		} else {
			req.IP = ip
		}
	}
	if rc.MAC != "" {
		mac, err := net.ParseMAC(rc.MAC)
		if err != nil {
			return req, invalid("mac: %q is not a unicast Ethernet address", rc.MAC)
		}
		req.MAC = mac
	}
	return req, nil
}

// podName is K8S_POD_NAME of CNI_ARGS ("K1=V1;K2=V2"), when it can be a
// name.
func podName(args string) []string {
	for _, kv := range strings.Split(args, ";") {
		if v, ok := strings.CutPrefix(kv, "K8S_POD_NAME="); ok {
			if _, ok := names.Canonical(v); ok {
				return []string{v}
			}
		}
	}
	return nil
}

func invalid(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}
