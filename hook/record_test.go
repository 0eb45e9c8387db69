package hook

import (
	"testing"

	"github.com/bridgehook/bridgehook/ipam"
)

// A record written before dual-stack (one "subnet", a "gateway") is still
// trusted: an IPv4 network set up by an older bridgehook stays warm.
func TestRecordOfAnOlderVersionIsTrusted(t *testing.T) {
	w := newWorld(t, "172.19.0.0/16")
	w.mustSetup("a", w.container(10), "")
	br := w.host.Bridges["netns0"]
	old := map[string]any{"bridge": "netns0", "subnet": "172.19.0.0/16", "gateway": "172.19.0.1",
		"mtu": br.MTU, "bridge_index": br.Index, "icc": true, "internal": false}
	if err := w.store.Do(func(tx ipam.Tx) error { return tx.SetRecord(old) }); err != nil {
		t.Fatal(err)
	}
	w.mustSetup("b", w.container(11), "")
	if w.host.Ensured != 1 {
		t.Errorf("the older record was not trusted: %d Ensure calls", w.host.Ensured)
	}
}
