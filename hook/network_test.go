package hook

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/bridgehook/bridgehook/bridge"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/vishvananda/netns"
)

func TestHintsNameTheFlag(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("x: %w", ipam.ErrExhausted):                      "<subnet>",
		fmt.Errorf("x: %w", ipam.ErrCorrupt):                        "bridgehook gc",
		fmt.Errorf("x: %w", bridge.ErrNotBridge):                    "<bridge>",
		fmt.Errorf("x: %w", bridge.ErrOverlap):                      "<subnet>",
		fmt.Errorf("x: %w", bridge.ErrOtherAddress):                 "<bridge>",
		&os.PathError{Op: "write", Path: "/run/x", Err: errNoSpace}: "<state-dir>",
	} {
		if got := input.Render(hint(err), marked); !strings.Contains(got, want) {
			t.Errorf("hint(%v) = %v, want it to name %s", err, got, want)
		}
	}
	if hint(nil) != nil {
		t.Error("hint(nil) != nil")
	}
}

func TestAliasFitsIfAlias(t *testing.T) {
	if a := alias("c1"); a != "bridgehook:c1" {
		t.Errorf("alias(c1) = %q", a)
	}
	long := strings.Repeat("x", MaxID)
	if a := alias(long); len(a) > 255 || a == alias(long[1:]) {
		t.Errorf("alias of a long id: %q", a)
	}
}

// marked spells a field <field>, so that tests see which one an error
// names.
func marked(f input.Field) string { return "<" + string(f) + ">" }

var errNoSpace = syscall.ENOSPC

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// The namespaces of /proc as hook opens them, which needs no root for the
// test's own: its own namespace is refused, by pid and by path, and a
// file that is no namespace is named as such.
func TestProcsRefuseTheHooksOwnNamespace(t *testing.T) {
	var p procs
	if _, _, err := p.Netns(os.Getpid()); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "the hook's own network namespace") {
		t.Errorf("own pid: %v", err)
	}
	if _, _, err := p.Netns(1 << 30); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "no such process") {
		t.Errorf("no such pid: %v", err)
	}
	if _, _, err := p.NetnsAt("/proc/self/ns/net"); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "plugin's own") {
		t.Errorf("own path: %v", err)
	}
	if _, _, err := p.NetnsAt(os.DevNull); !strings.Contains(err.Error(), "not a network namespace") {
		t.Errorf("/dev/null: %v", err)
	}
	if _, _, err := p.NetnsAt("/nonexistent"); !strings.Contains(err.Error(), "not a network namespace") {
		t.Errorf("a missing path: %v", err)
	}
	if ino, err := p.PathInode("/proc/self/ns/net"); err != nil || ino == 0 {
		t.Errorf("PathInode: %d %v", ino, err)
	}
}

// A bridge is one network's: another network asking for it is told how
// to remove the first, and the steps of a setup are timed for --debug.
func TestABridgeIsOneNetworks(t *testing.T) {
	w := newWorld(t, "10.1.0.0/24")
	w.mustSetup("a", w.container(10), "")
	dual := w.n.Config
	if err := dual.ParseSubnets([]string{"fd19::/64", "10.1.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	var debug strings.Builder
	opts := append(w.options(), WithDebug(slog.New(slog.NewTextHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	_, err := Join(dual, Request{ID: "b", Netns: Netns{PID: w.container(11)}}, opts...)
	var in *input.Error
	if !errors.As(err, &in) || in.Run != "bridgehook --bridge netns0 --subnet 10.1.0.0/24 network rm" ||
		!strings.Contains(input.Render(err, marked), "use another <bridge>") {
		t.Errorf("a dual-stack network on an IPv4 network's bridge: %v", err)
	}
	if !strings.Contains(debug.String(), `msg="open netns"`) {
		t.Errorf("--debug logged %q", debug.String())
	}
	if err := dual.ParseSubnets([]string{"10.1.0.0/33"}); !errors.Is(err, ErrInput) {
		t.Errorf("ParseSubnets of a bad subnet: %v", err)
	}
}

// A namespace path naming the host's namespace (PID 1's) is refused even
// where the plugin runs in another: here a namespace the test makes
// stands for the host's.
func TestProcsRefuseTheHostsNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a namespace that stands for the host's")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	own, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	host, err := netns.New()
	if serr := netns.Set(own); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	defer host.Close()
	path := fmt.Sprintf("/proc/self/fd/%d", int(host))
	_, _, err = procs{host: path}.NetnsAt(path)
	var in *input.Error
	if !errors.As(err, &in) || in.Field != input.Netns || !strings.Contains(err.Error(), "the host's (PID 1's) network namespace") {
		t.Errorf("the host's namespace by path: %v", err)
	}
	if ns, _, err := (procs{}).NetnsAt(path); err != nil {
		t.Errorf("the same namespace, not the host's: %v", err)
	} else {
		ns.Close()
	}
}
