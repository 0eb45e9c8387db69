// Package nat keeps a network's firewall rules: MASQUERADE for traffic that
// leaves the bridge, FORWARD accepts, published ports, and ip_forward.
//
// Firewall is what callers see: the rules of a network as one thing to
// install, verify and remove, and a container's ports to publish and
// withdraw. IPTables is its implementation through iptables.
//
// Every rule lives in chains of our own, one set per network, jumped to
// from the built-in chains, and carries a comment naming its network. So
// installing is one atomic iptables-restore of our chains, and checking,
// listing and removing never touch a rule that is not ours.
package nat

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/gofrs/flock"
)

// Network is what the rules of one network depend on.
type Network struct {
	Bridge string
	Subnet netip.Prefix
	// Isolated containers cannot reach each other (--icc=false).
	Isolated bool
	// Internal networks have no way out: no MASQUERADE, no forwarding
	// out of the bridge.
	Internal bool
}

// Chain names are short enough for any bridge name: iptables allows 28.
const (
	fwdPrefix  = "BH-FWD-"
	masqPrefix = "BH-NAT-"
	dnatPrefix = "BH-DNAT-"
)

// Rule is one iptables rule: table, chain, and the match and target.
type Rule struct {
	Table, Chain string
	Spec         []string
}

// jump is a rule in a built-in chain that sends traffic to one of ours.
type jump struct {
	Table, From, To string
}

func (n Network) fwdChain() string  { return fwdPrefix + n.Bridge }
func (n Network) masqChain() string { return masqPrefix + n.Bridge }
func (n Network) dnatChain() string { return dnatPrefix + n.Bridge }

func (n Network) comment(what string) []string {
	return []string{"-m", "comment", "--comment", "bridgehook " + n.Bridge + ": " + what}
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
		return append([]string{"-m", "addrtype", "--dst-type", "LOCAL"}, append(n.comment("jump"), "-j", j.To)...)
	}
	return append(n.comment("jump"), "-j", j.To)
}

// Rules returns the rules of network n's own chains, in order, without
// the published ports of its containers.
func (n Network) Rules() []Rule {
	br, subnet := n.Bridge, n.Subnet.String()
	fwd := func(what, verdict string, spec ...string) Rule {
		return Rule{"filter", n.fwdChain(), append(spec, append(n.comment(what), "-j", verdict)...)}
	}
	masq := func(what string, spec ...string) Rule {
		return Rule{"nat", n.masqChain(), append(spec, append(n.comment(what), "-j", "MASQUERADE")...)}
	}
	var rules []Rule
	// br_netfilter sends bridged frames through FORWARD, so a DROP policy
	// there would cut containers off from each other without this one.
	if n.Isolated {
		rules = append(rules, fwd("containers isolated", "DROP", "-i", br, "-o", br))
	} else {
		rules = append(rules, fwd("between containers", "ACCEPT", "-i", br, "-o", br))
	}
	if n.Internal {
		rules = append(rules, fwd("internal, nothing leaves", "DROP", "-i", br, "!", "-o", br))
		return rules
	}
	rules = append(rules,
		fwd("out of the bridge", "ACCEPT", "-i", br, "!", "-o", br),
		// Into the bridge only what answers the containers' own traffic,
		// and what a published port sent there.
		fwd("replies into the bridge", "ACCEPT", "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"),
		fwd("published ports", "ACCEPT", "-o", br, "-m", "conntrack", "--ctstate", "DNAT"),
		// Not for traffic that stays on the bridge: containers see each
		// other's real addresses.
		masq("masquerade", "-s", subnet, "!", "-o", br),
		// A container reaching a published port through a host address
		// and landing on the bridge again (hairpin): the reply must come
		// back through the host, so it must be addressed to the host.
		masq("hairpin", "-s", subnet, "-d", subnet, "-o", br, "-m", "conntrack", "--ctstate", "DNAT"),
		// The host reaching a published port through 127.0.0.1: the
		// container cannot answer a loopback source.
		masq("localhost", "-s", "127.0.0.0/8", "-o", br, "-m", "conntrack", "--ctstate", "DNAT"),
	)
	return rules
}

// Published is one container's published ports.
type Published struct {
	ID    string
	IP    netip.Addr
	Ports []Port
}

// maxPorts bounds the rules one container's ranges expand to.
const maxPorts = 1024

