package e2e

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/nat"
)

// peer is a container on the test's network, as the others see it.
type peer struct {
	ns     netns.NsHandle
	mac    net.HardwareAddr
	ip, ll netip.Addr // IPv4, and the IPv6 link-local one
	ip6    netip.Addr
	veth   string
}

func (s *sandbox) peer(t *testing.T, id string, pid int) peer {
	t.Helper()
	l, ok := s.lease(id, "172.19.0.0/16,fd19::/64")
	if !ok {
		t.Fatalf("%s has no lease", id)
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	mac := bridge.MAC(l.IP)
	return peer{ns: ns, mac: mac, ip: l.IP, ip6: l.IP6, ll: nat.LinkLocal(mac), veth: l.Veth}
}

var (
	gateway  = netip.MustParseAddr("172.19.0.1")
	allNodes = netip.MustParseAddr("ff02::1")
	mcast    = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
)

// from reports whether frame was sent from mac.
func from(frame []byte, mac net.HardwareAddr) bool {
	return len(frame) > 12 && bytes.Equal(frame[6:12], mac)
}

// icmp6Type is frame's ICMPv6 type, if it is an ICMPv6 message without
// extension headers.
func icmp6Type(frame []byte) int {
	if len(frame) < 55 || frame[12] != 0x86 || frame[13] != 0xdd || frame[20] != unix.IPPROTO_ICMPV6 {
		return -1
	}
	return int(frame[54])
}

// An attack a container with NET_RAW (or NET_ADMIN, whose attacks put
// the same frames on the wire) makes on its neighbours: the frame the
// attacker a sends, and what the observer sees of it if it lands.
type attack struct {
	name   string
	frame  func(a, b, c peer) []byte
	landed func(s *sandbox, t *testing.T, a, b, c peer) func(time.Duration) bool
}

// seenBy captures at the observer c what match accepts.
func seenBy(match func(frame []byte, a, b, c peer) bool) func(*sandbox, *testing.T, peer, peer, peer) func(time.Duration) bool {
	return func(_ *sandbox, t *testing.T, a, b, c peer) func(time.Duration) bool {
		return capture(t, c.ns, "eth0", func(f []byte) bool { return match(f, a, b, c) })
	}
}

var attacks = []attack{
	{"IPv4 from a neighbour's address",
		func(a, b, c peer) []byte {
			return udpFrame(c.mac, a.mac, netip.AddrPortFrom(b.ip, 5000), netip.AddrPortFrom(c.ip, 6000), []byte("forged-ipv4"))
		},
		seenBy(func(f []byte, a, b, c peer) bool { return carries(f, []byte("forged-ipv4")) })},
	{"ARP reply claiming the gateway",
		func(a, b, c peer) []byte { return arpFrame(c.mac, a.mac, 2, a.mac, gateway, c.mac, c.ip) },
		seenBy(func(f []byte, a, b, c peer) bool {
			return carries(f, append(slices.Clone(a.mac), gateway.AsSlice()...))
		})},
	{"taking over a neighbour's IPv4 address (gratuitous ARP)",
		func(a, b, c peer) []byte {
			return arpFrame(broadcast, a.mac, 1, a.mac, b.ip, make(net.HardwareAddr, 6), b.ip)
		},
		seenBy(func(f []byte, a, b, c peer) bool { return carries(f, append(slices.Clone(a.mac), b.ip.AsSlice()...)) })},
	{"taking over a neighbour's MAC",
		func(a, b, c peer) []byte {
			return udpFrame(broadcast, b.mac, netip.AddrPortFrom(a.ip, 5000), netip.AddrPortFrom(netip.MustParseAddr("172.19.255.255"), 6000), []byte("stolen-mac"))
		},
		// The bridge learns the MAC on the attacker's port.
		func(s *sandbox, t *testing.T, a, b, c peer) func(time.Duration) bool {
			return func(d time.Duration) bool {
				deadline := time.Now().Add(d)
				for time.Now().Before(deadline) {
					if s.fdbPort(t, b.mac) == a.veth {
						return true
					}
					time.Sleep(20 * time.Millisecond)
				}
				return false
			}
		}},
	{"DHCP server's reply",
		func(a, b, c peer) []byte {
			return udpFrame(broadcast, a.mac, netip.AddrPortFrom(a.ip, 67), netip.AddrPortFrom(netip.MustParseAddr("255.255.255.255"), 68), []byte("dhcp-offer"))
		},
		seenBy(func(f []byte, a, b, c peer) bool { return carries(f, []byte("dhcp-offer")) })},
	{"IPv6 from a neighbour's address",
		func(a, b, c peer) []byte {
			return udpFrame(c.mac, a.mac, netip.AddrPortFrom(b.ip6, 5000), netip.AddrPortFrom(c.ip6, 6000), []byte("forged-ipv6"))
		},
		seenBy(func(f []byte, a, b, c peer) bool { return carries(f, []byte("forged-ipv6")) })},
	{"neighbour advertisement for a neighbour's address",
		func(a, b, c peer) []byte {
			return icmp6Frame(mcast, a.mac, a.ll, allNodes, 136, neighbourAdvert(b.ip6, a.mac))
		},
		seenBy(func(f []byte, a, b, c peer) bool { return icmp6Type(f) == 136 && carries(f, b.ip6.AsSlice()) })},
	{"neighbour advertisement of its own address at another MAC",
		func(a, b, c peer) []byte {
			return icmp6Frame(mcast, a.mac, a.ll, allNodes, 136, neighbourAdvert(a.ip6, b.mac))
		},
		seenBy(func(f []byte, a, b, c peer) bool { return icmp6Type(f) == 136 && carries(f, b.mac) })},
	{"router advertisement",
		func(a, b, c peer) []byte { return icmp6Frame(mcast, a.mac, a.ll, allNodes, 134, routerAdvert(a.mac)) },
		seenBy(func(f []byte, a, b, c peer) bool { return icmp6Type(f) == 134 && from(f, a.mac) })},
}

// What a container sends honestly, which must pass beside the attacks.
var honest = []attack{
	{"IPv4 from its own address",
		func(a, b, c peer) []byte {
			return udpFrame(c.mac, a.mac, netip.AddrPortFrom(a.ip, 5000), netip.AddrPortFrom(c.ip, 6000), []byte("honest-ipv4"))
		},
		seenBy(func(f []byte, a, b, c peer) bool { return carries(f, []byte("honest-ipv4")) })},
	{"ARP reply for its own address",
		func(a, b, c peer) []byte { return arpFrame(c.mac, a.mac, 2, a.mac, a.ip, c.mac, c.ip) },
		seenBy(func(f []byte, a, b, c peer) bool { return carries(f, append(slices.Clone(a.mac), a.ip.AsSlice()...)) })},
	{"IPv6 from its own address",
		func(a, b, c peer) []byte {
			return udpFrame(c.mac, a.mac, netip.AddrPortFrom(a.ip6, 5000), netip.AddrPortFrom(c.ip6, 6000), []byte("honest-ipv6"))
		},
		seenBy(func(f []byte, a, b, c peer) bool { return carries(f, []byte("honest-ipv6")) })},
	{"neighbour advertisement for its own address",
		func(a, b, c peer) []byte {
			return icmp6Frame(mcast, a.mac, a.ll, allNodes, 136, neighbourAdvert(a.ip6, a.mac))
		},
		seenBy(func(f []byte, a, b, c peer) bool { return icmp6Type(f) == 136 && carries(f, a.ip6.AsSlice()) })},
	{"duplicate address detection (from ::)",
		func(a, b, c peer) []byte {
			solicited := netip.MustParseAddr("ff02::1:ff00:99")
			body := append([]byte{0, 0, 0, 0}, netip.MustParseAddr("fd19::99").AsSlice()...)
			return icmp6Frame(net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 0x99}, a.mac, netip.IPv6Unspecified(), solicited, 135, body)
		},
		seenBy(func(f []byte, a, b, c peer) bool {
			return icmp6Type(f) == 135 && carries(f, netip.MustParseAddr("fd19::99").AsSlice())
		})},
}

