package nat

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
)

// execRunner is the runner of the host's iptables or ip6tables (cmd).
// go-iptables runs `iptables --version` when it is created, so it is
// created on first use: a warm setup never needs it.
type execRunner struct {
	cmd  string
	once sync.Once
	ipt  *iptables.IPTables
	err  error
}

func (t *execRunner) get() (*iptables.IPTables, error) {
	t.once.Do(func() {
		proto := iptables.ProtocolIPv4
		if t.cmd == "ip6tables" {
			proto = iptables.ProtocolIPv6
		}
		t.ipt, t.err = iptables.New(iptables.IPFamily(proto))
	})
	return t.ipt, t.err
}

// tool returns the path of the iptables-save or iptables-restore that goes
// with the iptables go-iptables would run, so both speak to one backend.
func tool(name string) (string, error) {
	p, err := exec.LookPath("iptables")
	if err != nil {
		return "", fmt.Errorf("iptables not found (install the iptables package): %w", err)
	}
	return filepath.Join(filepath.Dir(p), name), nil
}

func run(name string, stdin string) (string, error) {
	path, err := tool(name)
	if err != nil {
		return "", err
	}
	args := []string{}
	if strings.HasSuffix(name, "-restore") {
		args = append(args, "--noflush", "-w")
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

func (t *execRunner) Save() (string, error) { return run(t.cmd+"-save", "") }

func (t *execRunner) Restore(input string) error {
	_, err := run(t.cmd+"-restore", input)
	return err
}

func (t *execRunner) Exists(table, chain string, spec ...string) (bool, error) {
	ipt, err := t.get()
	if err != nil {
		return false, err
	}
	return ipt.Exists(table, chain, spec...)
}

func (t *execRunner) DeleteIfExists(table, chain string, spec ...string) error {
	ipt, err := t.get()
	if err != nil {
		return err
	}
	return ipt.DeleteIfExists(table, chain, spec...)
}

func (t *execRunner) ChainExists(table, chain string) (bool, error) {
	ipt, err := t.get()
	if err != nil {
		return false, err
	}
	return ipt.ChainExists(table, chain)
}

func (t *execRunner) ClearAndDeleteChain(table, chain string) error {
	ipt, err := t.get()
	if err != nil {
		return err
	}
	return ipt.ClearAndDeleteChain(table, chain)
}
