package nat

import (
	"bufio"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/gofrs/flock"
	"github.com/google/nftables"
)

// IPTables is the Firewall of the host's iptables: a chain of our own per
// network and table, jumped to from the built-in chains; ip6tables holds
// the same for a network's IPv6 subnet.
type IPTables struct {
	r, r6 runner
	// lock serialises changes to the built-in chains, which all networks
	// share, across processes: the jump check and the restore are two
	// commands.
	lock string
	// sysctl turns a /proc/sys switch on.
	sysctl func(path string) error
	// nft asks whether an empty chain of ours exists, where iptables
	// runs on nf_tables (Verify counts the others' rules: ruleCount).
	nft      conn
	isLegacy *bool
}

// NewIPTables returns the iptables Firewall; lockFile is the flock that
// serialises installs and removals across processes.
func NewIPTables(lockFile string) *IPTables {
	return &IPTables{r: &execRunner{cmd: "iptables"}, r6: &execRunner{cmd: "ip6tables"}, lock: lockFile, sysctl: sysctlOn}
}

// runner is the iptables of family fam: iptables or ip6tables.
func (f *IPTables) runner(fam Family) runner {
	if fam == IPv6 {
		return f.r6
	}
	return f.r
}

// nftFamily is the table family iptables-nft keeps fam's tables in.
func nftFamily(fam Family) nftables.TableFamily {
	if fam == IPv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

var _ Firewall = (*IPTables)(nil)

// runner runs iptables. The go-iptables runner is the real one; tests use
// a fake that records what it was given.
type runner interface {
	// Save returns the output of iptables-save for every table.
	Save() (string, error)
	// Restore feeds input to iptables-restore --noflush, atomically.
	Restore(input string) error
	Exists(table, chain string, spec ...string) (bool, error)
	DeleteIfExists(table, chain string, spec ...string) error
	ChainExists(table, chain string) (bool, error)
	ClearAndDeleteChain(table, chain string) error
}

// Chain names are short enough for any bridge name: iptables allows 28.
const (
	fwdPrefix  = "BH-FWD-"
	masqPrefix = "BH-NAT-"
	dnatPrefix = "BH-DNAT-"
)

func (n Network) fwdChain() string  { return fwdPrefix + n.Bridge }
func (n Network) masqChain() string { return masqPrefix + n.Bridge }
func (n Network) dnatChain() string { return dnatPrefix + n.Bridge }

// iptRule is a Rule as iptables takes it: table, chain, match and target.
type iptRule struct {
	Table, Chain string
	Spec         []string
}

// iptComment is the comment match naming rule what of network n.
func (n Network) iptComment(what string) []string {
	return []string{"-m", "comment", "--comment", n.comment(what)}
}

// iptables renders r, a rule of network n.
func (n Network) iptables(r Rule) iptRule {
	var spec []string
	add := func(s ...string) { spec = append(spec, s...) }
	if r.Src.IsValid() {
		add("-s", r.Src.String())
	}
	if r.Dst.IsValid() {
		add("-d", r.Dst.String())
	}
	if r.In != "" {
		add("-i", r.In)
	}
	if r.Out != "" {
		add("-o", r.Out)
	}
	if r.NotOut != "" {
		add("!", "-o", r.NotOut)
	}
	if r.Proto != "" {
		add("-p", r.Proto, "-m", r.Proto)
	}
	if r.DPort != 0 {
		add("--dport", colonRange(r.DPort, r.DPortEnd))
	}
	if r.Replies {
		add("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")
	}
	if r.DNATed {
		add("-m", "conntrack", "--ctstate", "DNAT")
	}
	add(n.iptComment(r.What)...)
	out := iptRule{Spec: spec}
	switch r.Chain {
	case Forward:
		out.Table, out.Chain = "filter", n.fwdChain()
	case Masquerade:
		out.Table, out.Chain = "nat", n.masqChain()
	case Ports:
		out.Table, out.Chain = "nat", n.dnatChain()
	}
	switch r.Verdict {
	case Accept:
		add("-j", "ACCEPT")
	case Drop:
		add("-j", "DROP")
	case Return:
		add("-j", "RETURN")
	case Masq:
		add("-j", "MASQUERADE")
	case DNAT:
		to := r.To.Addr().String()
		if r.To.Port() != 0 {
			to = r.To.String()
		}
		add("-j", "DNAT", "--to-destination", to)
	}
	out.Spec = spec
	return out
}

// iptablesOf renders the rules of family fam, for iptables or ip6tables.
func (n Network) iptablesOf(fam Family, rules []Rule) []iptRule {
	var out []iptRule
	for _, r := range rules {
		if r.in(fam) {
			out = append(out, n.iptables(r))
		}
	}
	return out
}

// jump is a rule in a built-in chain that sends traffic to one of ours.
type jump struct {
	Table, From, To string
}

func (n Network) jumps() []jump {
	return []jump{
		{"filter", "FORWARD", n.fwdChain()},
		{"nat", "POSTROUTING", n.masqChain()},
		// Published ports: traffic for the host's own addresses, from
		// outside (PREROUTING) and from the host itself (OUTPUT).
		{"nat", "PREROUTING", n.dnatChain()},
		{"nat", "OUTPUT", n.dnatChain()},
	}
}

func (j jump) spec(n Network) []string {
	if j.To == n.dnatChain() {
		return append([]string{"-m", "addrtype", "--dst-type", "LOCAL"}, append(n.iptComment("jump"), "-j", j.To)...)
	}
	return append(n.iptComment("jump"), "-j", j.To)
}

func (f *IPTables) locked(fn func() error) error {
	if f.lock == "" {
		return fn()
	}
	lock := flock.New(f.lock)
	if err := lock.Lock(); err != nil {
		return fmt.Errorf("lock firewall: %w", err)
	}
	defer lock.Unlock()
	return fn()
}

// Install makes network n's chains hold exactly n.Rules() and the port
// rules of pubs, and makes sure the built-in chains jump to them once.
func (f *IPTables) Install(n Network, pubs []Published) error {
	if err := n.enable(f.sysctl); err != nil {
		return err
	}
	return f.locked(func() error { return f.install(n, pubs) })
}

func (f *IPTables) install(n Network, pubs []Published) error {
	rules, err := n.withPorts(pubs)
	if err != nil {
		return err
	}
	for _, fam := range n.Families() {
		r := f.runner(fam)
		saved, err := r.Save()
		if err != nil {
			return fmt.Errorf("read firewall: %w", err)
		}
		if err := r.Restore(restoreInput(n, n.iptablesOf(fam, rules), jumpsIn(saved))); err != nil {
			return fmt.Errorf("install rules for %s: %w", n.Bridge, err)
		}
	}
	return nil
}

// Publish adds the port rules of p in one iptables-restore: one process
// whatever the number of ports, and all or none of them.
func (f *IPTables) Publish(n Network, p Published) error {
	rules, err := n.PortRules(p)
	if err != nil {
		return err
	}
	var undo []iptRule
	for _, fam := range n.Families() {
		ipt := n.iptablesOf(fam, rules)
		if len(ipt) == 0 {
			continue
		}
		if err := f.runner(fam).Restore(render("-A", ipt)); err != nil {
			if len(undo) > 0 {
				f.r.Restore(render("-D", undo)) // all or none: the IPv4 ones went first
			}
			return fmt.Errorf("publish ports of %s: %w", p.ID, err)
		}
		undo = ipt
	}
	return nil
}

// Unpublish removes the port rules of p, and the UDP conntrack entries
// that would keep sending its ports' traffic to a container that is gone.
func (f *IPTables) Unpublish(n Network, p Published) error {
	rules, err := n.PortRules(p)
	if err != nil {
		return err
	}
	for _, fam := range n.Families() {
		r, ipt := f.runner(fam), n.iptablesOf(fam, rules)
		if len(ipt) == 0 {
			continue
		}
		if err := r.Restore(render("-D", ipt)); err != nil {
			// Some rule was already gone (a firewall reload, say): remove
			// the rest one by one.
			for _, rule := range ipt {
				if err := r.DeleteIfExists(rule.Table, rule.Chain, rule.Spec...); err != nil {
					return fmt.Errorf("unpublish ports of %s: %w", p.ID, err)
				}
			}
		}
	}
	return flushUDP(p)
}

// Published returns the published ports that network n's rules hold, an
// entry per container address, its ID the Label the rules carry: how gc
// finds the ports of a lease the store lost, and the rules no lease
// accounts for.
func (f *IPTables) Published(n Network) ([]Published, error) {
	var pubs []Published
	for _, fam := range n.Families() {
		saved, err := f.runner(fam).Save()
		if err != nil {
			return nil, fmt.Errorf("read firewall: %w", err)
		}
		pubs = append(pubs, publishedIn(n, saved)...)
	}
	return pubs, nil
}

// publishedIn reads the port rules of n out of iptables-save output.
func publishedIn(n Network, saved string) []Published {
	var pubs []Published
	for _, line := range strings.Split(saved, "\n") {
		if !strings.HasPrefix(line, "-A "+n.dnatChain()+" ") {
			continue
		}
		f := unquote(line)
		var comment, to string
		for i := 0; i+1 < len(f); i++ {
			switch f[i] {
			case "--comment":
				comment = f[i+1]
			case "--to-destination":
				to = f[i+1]
			}
		}
		ip, err := netip.ParseAddr(to)
		if ap, aerr := netip.ParseAddrPort(to); aerr == nil {
			ip, err = ap.Addr(), nil
		}
		if pub, ok := n.portComment(comment, ip); ok && err == nil {
			pubs = addPublished(pubs, pub)
		}
	}
	return pubs
}

// unquote splits an iptables-save line into words, as quote wrote them.
func unquote(line string) []string {
	var words []string
	var w strings.Builder
	quoted, inWord := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && quoted && i+1 < len(line) && line[i+1] == '"':
			w.WriteByte('"')
			i++
		case c == '"':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

func colonRange(a, b uint16) string {
	if a == b {
		return fmt.Sprint(a)
	}
	return fmt.Sprintf("%d:%d", a, b)
}

// render writes rules as iptables-restore --noflush input, each with op.
func render(op string, rules []iptRule) string {
	var b strings.Builder
	for _, table := range []string{"filter", "nat"} {
		started := false
		for _, r := range rules {
			if r.Table != table {
				continue
			}
			if !started {
				fmt.Fprintf(&b, "*%s\n", table)
				started = true
			}
			fmt.Fprintf(&b, "%s %s %s\n", op, r.Chain, quote(r.Spec))
		}
		if started {
			b.WriteString("COMMIT\n")
		}
	}
	return b.String()
}

// restoreInput renders n's chains for iptables-restore --noflush. Declaring
// a chain that exists flushes it, so the chain ends up holding exactly these
// rules however often this runs. Jumps are added only where have lacks them.
func restoreInput(n Network, rules []iptRule, have map[jump]bool) string {
	var b strings.Builder
	for _, table := range []string{"filter", "nat"} {
		fmt.Fprintf(&b, "*%s\n", table)
		declared := map[string]bool{}
		for _, j := range n.jumps() {
			if j.Table == table && !declared[j.To] {
				fmt.Fprintf(&b, ":%s - [0:0]\n", j.To)
				declared[j.To] = true
			}
		}
		for _, r := range rules {
			if r.Table == table {
				fmt.Fprintf(&b, "-A %s %s\n", r.Chain, quote(r.Spec))
			}
		}
		for _, j := range n.jumps() {
			if j.Table == table && !have[j] {
				// First, so that rules of other tools further down (a DROP,
				// say) do not decide first.
				fmt.Fprintf(&b, "-I %s 1 %s\n", j.From, quote(j.spec(n)))
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// jumpsIn finds the jumps to our chains in iptables-save output.
func jumpsIn(saved string) map[jump]bool {
	have := map[jump]bool{}
	table := ""
	sc := bufio.NewScanner(strings.NewReader(saved))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "*") {
			table = line[1:]
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "-A" || f[len(f)-2] != "-j" {
			continue
		}
		to := f[len(f)-1]
		if strings.HasPrefix(to, fwdPrefix) || strings.HasPrefix(to, masqPrefix) || strings.HasPrefix(to, dnatPrefix) {
			have[jump{table, f[1], to}] = true
		}
	}
	return have
}

// quote renders a rule spec for iptables-restore, which splits on spaces
// but honours double quotes.
func quote(spec []string) string {
	out := make([]string, len(spec))
	for i, s := range spec {
		if strings.ContainsAny(s, " \t\"") {
			s = `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
		}
		out[i] = s
	}
	return strings.Join(out, " ")
}

// Verify reports whether n's chains hold n's rules. Where iptables runs
// on nf_tables, that is a count of each of our chains' rules, one netlink
// read each (ruleCount): the flush of a reload (iptables -F, -X, an
// iptables-restore, nft flush ruleset) empties or deletes them, and takes
// the jumps with it. Legacy iptables has no such read: there it is one
// iptables-save, a process.
func (f *IPTables) Verify(n Network) (bool, error) {
	if err := n.forwarding(f.sysctl); err != nil {
		return false, err
	}
	for _, fam := range n.Families() {
		if !f.verify(n, fam) {
			return false, nil
		}
	}
	return true, nil
}

// verify checks n's chains of family fam.
func (f *IPTables) verify(n Network, fam Family) bool {
	want := map[string]int{n.fwdChain(): 0, n.masqChain(): 0}
	for _, r := range n.iptablesOf(fam, n.Rules()) {
		want[r.Chain]++
	}
	if f.legacy() {
		saved, err := f.runner(fam).Save()
		return err == nil && verifySaved(n, saved, want)
	}
	// A reload flushes a table (iptables -F) or deletes our chains (-X,
	// iptables-restore, nft flush ruleset): the rules of our chains tell
	// both. An internal network's NAT chain is empty, and the dump of an
	// empty chain is that of a missing one, so it is asked for instead.
	for _, ch := range []struct{ table, chain string }{{"filter", n.fwdChain()}, {"nat", n.masqChain()}} {
		t := &nftables.Table{Name: ch.table, Family: nftFamily(fam)}
		if want[ch.chain] == 0 {
			if ok, err := f.nft.exists(t, ch.chain); err != nil || !ok {
				return false
			}
			continue
		}
		have, err := ruleCount(fam, ch.table, ch.chain)
		if err != nil || have != want[ch.chain] {
			return false
		}
	}
	return true
}

// verifySaved checks iptables-save output for n's jumps and the number of
// rules in its chains.
func verifySaved(n Network, saved string, want map[string]int) bool {
	have := jumpsIn(saved)
	for _, j := range n.jumps() {
		if !have[j] {
			return false
		}
	}
	got := map[string]int{}
	for _, line := range strings.Split(saved, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "-A" {
			got[f[1]]++
		}
	}
	for chain, w := range want {
		if got[chain] != w {
			return false
		}
	}
	return true
}

// legacy reports whether iptables is the legacy one, which nftables'
// netlink does not see: /usr/sbin/iptables resolves to iptables-legacy or
// xtables-legacy-multi there.
func (f *IPTables) legacy() bool {
	if f.isLegacy == nil {
		path, err := exec.LookPath("iptables")
		if err == nil {
			path, err = filepath.EvalSymlinks(path)
		}
		legacy := err == nil && strings.Contains(filepath.Base(path), "legacy")
		f.isLegacy = &legacy
	}
	return *f.isLegacy
}

func (f *IPTables) Generational() bool { return !f.legacy() }

func (f *IPTables) Forward(n Network) error { return n.forwarding(f.sysctl) }

// Close lets go of the netlink connection Verify uses.
func (f *IPTables) Close() { f.nft.close() }

// Uninstall removes n's jumps and chains. What is already gone is skipped.
func (f *IPTables) Uninstall(n Network) error {
	return f.locked(func() error {
		for _, fam := range n.Families() {
			if err := f.uninstall(n, f.runner(fam)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (f *IPTables) uninstall(n Network, r runner) error {
	gone := map[string]bool{}
	for _, j := range n.jumps() {
		ok, err := r.ChainExists(j.Table, j.To)
		if err != nil {
			return fmt.Errorf("remove rules of %s: %w", n.Bridge, err)
		}
		if ok {
			if err := r.DeleteIfExists(j.Table, j.From, j.spec(n)...); err != nil {
				return fmt.Errorf("remove jump to %s: %w", j.To, err)
			}
		}
	}
	for _, j := range n.jumps() {
		if gone[j.To] {
			continue
		}
		gone[j.To] = true
		if ok, _ := r.ChainExists(j.Table, j.To); ok {
			if err := r.ClearAndDeleteChain(j.Table, j.To); err != nil {
				return fmt.Errorf("remove chain %s: %w", j.To, err)
			}
		}
	}
	return nil
}
