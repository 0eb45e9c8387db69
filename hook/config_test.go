package hook

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestConfigCheck(t *testing.T) {
	bad := map[string]func(*Config){
		"long bridge":  func(c *Config) { c.Bridge = "abcdefghijklmnop" },
		"empty bridge": func(c *Config) { c.Bridge = "" },
		"slash bridge": func(c *Config) { c.Bridge = "a/b" },
		"space iface":  func(c *Config) { c.Iface = "eth 0" },
		"tiny mtu":     func(c *Config) { c.MTU = 100 },
		"relative dir": func(c *Config) { c.StateDir = "run/x" },
		"no subnet":    func(c *Config) { c.Subnets = nil },
		"IPv6 first": func(c *Config) {
			c.Subnets = []netip.Prefix{netip.MustParsePrefix("fd19::/64"), netip.MustParsePrefix("10.0.0.0/24")}
		},
		"IPv6 mtu below 1280": func(c *Config) {
			c.Subnets, c.MTU = []netip.Prefix{netip.MustParsePrefix("fd19::/64")}, 1279
		},
	}
	if err := Defaults().Check(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, mod := range bad {
		c := Defaults()
		mod(&c)
		if err := c.Check(); !errors.Is(err, ErrInput) {
			t.Errorf("%s: got %v, want an input error", name, err)
		}
	}
	for in, want := range map[string]string{
		"172.19.0.5/16":       "did you mean 172.19.0.0/16",
		"fd19::5/64":          "host bits set); did you mean fd19::/64",
		"10.0.0.0/31":         "too small",
		"fd19::/121":          "want an IPv6 prefix of /120 or larger",
		"nonsense":            "want a network such as",
		"224.1.0.0/16":        "multicast",
		"ff05::/64":           "multicast",
		"169.254.0.0/16":      "link-local",
		"fe80::/64":           "link-local",
		"127.0.0.0/8":         "loopback",
		"::1/128":             "loopback",
		"0.0.0.0/0":           "whole address space",
		"::/0":                "whole address space",
		"fe80::/64%eth0":      "want a network such as",
		"::ffff:10.0.0.0/120": "want a network such as",
	} {
		if _, err := ParseSubnet(in); err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrInput) {
			t.Errorf("ParseSubnet(%q) = %v, want %q", in, err, want)
		}
	}
	for _, in := range []string{"10.1.0.0/29", "fd19::/64", "2001:db8:1::/48", "fd19::ff00/120"} {
		if p, err := ParseSubnet(in); err != nil || p.String() != in {
			t.Errorf("ParseSubnet(%s) = %v, %v", in, p, err)
		}
	}
}

func TestSetSubnets(t *testing.T) {
	p := netip.MustParsePrefix
	var c Config
	if err := c.SetSubnets([]netip.Prefix{p("fd19::/64"), p("10.0.0.0/24")}); err != nil || fmt.Sprint(c.Subnets) != "[10.0.0.0/24 fd19::/64]" {
		t.Errorf("dual-stack: %v %v, want IPv4 first", c.Subnets, err)
	}
	for _, bad := range [][]netip.Prefix{
		nil,
		{p("10.0.0.0/24"), p("10.1.0.0/24")},
		{p("fd19::/64"), p("fd20::/64")},
		{p("10.0.0.0/24"), p("fd19::/64"), p("fd20::/64")},
	} {
		if err := c.SetSubnets(bad); !errors.Is(err, ErrInput) {
			t.Errorf("SetSubnets(%v) = %v, want an input error", bad, err)
		}
	}
}

func TestVethNames(t *testing.T) {
	c := Defaults()
	for iface, want := range map[string]string{"eth0": "netnsv0-4194304", "eth1": "netnsv1-4194304"} {
		c.Iface = iface
		if got := c.vethName(4194304); got != want {
			t.Errorf("%s: %s, want %s", iface, got, want)
		}
	}
	c.Iface = "uplink-a"
	if got := c.vethName(4194304); len(got) > 15 || !strings.HasPrefix(got, "bh") {
		t.Errorf("uplink-a: %s", got)
	}
	// gc recognises our names, and only ours, on an unlabelled veth.
	for _, iface := range []string{"eth0", "eth7", "uplink-a"} {
		c.Iface = iface
		if name := c.vethName(77); !isVethName(name) {
			t.Errorf("isVethName(%q) = false", name)
		}
	}
	for _, name := range []string{"veth1234", "netnsv0-", "netnsv10-5", "netnsv0-12a", "bhxyz12-5", "bh12345", "eth0", "docker0"} {
		if isVethName(name) {
			t.Errorf("isVethName(%q) = true", name)
		}
	}
}