// PortRules returns the DNAT rules of one container's published ports. A
// range maps port by port, since DNAT to a port range would pick any port
// of it; a range mapped to the same ports needs one rule.
func (n Network) PortRules(p Published) ([]Rule, error) {
	var rules []Rule
	who := Label(p.ID)
	for _, port := range p.Ports {
		spec := []string{}
		if port.HostIP.IsValid() {
			spec = append(spec, "-d", port.HostIP.String()+"/32")
		}
		spec = append(spec, "-p", port.Proto, "-m", port.Proto)
		what := n.comment(who + " " + port.String())
		if port.HostPort == port.Container {
			r := append(spec, "--dport", colonRange(port.HostPort, port.HostEnd))
			r = append(r, what...)
			rules = append(rules, Rule{"nat", n.dnatChain(), append(r, "-j", "DNAT", "--to-destination", p.IP.String())})
			continue
		}
		if int(port.HostEnd-port.HostPort) >= maxPorts {
			return nil, fmt.Errorf("port %s: over %d ports to remap; publish a range on the same ports instead", port, maxPorts)
		}
		for off := 0; off <= int(port.HostEnd-port.HostPort); off++ {
			r := append(append([]string{}, spec...), "--dport", fmt.Sprint(int(port.HostPort)+off))
			r = append(r, what...)
			to := fmt.Sprintf("%s:%d", p.IP, int(port.Container)+off)
			rules = append(rules, Rule{"nat", n.dnatChain(), append(r, "-j", "DNAT", "--to-destination", to)})
		}
	}
	if len(rules) > maxPorts {
		return nil, fmt.Errorf("%d port rules for one container; at most %d", len(rules), maxPorts)
	}
	return rules, nil
}

// Label is how a port rule's comment names container id: ids may be 1024
// bytes, comments 256.
func Label(id string) string {
	if len(id) > 64 {
		return id[:64] + "..."
	}
	return id
}

// Published returns the published ports that network n's rules hold, an
// entry per container address, its ID the Label the rules carry: how gc
// finds the ports of a lease the store lost, and the rules no lease
// accounts for.
func (f *IPTables) Published(n Network) ([]Published, error) {
	saved, err := f.r.Save()
	if err != nil {
		return nil, fmt.Errorf("read firewall: %w", err)
	}
	return publishedIn(n, saved), nil
}

