package names

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// deadAndLive binds a resolver that never answers and one that does, on
// two loopback addresses and the same port.
func deadAndLive(t *testing.T) (dead, live netip.Addr, port uint16) {
	pc, err := net.ListenPacket("udp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	port = uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	lc, err := net.ListenPacket("udp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), port).String())
	if err != nil {
		t.Skipf("no second loopback address free on port %d: %v", port, err)
	}
	t.Cleanup(func() { lc.Close() })
	go func() {
		buf := make([]byte, maxMsg)
		for {
			n, from, err := lc.ReadFrom(buf)
			if err != nil {
				return
			}
			var r dnsmessage.Message
			if r.Unpack(buf[:n]) != nil {
				continue
			}
			m := reply(&r, dnsmessage.RCodeSuccess)
			m.Answers = append(m.Answers, answer(r.Questions[0], dnsmessage.TypeA, &dnsmessage.AResource{A: [4]byte{192, 0, 2, 7}}))
			out, _ := m.Pack()
			lc.WriteTo(out, from)
		}
	}()
	return netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), port
}

func TestADeadUpstreamCostsAServfailNotTheClientsTimeout(t *testing.T) {
	dead, live, port := deadAndLive(t)
	f := newForwarder(nil)
	f.per, f.budget, f.port = 100*time.Millisecond, 300*time.Millisecond, port

	start := time.Now()
	m := f.forward(query("example.com.", dnsmessage.TypeA), false, []netip.Addr{dead, dead, dead, dead})
	// Four upstreams of 100 ms each would take 400 ms: the budget cuts
	// them off. The bound leaves a loaded machine room, and is far below
	// a client's 5 s.
	if took := time.Since(start); m.RCode != dnsmessage.RCodeServerFailure || took >= 4*f.per+time.Second {
		t.Errorf("dead upstreams: %v after %v; want SERVFAIL once the %v budget is spent", m.RCode, took, f.budget)
	}
	// The next upstream is asked once the dead one's time is up.
	q := query("example.com.", dnsmessage.TypeA)
	m = f.forward(q, false, []netip.Addr{dead, live})
	if m.RCode != dnsmessage.RCodeSuccess || !slices.Equal(data(m), []string{"192.0.2.7"}) || m.ID != q.ID {
		t.Errorf("dead then live: %v", m)
	}
}

func TestForwardsAreBounded(t *testing.T) {
	f := newForwarder(nil)
	for range maxForwards {
		f.slots <- struct{}{}
	}
	// 127.0.0.2 would never answer: a SERVFAIL before its 1 s is up
	// means it was not asked.
	start := time.Now()
	if m := f.forward(query("example.com.", dnsmessage.TypeA), false, addrs("127.0.0.2")); m.RCode != dnsmessage.RCodeServerFailure || time.Since(start) >= f.per {
		t.Errorf("with every slot taken: %v after %v", m, time.Since(start))
	}
}

func TestHostResolversAreReadAgainWhenTheyChange(t *testing.T) {
	dir := t.TempDir()
	stub, up := filepath.Join(dir, "stub"), filepath.Join(dir, "up")
	os.WriteFile(stub, []byte("nameserver 127.0.0.53\nsearch lan\n"), 0o644)
	os.WriteFile(up, []byte("nameserver 127.0.0.1\nnameserver 192.0.2.53\n"), 0o644)
	h := &hostResolvers{paths: []string{filepath.Join(dir, "missing"), stub, up}}
	if got := h.get(); !slices.Equal(got, addrs("192.0.2.53")) {
		t.Errorf("got %v", got)
	}
	os.WriteFile(up, []byte("nameserver 192.0.2.54\nnameserver 192.0.2.55\n"), 0o644)
	if got := h.get(); !slices.Equal(got, addrs("192.0.2.54", "192.0.2.55")) {
		t.Errorf("after a change: %v", got)
	}
}
