// Package nat keeps a network's firewall rules: MASQUERADE for traffic that
// leaves the bridge, FORWARD accepts, and ip_forward.
//
// Every rule lives in chains of our own, one pair per network, jumped to
// from the built-in chains, and carries a comment naming its network. So
// installing is one atomic iptables-restore of our chains, and checking,
// listing and removing never touch a rule that is not ours.
package nat

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// Network is what the rules of one network depend on.
type Network struct {
	Bridge string
	Subnet netip.Prefix
}

// Chain names are short enough for any bridge name: iptables allows 28.
const (
	fwdPrefix  = "BH-FWD-"
	masqPrefix = "BH-NAT-"
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

func (n Network) comment(what string) []string {
	return []string{"-m", "comment", "--comment", "bridgehook " + n.Bridge + ": " + what}
}

func (n Network) jumps() []jump {
	return []jump{
		{"filter", "FORWARD", n.fwdChain()},
		{"nat", "POSTROUTING", n.masqChain()},
	}
}

func (j jump) spec(n Network) []string {
	return append(n.comment("jump"), "-j", j.To)
}

// Rules returns the rules of network n's own chains, in order.
func (n Network) Rules() []Rule {
	br, subnet := n.Bridge, n.Subnet.String()
	fwd := func(what string, spec ...string) Rule {
		return Rule{"filter", n.fwdChain(), append(spec, append(n.comment(what), "-j", "ACCEPT")...)}
	}
	return []Rule{
		// br_netfilter sends bridged frames through FORWARD, so a DROP
		// policy there would cut containers off from each other without
		// this one.
		fwd("between containers", "-i", br, "-o", br),
		fwd("out of the bridge", "-i", br, "!", "-o", br),
		// Into the bridge only what answers the containers' own traffic:
		// the subnet is not reachable from outside unless a port is
		// published.
		fwd("replies into the bridge", "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"),
		// Not for traffic that stays on the bridge: containers see each
		// other's real addresses.
		{"nat", n.masqChain(), append([]string{"-s", subnet, "!", "-o", br}, append(n.comment("masquerade"), "-j", "MASQUERADE")...)},
	}
}

// Runner runs iptables. The go-iptables runner is the real one; tests use a
// fake that records what it was given.
type Runner interface {
	// Save returns the output of iptables-save for every table.
	Save() (string, error)
	// Restore feeds input to iptables-restore --noflush, atomically.
	Restore(input string) error
	Exists(table, chain string, spec ...string) (bool, error)
	DeleteIfExists(table, chain string, spec ...string) error
	ChainExists(table, chain string) (bool, error)
	ClearAndDeleteChain(table, chain string) error
}

// Firewall installs and removes networks' rules through a Runner.
type Firewall struct{ r Runner }

// New returns a Firewall that runs iptables through r.
func New(r Runner) *Firewall { return &Firewall{r: r} }

// Install makes network n's chains hold exactly n.Rules() and makes sure
// the built-in chains jump to them once. It is idempotent; callers serialise
// it across hooks (the jump check and the restore are two commands).
func (f *Firewall) Install(n Network) error {
	saved, err := f.r.Save()
	if err != nil {
		return fmt.Errorf("read firewall: %w", err)
	}
	have := jumpsIn(saved)
	if err := f.r.Restore(restoreInput(n, have)); err != nil {
		return fmt.Errorf("install rules for %s: %w", n.Bridge, err)
	}
	return nil
}

// restoreInput renders n's chains for iptables-restore --noflush. Declaring
// a chain that exists flushes it, so the chain ends up holding exactly these
// rules however often this runs. Jumps are added only where have lacks them.
func restoreInput(n Network, have map[jump]bool) string {
	var b strings.Builder
	for _, table := range []string{"filter", "nat"} {
		fmt.Fprintf(&b, "*%s\n", table)
		for _, j := range n.jumps() {
			if j.Table == table {
				fmt.Fprintf(&b, ":%s - [0:0]\n", j.To)
			}
		}
		for _, r := range n.Rules() {
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
		if strings.HasPrefix(to, fwdPrefix) || strings.HasPrefix(to, masqPrefix) {
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

// Installed reports whether every rule and jump of n is in place.
func (f *Firewall) Installed(n Network) (bool, error) {
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
func (f *Firewall) Uninstall(n Network) error {
	for _, j := range n.jumps() {
		ok, err := f.r.ChainExists(j.Table, j.To)
		if err != nil {
			return fmt.Errorf("remove rules of %s: %w", n.Bridge, err)
		}
		if !ok {
			continue
		}
		if err := f.r.DeleteIfExists(j.Table, j.From, j.spec(n)...); err != nil {
			return fmt.Errorf("remove jump to %s: %w", j.To, err)
		}
		if err := f.r.ClearAndDeleteChain(j.Table, j.To); err != nil {
			return fmt.Errorf("remove chain %s: %w", j.To, err)
		}
	}
	return nil
}

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// EnableForwarding turns on IPv4 forwarding in the caller's namespace. It
// writes only when needed: the read is cheaper than the write.
func EnableForwarding() error {
	b, err := os.ReadFile(ipForward)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(ipForward, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable ip_forward: %w", err)
	}
	return nil
}
