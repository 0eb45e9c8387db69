package hook

import (
	"slices"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/ipam"
)

// checks are the checks of the rules and of the spoof check made so far.
func (w *fakes) checks() (rules, guard int) { return len(w.fw.Verifies), w.guard.Verifies }

// On nftables, a warm setup that finds the generation it recorded makes no
// other read; a commit to any other table, or a command's commits beside
// its own, bring the full check back for one setup.
func TestWarmSetupsTrustTheRecordedGeneration(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.n.Firewall = "nftables"
	w.mustSetup("a", w.container(10), "")
	w.mustSetup("b", w.container(11), "")

	expect := func(what string, full bool) {
		t.Helper()
		rules, guard := w.checks()
		reads := w.gen.Reads
		w.mustSetup(what, w.container(20+len(w.served)+int(w.gen.N)), "")
		r, g := w.checks()
		switch {
		case full && (r == rules || g == guard):
			t.Errorf("%s: no full check (rules %d, spoof check %d)", what, r-rules, g-guard)
		case !full && (r != rules || g != guard):
			t.Errorf("%s: checked at the recorded generation (rules %d, spoof check %d)", what, r-rules, g-guard)
		case !full && w.gen.Reads-reads != 2:
			t.Errorf("%s: %d reads of the generation, want 2 (the check, and after its own commit)", what, w.gen.Reads-reads)
		}
	}
	expect("c", false)
	w.gen.N++ // another table's commit (iptables-nft, firewalld, nft -f)
	expect("d", true)
	expect("e", false)
	if _, err := w.n.Teardown("e"); err != nil {
		t.Fatal(err)
	}
	expect("f", false) // a teardown keeps the record fresh too
	// A setup with ports on nftables commits twice; still fresh after.
	w.mustSetup("p", w.container(90), "8080:80")
	expect("g", false)
	// A reload of the firewall takes the rules: they come back.
	w.fw.Reload("netns0")
	res, err := w.setup("h", w.container(91), "")
	if err != nil || !res.RulesRestored {
		t.Errorf("after a reload: %+v %v", res, err)
	}
}

// On legacy iptables, which no generation covers, the rules are checked
// each time; only the spoof check, in nftables, is trusted.
func TestLegacyIPTablesRulesAreAlwaysChecked(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.fw.Legacy = true
	w.mustSetup("a", w.container(10), "")
	w.mustSetup("b", w.container(11), "")
	rules, guard := w.checks()
	w.mustSetup("c", w.container(12), "")
	if r, g := w.checks(); r != rules+1 || g != guard {
		t.Errorf("legacy iptables warm setup: %d checks of the rules, %d of the spoof check; want 1 and 0", r-rules, g-guard)
	}
	if !slices.Contains(w.fw.Verifies, "netns0") {
		t.Error("no check of the rules")
	}
}

// iptables on nf_tables is covered by the generation: a warm setup
// trusts it, and still sees to IP forwarding.
func TestIPTablesOnNFTablesIsTrustedByGeneration(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("a", w.container(10), "")
	w.mustSetup("b", w.container(11), "")
	rules, guard := w.checks()
	forwards := w.fw.Forwards
	w.mustSetup("c", w.container(12), "")
	if r, g := w.checks(); r != rules || g != guard || w.fw.Forwards != forwards+1 {
		t.Errorf("warm setup: %d checks of the rules, %d of the spoof check, %d of forwarding; want 0, 0, 1",
			r-rules, g-guard, w.fw.Forwards-forwards)
	}
}

// A teardown that commits nothing countable (no spoof check, no ports)
// has no generation to keep, and reads none.
func TestATeardownWithNothingToKeepReadsNoGeneration(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.n.SpoofCheck = false
	w.mustSetup("a", w.container(10), "")
	reads := w.gen.Reads
	if _, err := w.n.Teardown("a"); err != nil {
		t.Fatal(err)
	}
	if w.gen.Reads != reads {
		t.Errorf("%d reads of the generation", w.gen.Reads-reads)
	}
}

// A warm setup trusts the bridge on the stamp the last check left,
// without the record; a stamp written for other options, or for another
// bridge, vouches for nothing, and the record decides as before.
func TestAWarmSetupTrustsTheStampWithoutTheRecord(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.n.Firewall = "nftables"
	w.mustSetup("a", w.container(10), "")
	w.mustSetup("b", w.container(11), "")
	reads := w.store.RecordReads
	rules, guard := w.checks()
	w.mustSetup("c", w.container(12), "")
	if r, g := w.checks(); w.store.RecordReads != reads || r != rules || g != guard {
		t.Errorf("warm setup: %d reads of the record, %d checks of the rules, %d of the spoof check; want none",
			w.store.RecordReads-reads, r-rules, g-guard)
	}

	// Told no backend, it takes the stamp's, as it would the record's.
	w.n.Firewall = ""
	w.mustSetup("d", w.container(13), "")
	if w.n.Firewall != "nftables" || w.store.RecordReads != reads {
		t.Errorf("without --firewall: backend %q, %d reads of the record", w.n.Firewall, w.store.RecordReads-reads)
	}

	// Told another backend: the record decides, and says what is wrong.
	w.n.Firewall = "iptables"
	if _, err := w.setup("e", w.container(14), ""); err == nil {
		t.Error("a setup with another --firewall than the network's succeeded")
	}
	w.n.Firewall = "nftables"

	// A stamp of another bridge (the bridge was made again) vouches
	// for nothing: the record is read, and the full check runs.
	if err := w.store.Do(func(tx ipam.Tx) error {
		st := readStamp(tx)
		st.key = strings.Replace(st.key, "bridge=", "bridge=9", 1)
		return tx.SetStamp(st.String())
	}); err != nil {
		t.Fatal(err)
	}
	reads = w.store.RecordReads
	w.mustSetup("f", w.container(15), "")
	if w.store.RecordReads == reads {
		t.Error("a stamp of another bridge was trusted")
	}
	// That setup claimed the stamp again: the next one needs no record.
	reads = w.store.RecordReads
	w.mustSetup("g", w.container(16), "")
	if w.store.RecordReads != reads {
		t.Errorf("after the record vouched again: %d reads of the record", w.store.RecordReads-reads)
	}
}

func TestAStampThatDoesNotReadVouchesForNothing(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	for _, junk := range []string{"", "12", "12 nftables", "x nftables k", "-1 nftables k"} {
		w.store.Do(func(tx ipam.Tx) error { return tx.SetStamp(junk) })
		var st stamp
		w.store.Do(func(tx ipam.Tx) error { st = readStamp(tx); return nil })
		if st != (stamp{}) {
			t.Errorf("stamp %q read as %+v", junk, st)
		}
	}
}
