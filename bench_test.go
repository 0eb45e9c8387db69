package main

// `make bench`: the hook's cost on the container start path, measured in a
// sandbox namespace against an empty Go program started the same way.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on a thread switched into ns, so that the processes fn
// starts are born there without an nsenter in front of them: the hook and
// the empty program are then started exactly alike.
func inNetns(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread is not unlocked: leaving it switched would be wrong,
		// and a locked goroutine's thread dies with it.
		if err := netns.Set(ns); err != nil {
			t.Errorf("setns: %v", err)
			return
		}
		fn()
	}()
	<-done
}

// timeRun starts path with state on stdin and returns its wall time.
func timeRun(t *testing.T, state string, path string, args ...string) time.Duration {
	t.Helper()
	c := exec.Command(path, args...)
	c.Stdin = strings.NewReader(state)
	start := time.Now()
	out, err := c.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		t.Fatalf("%s %v: %v: %s", path, args, err, out)
	}
	return d
}

type figures []time.Duration

func (f figures) pct(p float64) time.Duration {
	s := slices.Clone(f)
	slices.Sort(s)
	i := int(p*float64(len(s)-1) + 0.5)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

type row struct {
	name   string
	f      figures
	above  bool // compare the median with the empty program's
	target string
}

func TestBenchTable(t *testing.T) {
	if os.Getenv("BRIDGEHOOK_BENCH") == "" {
		t.Skip("run with make bench")
	}
	requireRoot(t, "runc", "busybox")
	runs := 30
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty+".go", []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("go", "build", "-o", empty, empty+".go").CombinedOutput(); err != nil {
		t.Fatalf("build empty program: %v %s", err, out)
	}

	var rows []row
	sb := newSandbox(t)
	pids := make([]int, runs)
	for i := range pids {
		pids[i] = sb.container()
	}
	var emptyF, warm, down, cold figures
	inNetns(t, sb.ns, func() {
		hook := func(state string, args ...string) time.Duration {
			return timeRun(t, state, binary, append(sb.flags, args...)...)
		}
		hook(setupState("first", sb.container())) // the bridge and rules now exist
		for i := range runs {
			emptyF = append(emptyF, timeRun(t, setupState("x", 1), empty))
			warm = append(warm, hook(setupState(fmt.Sprint("c", i), pids[i])))
		}
		for i := range runs {
			down = append(down, hook(stopState(fmt.Sprint("c", i))))
		}
	})
	for range runs / 3 {
		fresh := newSandbox(t)
		pid := fresh.container()
		inNetns(t, fresh.ns, func() {
			cold = append(cold, timeRun(t, setupState("c", pid), binary, fresh.flags...))
		})
	}
	rows = append(rows,
		row{"empty Go program", emptyF, false, "(baseline)"},
		row{"warm setup", warm, true, "<= 3 ms above"},
		row{"teardown", down, true, "<= 3 ms above"},
		row{"cold setup (bridge + NAT)", cold, true, "<= 40 ms above"},
	)

	// 64 at once.
	sb64 := newSandbox(t)
	const n = 64
	p64 := make([]int, n)
	for i := range p64 {
		p64[i] = sb64.container()
	}
	each := make(figures, n)
	var wall time.Duration
	inNetns(t, sb64.ns, func() {
		timeRun(t, setupState("first", sb64.container()), binary, sb64.flags...)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				each[i] = timeRun(t, setupState(fmt.Sprint("c", i), p64[i]), binary, sb64.flags...)
			})
		}
		wg.Wait()
		wall = time.Since(start)
	})
	distinct := map[string]bool{}
	for _, l := range sb64.leases("netns0", "172.19.0.0/16") {
		distinct[l.IP.String()] = true
	}
	rows = append(rows, row{fmt.Sprintf("64 at once (total wall %s ms, %d distinct)", ms(wall), len(distinct)), each, false, "all succeed, distinct"})

	base := emptyF.pct(0.5)
	fmt.Printf("\n%-48s %5s %8s %8s %8s %8s %8s  %s\n", "case (ms)", "runs", "min", "median", "p99", "max", "above", "target")
	for _, r := range rows {
		above := ""
		if r.above {
			above = ms(r.f.pct(0.5) - base)
		}
		fmt.Printf("%-48s %5d %8s %8s %8s %8s %8s  %s\n", r.name, len(r.f), ms(r.f.pct(0)), ms(r.f.pct(0.5)), ms(r.f.pct(0.99)), ms(r.f.pct(1)), above, r.target)
	}
}
