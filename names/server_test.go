package names

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/bridgehook/bridgehook/ipam"
)

// TestServerFollowsTheStore runs a server over a store on disk, with a
// loopback address as the network's gateway: leases come and go while
// clients ask (under -race, the handlers against the watcher), every
// finished lease answers at once, and the server ends with the last one.
func TestServerFollowsTheStore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("binds port 53: run as root")
	}
	stateDir := t.TempDir()
	subnet := netip.MustParsePrefix("127.88.0.0/16")
	store, err := ipam.Open(stateDir, "lo88", subnet)
	if err != nil {
		t.Fatal(err)
	}
	nw := Network{Gateways: []netip.Prefix{netip.MustParsePrefix("127.88.0.1/16")}, Internal: true}
	err = store.Do(func(tx ipam.Tx) error {
		if err := tx.SetRecord(struct {
			Names *Network `json:"names"`
		}{&nw}); err != nil {
			return err
		}
		_, err := tx.Allocate(ipam.Lease{ID: "first"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	store.Close()

	ended := make(chan error, 1)
	go func() { ended <- Serve(context.Background(), stateDir, slog.New(slog.DiscardHandler)) }()
	dir := ipam.StoreDir(stateDir, "lo88", subnet)
	deadline := time.Now().Add(5 * time.Second)
	for {
		pid, alive := running(stateDir)
		if alive && servedBy(stateDir, dir) == pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not take up the network")
		}
		time.Sleep(time.Millisecond)
	}

	ask := func(name string) (*dnsmessage.Message, error) {
		q := query(name, dnsmessage.TypeA)
		b, _ := q.Pack()
		// From an address of the network, as a container asks.
		d := &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 88, 0, 9)}}
		c, err := d.Dial("udp", "127.88.0.1:53")
		if err != nil {
			return nil, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(b); err != nil {
			return nil, err
		}
		buf := make([]byte, maxMsg)
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		return replyTo(q, buf[:n])
	}
	// Clients ask all along for a name that is there throughout.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if m, err := ask("first."); err != nil || len(m.Answers) != 1 {
					t.Errorf("first: %v %v", m, err)
					return
				}
			}
		})
	}
	for i := range 50 {
		id := fmt.Sprint("c", i)
		var l ipam.Lease
		store.Do(func(tx ipam.Tx) error { l, err = tx.Allocate(ipam.Lease{ID: id}); return err })
		store.Close()
		if err != nil {
			t.Fatal(err)
		}
		// Its allocation has returned: the name answers now.
		if m, err := ask(id + "."); err != nil || !slices.Equal(data(m), []string{l.IP.String()}) {
			t.Fatalf("%s right after its lease: %v %v", id, m, err)
		}
		if i%2 == 0 {
			store.Do(func(tx ipam.Tx) error { _, _, err := tx.Release(id); return err })
			if m, err := ask(id + "."); err != nil || m.RCode != dnsmessage.RCodeNameError {
				t.Fatalf("%s right after its release: %v %v", id, m, err)
			}
		}
	}
	close(stop)
	wg.Wait()

	store.Do(func(tx ipam.Tx) error {
		ls, _, err := tx.List()
		for _, l := range ls {
			tx.Release(l.ID)
		}
		return err
	})
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not end with the last lease")
	}
	if _, alive := running(stateDir); alive {
		t.Error("the server's lock is still held")
	}
}