// fdbPort is the bridge port the bridge has learnt mac on.
func (s *sandbox) fdbPort(t *testing.T, mac net.HardwareAddr) string {
	t.Helper()
	neighs, err := s.nl.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if bytes.Equal(n.HardwareAddr, mac) && n.Flags&netlink.NTF_SELF == 0 {
			if l, err := s.nl.LinkByIndex(n.LinkIndex); err == nil {
				return l.Attrs().Name
			}
		}
	}
	return ""
}

// TestNoImpersonation: on both backends, each attack of a container on
// its neighbours and the gateway is dropped where it enters the bridge,
// while honest traffic passes beside it. With --spoof-check=false, every
// attack lands: the test sees them.
func TestNoImpersonation(t *testing.T) {
	forEachFirewall(t, func(t *testing.T, fw string) {
		for _, check := range []bool{true, false} {
			name := "spoof check on"
			if !check {
				name = "spoof check off"
			}
			t.Run(name, func(t *testing.T) { testImpersonation(t, fw, check) })
		}
	})
}

func testImpersonation(t *testing.T, fw string, check bool) {
	flags := []string{"--firewall", fw, "--subnet", "172.19.0.0/16", "--subnet", "fd19::/64"}
	if !check {
		flags = append(flags, "--spoof-check=false")
	}
	sb := newSandbox(t, flags...)
	var peers []peer
	for _, id := range []string{"a", "b", "c"} {
		pid := sb.container()
		sb.mustHook(setupState(id, pid))
		peers = append(peers, sb.peer(t, id, pid))
	}
	a, b, c := peers[0], peers[1], peers[2]
	// b speaks first, so that the bridge knows where its MAC is.
	send(t, b.ns, udpFrame(c.mac, b.mac, netip.AddrPortFrom(b.ip, 5000), netip.AddrPortFrom(c.ip, 6000), []byte("hello")))
	waitFor(t, "the bridge to learn b's MAC", func() bool { return sb.fdbPort(t, b.mac) == b.veth })

	for _, h := range honest {
		seen := h.landed(sb, t, a, b, c)
		send(t, a.ns, h.frame(a, b, c))
		if !seen(3 * time.Second) {
			t.Errorf("honest %s: dropped", h.name)
		}
	}
	for _, at := range attacks {
		seen := at.landed(sb, t, a, b, c)
		send(t, a.ns, at.frame(a, b, c))
		// What is dropped never arrives: the capture waits its whole
		// time for it. What lands arrives at once.
		if landed := seen(700 * time.Millisecond); landed == check {
			t.Errorf("%s: landed %v with the spoof check %v", at.name, landed, check)
		}
	}
	if !check {
		return
	}
	// The table, as nft lists it, and the container's own veth the key
	// of every entry.
	out, err := sb.cmd("nft", "list", "table", "bridge", "bridgehook-netns0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `iifname . ether saddr != @macs drop`) || !strings.Contains(string(out), `"`+a.veth+`" . `+a.mac.String()) {
		t.Errorf("nft list table bridge bridgehook-netns0: %v\n%s", err, out)
	}
	// A flush of the ruleset takes the table; the next setup brings it
	// back for every container, and the attacks are dropped again.
	if out, err := sb.cmd("nft", "flush", "ruleset").CombinedOutput(); err != nil {
		t.Fatalf("nft flush ruleset: %v %s", err, out)
	}
	sb.mustHook(setupState("d", sb.container()))
	seen := attacks[0].landed(sb, t, a, b, c)
	send(t, a.ns, attacks[0].frame(a, b, c))
	if seen(700 * time.Millisecond) {
		t.Errorf("after a flush and the next setup: %s landed", attacks[0].name)
	}
	h := honest[0].landed(sb, t, a, b, c)
	send(t, a.ns, honest[0].frame(a, b, c))
	if !h(3 * time.Second) {
		t.Errorf("after a flush and the next setup: honest %s dropped", honest[0].name)
	}
}
