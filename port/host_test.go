package port

import (
	"net"
	"net/netip"
	"testing"
)

// A port a socket of this process holds is in use, on its address and on
// the wildcard that covers it; the same port on another address, or of
// the other protocol or family, is not. Binding needs no privilege above
// 1023.
func TestInUse(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tcp := uint16(l.Addr().(*net.TCPAddr).Port)
	u, err := net.ListenPacket("udp", "[::]:0") // dual-stack, as most servers bind
	if err != nil {
		t.Skip("no IPv6 here:", err)
	}
	defer u.Close()
	udp := uint16(u.LocalAddr().(*net.UDPAddr).Port)
	v4, v6 := netip.IPv4Unspecified(), netip.IPv6Unspecified()
	for _, tc := range []struct {
		proto string
		addr  netip.Addr
		port  uint16
		want  bool
	}{
		{"tcp", netip.MustParseAddr("127.0.0.1"), tcp, true},
		{"tcp", v4, tcp, true},
		{"tcp", netip.MustParseAddr("192.0.2.1"), tcp, false}, // another address: free (FREEBIND)
		{"udp", v4, tcp, false},
		{"tcp", v6, tcp, false},
		{"udp", v6, udp, true},
		{"udp", v4, udp, true}, // [::] without V6ONLY holds IPv4 too
		{"tcp", v6, udp, false},
		{"sctp", v4, tcp, false},
	} {
		got, err := InUse(tc.proto, tc.addr, tc.port)
		if err != nil || got != tc.want {
			t.Errorf("InUse(%s, %s, %d) = %v, %v; want %v", tc.proto, tc.addr, tc.port, got, err, tc.want)
		}
	}
}

// What the check of one host port costs: make bench prints it.
func BenchmarkInUse(b *testing.B) {
	for b.Loop() {
		if _, err := InUse("tcp", netip.IPv4Unspecified(), 47123); err != nil {
			b.Fatal(err)
		}
	}
}