// publishedIn reads the port rules of n out of iptables-save output.
func publishedIn(n Network, saved string) []Published {
	prefix := "bridgehook " + n.Bridge + ": "
	var pubs []Published
	index := map[netip.Addr]int{}
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
		who, port, ok := strings.Cut(strings.TrimPrefix(comment, prefix), " ")
		ports, err := ParsePorts(port)
		if !ok || err != nil {
			continue
		}
		ip, err := netip.ParseAddr(to)
		if ap, aerr := netip.ParseAddrPort(to); aerr == nil {
			ip, err = ap.Addr(), nil
		}
		if err != nil {
			continue
		}
		i, seen := index[ip]
		if !seen {
			i = len(pubs)
			index[ip] = i
			pubs = append(pubs, Published{ID: who, IP: ip})
		}
		// A remapped range has a rule per port, each naming the range.
		if !slices.Contains(pubs[i].Ports, ports[0]) {
			pubs[i].Ports = append(pubs[i].Ports, ports[0])
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

// Firewall holds the rules of networks.
type Firewall interface {
	// Install makes n's rules exactly n's policy plus the ports of pubs,
	// and turns on what they need of the kernel (IP forwarding, and
	// route_localnet on the bridge for ports reached through 127.0.0.1).
	// Running it again changes nothing.
	Install(n Network, pubs []Published) error
	// Uninstall removes n's rules; what is gone already is skipped.
	Uninstall(n Network) error
	// Verify reports whether n's rules (without ports) are all in place.
	Verify(n Network) (bool, error)
	// Forward turns IP forwarding on if something turned it off: the one
	// check a setup makes of a network it trusts.
	Forward() error
	// Publish adds p's port rules to an installed network, all or none.
	Publish(n Network, p Published) error
	// Unpublish removes p's port rules, and the UDP conntrack entries that
	// would keep sending its ports' traffic to a container that is gone.
	Unpublish(n Network, p Published) error
	// Published reads back the ports n's rules publish, an entry per
	// container address, its ID the Label the rules carry.
	Published(n Network) ([]Published, error)
}

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

// IPTables is the Firewall of the host's iptables.
type IPTables struct {
	r runner
	// lock serialises changes to the built-in chains, which all networks
	// share, across processes: the jump check and the restore are two
	// commands.
	lock string
	// sysctl turns a /proc/sys switch on.
	sysctl func(path string) error
}

// NewIPTables returns the iptables Firewall; lockFile is the flock that
// serialises installs and removals across processes.
func NewIPTables(lockFile string) *IPTables {
	return &IPTables{r: &execRunner{}, lock: lockFile, sysctl: sysctlOn}
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
	if err := f.Forward(); err != nil {
		return err
	}
	// The host reaches published ports through 127.0.0.1 only so: the
	// kernel drops loopback-sourced packets routed out of an interface
	// unless route_localnet is on for it.
	if !n.Internal {
		if err := f.sysctl("/proc/sys/net/ipv4/conf/" + n.Bridge + "/route_localnet"); err != nil {
			return err
		}
	}
	return f.locked(func() error { return f.install(n, pubs) })
}

func (f *IPTables) install(n Network, pubs []Published) error {
	saved, err := f.r.Save()
	if err != nil {
		return fmt.Errorf("read firewall: %w", err)
	}
	rules := n.Rules()
	for _, p := range pubs {
		pr, err := n.PortRules(p)
		if err != nil {
			return err
		}
		rules = append(rules, pr...)
	}
	if err := f.r.Restore(restoreInput(n, rules, jumpsIn(saved))); err != nil {
		return fmt.Errorf("install rules for %s: %w", n.Bridge, err)
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
	if err := f.r.Restore(render("-A", rules)); err != nil {
		return fmt.Errorf("publish ports of %s: %w", p.ID, err)
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
	if err := f.r.Restore(render("-D", rules)); err != nil {
		// Some rule was already gone (a firewall reload, say): remove the
		// rest one by one.
		for _, r := range rules {
			if err := f.r.DeleteIfExists(r.Table, r.Chain, r.Spec...); err != nil {
				return fmt.Errorf("unpublish ports of %s: %w", p.ID, err)
			}
		}
	}
	return flushUDP(p)
}

// render writes rules as iptables-restore --noflush input, each with op.
func render(op string, rules []Rule) string {
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
func restoreInput(n Network, rules []Rule, have map[jump]bool) string {
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

// Verify reports whether every rule and jump of n is in place.
func (f *IPTables) Verify(n Network) (bool, error) {
	for _, j := range n.jumps() {
		ok, err := f.r.ChainExists(j.Table, j.To)
		if err != nil || !ok {
			return false, err
		}
		if ok, err := f.r.Exists(j.Table, j.From, j.spec(n)...); err != nil || !ok {
			return false, err
		}
	}
	for _, r := range n.Rules() {
		if ok, err := f.r.Exists(r.Table, r.Chain, r.Spec...); err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// Uninstall removes n's jumps and chains. What is already gone is skipped.
func (f *IPTables) Uninstall(n Network) error {
	return f.locked(func() error { return f.uninstall(n) })
}

func (f *IPTables) uninstall(n Network) error {
	gone := map[string]bool{}
	for _, j := range n.jumps() {
		ok, err := f.r.ChainExists(j.Table, j.To)
		if err != nil {
			return fmt.Errorf("remove rules of %s: %w", n.Bridge, err)
		}
		if ok {
			if err := f.r.DeleteIfExists(j.Table, j.From, j.spec(n)...); err != nil {
				return fmt.Errorf("remove jump to %s: %w", j.To, err)
			}
		}
	}
	for _, j := range n.jumps() {
		if gone[j.To] {
			continue
		}
		gone[j.To] = true
		if ok, _ := f.r.ChainExists(j.Table, j.To); ok {
			if err := f.r.ClearAndDeleteChain(j.Table, j.To); err != nil {
				return fmt.Errorf("remove chain %s: %w", j.To, err)
			}
		}
	}
	return nil
}

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// Forward turns on IPv4 forwarding in the caller's namespace.
func (f *IPTables) Forward() error { return f.sysctl(ipForward) }

// sysctlOn writes only when needed: the read is cheaper than the write.
func sysctlOn(path string) error {
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable %s: %w", path, err)
	}
	return nil
}

var _ Firewall = (*IPTables)(nil)
