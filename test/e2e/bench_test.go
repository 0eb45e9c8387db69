package e2e

// `make bench`: the hook's cost on the container start path, measured in a
// sandbox namespace against an empty Go program started the same way.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/port"
)

// inNetns runs fn on a thread switched into ns, so that the processes fn
// starts are born there without an nsenter in front of them: the hook and
// the empty program are then started exactly alike. Only fn's own
// goroutine is in ns: a goroutine fn starts runs on some other thread, in
// the host's namespace, so it must call inNetns itself.
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

// onTmpfs puts the sandbox's lease store on a tmpfs, as /run is on a
// systemd host (on these build machines /run is plain ext4, where the one
// fsync per allocation costs about a millisecond).
func onTmpfs(t *testing.T, sb *sandbox) { mountTmpfs(t, sb.stateDir) }

// mountTmpfs mounts a tmpfs on dir until the test ends.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		// A name server a setup started holds files here: end it first,
		// or the tmpfs stays mounted.
		stopNameServer(dir)
		// A server that let go of its lock as it ended may still be
		// exiting, its files open: the tmpfs is busy until it is gone.
		var out []byte
		var err error
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if out, err = exec.Command("umount", dir).CombinedOutput(); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
}

// nftStateDir is a state directory beside a sandbox's, on a tmpfs as
// /run is on a systemd host.
func nftStateDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/run", "bridgehook-bench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mountTmpfs(t, dir)
	return dir
}

func TestBenchTable(t *testing.T) {
	if os.Getenv("BRIDGEHOOK_BENCH") == "" {
		t.Skip("run with make bench")
	}
	requireRoot(t, "runc", "busybox")
	runs := 30
	if n, err := strconv.Atoi(os.Getenv("BRIDGEHOOK_BENCH_RUNS")); err == nil && n > 1 {
		runs = n // BENCH_RUNS=N: more runs, for finer comparisons
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty+".go", []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", empty, empty+".go")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build empty program: %v %s", err, out)
	}
	var rows []row
	add := func(name string, f figures, above bool, target string) {
		rows = append(rows, row{name, f, above, target})
	}
	// The libraries' start-up: programs that link and initialise every
	// library package this revision's binary (and the base's) links, and do
	// nothing. What any binary with those libraries pays, whatever its code.
	libs := filepath.Join(t.TempDir(), "libs")
	if out, err := exec.Command("bash", "../../.ci/build-libs", "../..", libs).CombinedOutput(); err != nil {
		t.Fatalf("build the libraries' program: %v %s", err, out)
	}
	baseLibs := os.Getenv("BRIDGEHOOK_BENCH_BASE_LIBS")

	// Warm setup and teardown, alternating with the empty program so that
	// both see the same machine.
	warmRows := func(name string, tmpfs bool) {
		sb := newSandbox(t)
		if tmpfs {
			onTmpfs(t, sb)
		}
		pids := make([]int, runs)
		for i := range pids {
			pids[i] = sb.container()
		}
		ported := sb.containers(runs)
		// The same, on a network of the nftables backend in the same
		// sandbox, timed in turn with the iptables one.
		var nft, dual, unchecked, named, same, same6 []string
		var nftPids, nftPorted, dualPids, uncheckedPids, namedPids []int
		var samePrimed, samePids, same6Primed, same6Pids []int
		if name == "" {
			// A network with names, timed in turn.
			named = []string{"--state-dir", sb.stateDir, "--bridge", "names0", "--subnet", "10.76.0.0/16", "--names"}
			namedPids = sb.containers(runs)
			// A dual-stack network beside the IPv4 one, timed in turn.
			dual = []string{"--state-dir", sb.stateDir, "--bridge", "dual0", "--subnet", "10.78.0.0/16", "--subnet", "fd78::/64"}
			dualPids = sb.containers(runs)
			// The same binary with the spoof check off, timed in turn.
			unchecked = []string{"--state-dir", sb.stateDir, "--bridge", "nochk0", "--subnet", "10.79.0.0/16", "--spoof-check=false"}
			uncheckedPids = sb.containers(runs)
			// A state directory of its own: setups with ports check the
			// other networks of theirs.
			nft = []string{"--state-dir", nftStateDir(t), "--firewall", "nftables", "--bridge", "nft0", "--subnet", "10.77.0.0/16"}
			nftPids, nftPorted = sb.containers(runs), sb.containers(runs)
			// Networks whose timed setup follows one of their own, with
			// no other commit between: the generation is the one their
			// stamp holds, and the check is one read. In every other row
			// other networks' commits moved it since, and the check is
			// the full one.
			same = []string{"--state-dir", sb.stateDir, "--bridge", "same0", "--subnet", "10.80.0.0/16"}
			same6 = []string{"--state-dir", sb.stateDir, "--bridge", "same6", "--subnet", "10.81.0.0/16", "--subnet", "fd81::/64"}
			samePrimed, samePids = sb.containers(runs), sb.containers(runs)
			same6Primed, same6Pids = sb.containers(runs), sb.containers(runs)
		}
		// make bench BASE=REV: the binary of another revision, run in
		// turn with this one, so that both see the same machine.
		baseBin := os.Getenv("BRIDGEHOOK_BENCH_BASE")
		var basePids []int
		if baseBin != "" && name == "" {
			basePids = sb.containers(runs)
		}
		var emptyF, startup, warm, down, downLive, ports, portsDown figures
		var nftWarm, nftPorts, nftPortsDown, dualWarm, uncheckedWarm, uncheckedDown, namedWarm figures
		var baseStartup, baseWarm, baseDown, libsStartup, baseLibsStartup, sameWarm, same6Warm figures
		portsState := func(id string, pid, i int) string {
			return fmt.Sprintf(`{"id":"%s","pid":%d,"status":"creating","annotations":{"bridgehook.ports":"%d:80,%d:81/udp"}}`, id, pid, 10000+i, 20000+i)
		}
		// As at poststop: the container's processes are gone (the kernel
		// then deletes the veth pair with the namespace).
		exited := func(pid int) {
			syscall.Kill(pid, syscall.SIGKILL)
			waitFor(t, "container exit", func() bool { return !isRunning(pid) })
		}
		inNetns(t, sb.ns, func() {
			hook := func(state string, flags ...string) time.Duration {
				if flags == nil {
					flags = sb.flags
				}
				return timeRun(t, state, binary, flags...)
			}
			hook(setupState("first", sb.container())) // the bridge and rules now exist
			if nftPids != nil {
				hook(setupState("first", sb.container()), nft...)
				hook(setupState("first", sb.container()), dual...)
				hook(setupState("first", sb.container()), unchecked...)
				hook(setupState("first", sb.container()), named...)
				hook(setupState("first", sb.container()), same...)
				hook(setupState("first", sb.container()), same6...)
			}
			for i := range runs {
				emptyF = append(emptyF, timeRun(t, setupState("x", 1), empty))
				startup = append(startup, timeRun(t, setupState("x", 1), binary, "version"))
				if name == "" {
					libsStartup = append(libsStartup, timeRun(t, setupState("x", 1), libs))
				}
				if name == "" && baseLibs != "" {
					baseLibsStartup = append(baseLibsStartup, timeRun(t, setupState("x", 1), baseLibs))
				}
				// Each warm setup follows a light run, each with ports a
				// heavy one: a process's cost depends on the one before.
				warm = append(warm, hook(setupState(fmt.Sprint("c", i), pids[i])))
				if dualPids != nil {
					timeRun(t, setupState("x", 1), binary, "version") // light, as before warm
					dualWarm = append(dualWarm, hook(setupState(fmt.Sprint("c", i), dualPids[i]), dual...))
				}
				if namedPids != nil {
					timeRun(t, setupState("x", 1), binary, "version") // light, as before warm
					namedWarm = append(namedWarm, hook(setupState(fmt.Sprint("c", i), namedPids[i]), named...))
				}
				if nftPids != nil {
					nftWarm = append(nftWarm, hook(setupState(fmt.Sprint("c", i), nftPids[i]), nft...))
					timeRun(t, setupState("x", 1), binary, "version") // light, as before warm
					uncheckedWarm = append(uncheckedWarm, hook(setupState(fmt.Sprint("c", i), uncheckedPids[i]), unchecked...))
				}
				if basePids != nil {
					baseStartup = append(baseStartup, timeRun(t, setupState("x", 1), baseBin, "version"))
					baseWarm = append(baseWarm, timeRun(t, setupState(fmt.Sprint("b", i), basePids[i]), baseBin, sb.flags...))
				}
				ports = append(ports, hook(portsState(fmt.Sprint("p", i), ported[i], i)))
				if nftPids != nil {
					nftPorts = append(nftPorts, hook(portsState(fmt.Sprint("p", i), nftPorted[i], i+runs), nft...))
				}
				if samePids != nil {
					// Timed after an untimed setup of its own network, and
					// a light run as before warm.
					afterOwn := func(primed, pid int, flags []string) time.Duration {
						hook(setupState(fmt.Sprint("s", i), primed), flags...)
						timeRun(t, setupState("x", 1), binary, "version")
						return hook(setupState(fmt.Sprint("c", i), pid), flags...)
					}
					sameWarm = append(sameWarm, afterOwn(samePrimed[i], samePids[i], same))
					same6Warm = append(same6Warm, afterOwn(same6Primed[i], same6Pids[i], same6))
				}
			}
			for i := range runs / 2 {
				exited(pids[i])
				down = append(down, hook(stopState(fmt.Sprint("c", i))))
				if basePids != nil {
					exited(basePids[i])
					baseDown = append(baseDown, timeRun(t, stopState(fmt.Sprint("b", i)), baseBin, sb.flags...))
				}
				if uncheckedPids != nil {
					exited(uncheckedPids[i])
					uncheckedDown = append(uncheckedDown, hook(stopState(fmt.Sprint("c", i)), unchecked...))
				}
				exited(ported[i])
				portsDown = append(portsDown, hook(stopState(fmt.Sprint("p", i))))
				if nftPids != nil {
					exited(nftPorted[i])
					nftPortsDown = append(nftPortsDown, hook(stopState(fmt.Sprint("p", i)), nft...))
				}
			}
			// Teardown while the namespace still lives: the hook deletes
			// the veth itself.
			for i := runs / 2; i < runs; i++ {
				downLive = append(downLive, hook(stopState(fmt.Sprint("c", i))))
			}
		})
		if name == "" {
			add("empty Go program", emptyF, false, "(baseline)")
			add(rowVersion, startup, true, "(the libraries' start-up)")
			add(rowLibs, libsStartup, true, "(floor of version)")
			add(rowWarm, warm, true, "<= 3 ms above")
			add(rowWarmUnchecked, uncheckedWarm, true, "(check on <= 1.05x this)")
			add(rowDual, dualWarm, true, "<= 0.5 ms above IPv4's")
			add(rowWarmSame, sameWarm, true, "(one read: compare)")
			add(rowDualSame, same6Warm, true, "(compare)")
			add(fmt.Sprintf("warm setup, network with names (%+.1f%%)", 100*(float64(namedWarm.pct(0.5)-emptyF.pct(0.5))/float64(warm.pct(0.5)-emptyF.pct(0.5))-1)),
				namedWarm, true, "<= 5 % above warm setup")
			add(rowDown, down, true, "<= 3 ms above")
			add(rowDownUnchecked, uncheckedDown, true, "(compare)")
			add("teardown (namespace alive: veth deleted)", downLive, true, "(no target)")
			add("setup with 2 published ports", ports, true, "<= 15 ms above")
			add("teardown with 2 published ports (container exited)", portsDown, true, "(no target)")
			add(rowNftWarm, nftWarm, true, "no slower than iptables")
			add("nftables: setup with 2 published ports", nftPorts, true, "<= 0.5 ms above its warm")
			add("nftables: teardown with 2 ports (container exited)", nftPortsDown, true, "(no target)")
			if baseBin != "" {
				add(rowBaseVersion, baseStartup, true, "(compare)")
				add(rowBaseWarm, baseWarm, true, "(compare)")
				add(rowBaseDown, baseDown, true, "(compare)")
			}
			if baseLibs != "" {
				add(rowBaseLibs, baseLibsStartup, true, "(compare)")
			}
		} else {
			add(name, warm, true, "(for comparison)")
		}
	}
	warmRows("", true)
	warmRows("warm setup, store on this machine's ext4 /run", false)
	base := rows[0].f.pct(0.5)

	var cold, nftCold figures
	for range 10 {
		for _, fw := range firewalls {
			fresh := newSandbox(t, "--firewall", fw)
			onTmpfs(t, fresh)
			pid := fresh.container()
			inNetns(t, fresh.ns, func() {
				d := timeRun(t, setupState("c", pid), binary, fresh.flags...)
				if fw == "nftables" {
					nftCold = append(nftCold, d)
				} else {
					cold = append(cold, d)
				}
			})
		}
	}
	add("cold setup (creates bridge + NAT)", cold, true, "<= 40 ms above")

	on, off := throughput(t, 15)
	add(fmt.Sprintf("container to container, TCP %d MB: spoof check on", streamMB), on, false, "<= 1.05x off")
	add(fmt.Sprintf("container to container, TCP %d MB: spoof check off", streamMB), off, false, "(compare)")
	add("nftables: cold setup", nftCold, true, "<= 3 ms above its warm")

	// 64 at once.
	sb64 := newSandbox(t)
	onTmpfs(t, sb64)
	const n = 64
	p64 := sb64.containers(n)
	each := make(figures, n)
	first := sb64.container()
	inNetns(t, sb64.ns, func() { timeRun(t, setupState("first", first), binary, sb64.flags...) })
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			inNetns(t, sb64.ns, func() {
				each[i] = timeRun(t, setupState(fmt.Sprint("c", i), p64[i]), binary, sb64.flags...)
			})
		})
	}
	wg.Wait()
	wall := time.Since(start)
	distinct := map[string]bool{}
	for _, l := range sb64.leases("netns0", "172.19.0.0/16") {
		distinct[l.IP.String()] = true
	}
	add(fmt.Sprintf("64 setups at once: wall %s ms, %d/%d distinct", ms(wall), len(distinct), n+1), each, false, "all succeed, distinct")

	alloc, rel := leaseBench(t, 60000, 200, netip.MustParsePrefix("10.200.0.0/16"))
	add("lease allocate, 60,000 leases held (in-process)", alloc, false, "<= 1 ms")
	add("lease release, 60,000 leases held (in-process)", rel, false, "<= 1 ms")
	alloc, rel = leaseBench(t, 60000, 200, netip.MustParsePrefix("10.200.0.0/16"), netip.MustParsePrefix("fd20::/64"))
	add("dual-stack lease allocate, 60,000 held (IPv6 /64)", alloc, false, "flat, as IPv4")
	add("dual-stack lease release, 60,000 held (IPv6 /64)", rel, false, "flat, as IPv4")
	alloc, rel = leaseBench(t, 60000, 200, netip.MustParsePrefix("fd21::/64"))
	add("IPv6-only lease allocate, 60,000 held (/64)", alloc, false, "flat, as IPv4")
	add("IPv6-only lease release, 60,000 held (/64)", rel, false, "flat, as IPv4")

	few, many := portsAtScaleBench(t, runs)
	add("setup with 2 published ports, 10 leases held", few, true, "(compare)")
	add("setup with 2 published ports, 10,000 leases held", many, true, "= 10 leases' within noise")

	local, forwarded, ready, qps := namesBench(t, runs)
	add(fmt.Sprintf("name server: local name, one query; 8 clients: %d/s", qps[0]), local, false, "(no target)")
	add(fmt.Sprintf("name server: forwarded, one query; 8 clients: %d/s", qps[1]), forwarded, false, "(no target)")
	add("name server: first query for a name its setup just made", ready, false, "answers: no wait, no retry")

	bh, deb := cniBench(t, runs)
	add("CNI ADD: bridgehook (warm)", bh, false, "")
	add("CNI ADD: Debian's bridge + host-local (warm)", deb, false, "")
	rows[len(rows)-2].name += fmt.Sprintf(" = %.2fx Debian's", float64(bh.pct(0.5))/float64(deb.pct(0.5)))

	viaHook, viaCNI, viaNetavark := podmanBench(t, 20)
	ratio := func(f figures) float64 { return float64(f.pct(0.5)) / float64(viaHook.pct(0.5)) }
	add("podman run --rm: network cost of bridgehook (hooks.d)", viaHook, false, "")
	add(fmt.Sprintf("podman run --rm: network cost of CNI bridge = %.1fx", ratio(viaCNI)), viaCNI, false, "")
	add(fmt.Sprintf("podman run --rm: network cost of netavark = %.1fx", ratio(viaNetavark)), viaNetavark, false, ">= 20x, the cheaper peer")

	with, without := runcBench(t, 15)
	add("runc run busybox true, without the hook", without, false, "")
	add(fmt.Sprintf("runc run busybox true, with the hook (%+.1f%%)", 100*(float64(with.pct(0.5))/float64(without.pct(0.5))-1)), with, false, "<= 10 % slower")

	fmt.Printf("\n%-56s %5s %8s %8s %8s %8s %8s  %s\n", "case (ms; above = median minus the empty program's)", "runs", "min", "median", "p99", "max", "above", "target")
	for _, r := range rows {
		if len(r.f) == 0 {
			fmt.Printf("%-56s %5s %8s %8s %8s %8s %8s  %s\n", r.name, "-", "-", "-", "-", "-", "-", r.target)
			continue
		}
		above := ""
		if r.above {
			above = ms(r.f.pct(0.5) - base)
		}
		fmt.Printf("%-56s %5d %8s %8s %8s %8s %8s  %s\n", r.name, len(r.f), ms(r.f.pct(0)), ms(r.f.pct(0.5)), ms(r.f.pct(0.99)), ms(r.f.pct(1)), above, r.target)
	}
	fmt.Println("\nThe lease store is on a tmpfs, as /run is on a systemd host, except in the ext4 row.")
	if os.Getenv("BRIDGEHOOK_BENCH_BASE") != "" && baseLibs != "" {
		budgets(t, rows, base)
	}
}

// The rows the budgets compare, named once for the table and for budgets.
const (
	rowVersion       = "bridgehook version: start-up, no work"
	rowLibs          = "its libraries alone: linked, initialised, no code"
	rowWarm          = "warm setup"
	rowWarmUnchecked = "warm setup, spoof check off"
	rowDual          = "dual-stack (IPv4 + IPv6 /64): warm setup"
	rowNftWarm       = "nftables: warm setup"
	rowWarmSame      = "warm setup, nothing committed since its network's last"
	rowDualSame      = "dual-stack warm setup, nothing committed since"
	rowDown          = "teardown (container exited, as at poststop)"
	rowDownUnchecked = "teardown, spoof check off"
	rowBaseVersion   = "  base binary: bridgehook version"
	rowBaseWarm      = "  base binary: warm setup"
	rowBaseDown      = "  base binary: teardown (container exited)"
	rowBaseLibs      = "  base binary's libraries alone"
)

// budgets prints the ratios of rows that the speed budgets compare with
// the base revision's, all above the empty program, and each one's floor:
// the base's figure plus what this revision's libraries cost to start
// beyond the base's libraries, which no code of ours can take back (and,
// for setups and teardowns, the spoof check's transaction, a feature on
// by default).
func budgets(t *testing.T, rows []row, empty time.Duration) {
	above := map[string]float64{}
	for _, r := range rows {
		if r.above && len(r.f) > 0 {
			above[r.name] = float64(r.f.pct(0.5)-empty) / float64(time.Millisecond)
		}
	}
	at := func(name string) float64 {
		v, ok := above[name]
		if !ok {
			t.Errorf("budgets: no row %q", name)
		}
		return v
	}
	libs := at(rowLibs) - at(rowBaseLibs)
	check := at(rowWarm) - at(rowWarmUnchecked)
	checkDown := at(rowDown) - at(rowDownUnchecked)
	fmt.Printf("\nAgainst the base (ms above the empty program): the libraries' start-up costs %.2f more; the spoof check %.2f at setup, %.2f at teardown.\n", libs, check, checkDown)
	fmt.Printf("%-40s %8s %8s %8s %8s %8s\n", "budget row", "this", "base", "ratio", "floor", "floor x")
	for _, b := range []struct {
		this, base string
		extra      float64
	}{
		{rowVersion, rowBaseVersion, 0},
		{rowWarm, rowBaseWarm, check},
		{rowNftWarm, rowBaseWarm, check},
		{rowDown, rowBaseDown, checkDown},
	} {
		this, base := at(b.this), at(b.base)
		floor := base + libs + b.extra
		fmt.Printf("%-40.40s %8.2f %8.2f %8.2f %8.2f %8.2f\n", b.this, this, base, this/base, floor, floor/base)
	}
	fmt.Printf("%-40s %8.2f %8.2f %8.2f\n", "dual-stack warm / IPv4 warm", at(rowDual), at(rowWarm), at(rowDual)/at(rowWarm))
	fmt.Printf("%-40s %8.2f %8.2f %8.2f\n", "  the same, nothing committed since", at(rowDualSame), at(rowWarmSame), at(rowDualSame)/at(rowWarmSame))
	fmt.Printf("A warm setup's full check, run when other commits moved the generation, costs %.2f more than its one read (IPv4), %.2f (dual-stack).\n",
		at(rowWarm)-at(rowWarmSame), at(rowDual)-at(rowDualSame))
}

func isRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; its parent has not reaped it yet.
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

// leaseBench times allocate and release one at a time in a store of
// subnets that holds held leases, on a tmpfs.
func leaseBench(t *testing.T, held, runs int, subnets ...netip.Prefix) (alloc, rel figures) {
	dir := t.TempDir()
	mountTmpfs(t, dir)
	st, err := ipam.Open(dir, "bench0", subnets...)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Do(func(tx ipam.Tx) error {
		for i := range held {
			if _, err := tx.Allocate(ipam.Lease{ID: fmt.Sprint("held", i)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range runs {
		id := fmt.Sprint("b", i)
		start := time.Now()
		err := st.Do(func(tx ipam.Tx) error { _, err := tx.Allocate(ipam.Lease{ID: id}); return err })
		alloc = append(alloc, time.Since(start))
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		err = st.Do(func(tx ipam.Tx) error { _, _, err := tx.Release(id); return err })
		rel = append(rel, time.Since(start))
		if err != nil {
			t.Fatal(err)
		}
	}
	return alloc, rel
}

// cniBench times CNI ADDs of bridgehook and of Debian's bridge plugin
// with host-local, in turn, each exec'd as a runtime execs it, on networks
// that exist already (warm), with their state on a tmpfs.
func cniBench(t *testing.T, runs int) (bridgehook, debian figures) {
	sb := newSandbox(t)
	onTmpfs(t, sb)
	hostLocal := filepath.Join(sb.stateDir, "host-local")
	confs := map[string]string{
		binary: fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bh","type":"bridgehook","bridge":"cnibh0","subnet":"10.95.0.0/16","stateDir":%q}`, sb.stateDir),
		filepath.Join(debianPlugins, "bridge"): fmt.Sprintf(`{"cniVersion":"1.0.0","name":"br","type":"bridge","bridge":"cnibr0","isGateway":true,"ipMasq":true,`+
			`"ipam":{"type":"host-local","subnet":"10.96.0.0/16","dataDir":%q}}`, hostLocal),
	}
	w := newCNIWorld(t, sb)
	add := func(plugin, id string) time.Duration {
		c := exec.Command(plugin)
		c.Stdin = strings.NewReader(confs[plugin])
		c.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+id, "CNI_NETNS="+w.netns(t), "CNI_IFNAME=eth0", "CNI_PATH="+debianPlugins)
		start := time.Now()
		out, err := c.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			t.Fatalf("%s ADD: %v %s", plugin, err, out)
		}
		return d
	}
	inNetns(t, sb.ns, func() {
		for plugin := range confs {
			add(plugin, "first") // the bridge and its rules now exist
		}
		for i := range runs {
			bridgehook = append(bridgehook, add(binary, fmt.Sprint("b", i)))
			debian = append(debian, add(filepath.Join(debianPlugins, "bridge"), fmt.Sprint("d", i)))
		}
	})
	return bridgehook, debian
}

// runcBench times `runc run` of a busybox `true`, with and without
// bridgehook in its hooks, alternating.
func runcBench(t *testing.T, runs int) (with, without figures) {
	sb := newSandbox(t)
	onTmpfs(t, sb)
	root := rootfs(t)
	rt := newRuntime(t, sb, "runc")
	hooked := bundle(t, sb, root, createRuntime, []string{"true"})
	plain := bundle(t, sb, root, createRuntime, []string{"true"})
	stripHooks(t, plain)
	timeIt := func(b, id string) time.Duration {
		start := time.Now()
		rt.run(t, "run", "--bundle", b, id)
		return time.Since(start)
	}
	timeIt(hooked, "warmup") // creates the bridge and rules
	for i := range runs {
		without = append(without, timeIt(plain, fmt.Sprint("p", i)))
		with = append(with, timeIt(hooked, fmt.Sprint("h", i)))
	}
	return with, without
}

func stripHooks(t *testing.T, bundle string) {
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	delete(spec, "hooks")
	if b, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// streamMB is how much one run of throughput sends.
const streamMB = 256

// throughput times streams of streamMB from one container to another,
// on a network with the spoof check on and on one with it off, in turn,
// runs of each.
func throughput(t *testing.T, runs int) (on, off figures) {
	on1, off1 := newStream(t, true), newStream(t, false)
	for range runs {
		on = append(on, on1())
		off = append(off, off1())
	}
	return on, off
}

// newStream sets up two containers on a network of their own and returns
// a function that times a stream of streamMB from one to the other over
// TCP.
func newStream(t *testing.T, check bool) func() time.Duration {
	flags := []string{}
	if !check {
		flags = append(flags, "--spoof-check=false")
	}
	sb := newSandbox(t, flags...)
	onTmpfs(t, sb)
	server, client := sb.container(), sb.container()
	sb.mustHook(setupState("server", server))
	sb.mustHook(setupState("client", client))
	l, _ := sb.lease("server", "172.19.0.0/16")
	sns, err := netns.GetFromPid(server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sns.Close() })
	cns, err := netns.GetFromPid(client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cns.Close() })
	var ln net.Listener
	inNetns(t, sns, func() { ln, err = net.Listen("tcp", ":7000") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	buf := make([]byte, 1<<20)
	return func() (d time.Duration) {
		inNetns(t, cns, func() {
			c, err := net.Dial("tcp", net.JoinHostPort(l.IP.String(), "7000"))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			start := time.Now()
			for range streamMB {
				if _, err := c.Write(buf); err != nil {
					t.Error(err)
					return
				}
			}
			d = time.Since(start)
		})
		return d
	}
}

// namesBench times the name server of a network with names from one of
// its containers: queries one at a time for a container's name and for an
// outside name (forwarded to the sandbox's upstream), the queries per
// second of each with 8 clients, and the first query after a setup
// returns, for the container it set up.
func namesBench(t *testing.T, runs int) (local, forwarded, ready figures, qps [2]int) {
	sb := newSandbox(t, "--names", "--subnet", "10.75.0.0/16", "--dns", upstreamAddr)
	onTmpfs(t, sb)
	sb.upstream(t)
	client := sb.container()
	pids := sb.containers(runs)
	ns, err := netns.GetFromPath(pidNetns(client))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c := &dns.Client{Timeout: 2 * time.Second}
	query := func(name string) (bool, time.Duration) {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		start := time.Now()
		m, _, err := c.Exchange(q, "10.75.0.1:53")
		return err == nil && len(m.Answer) == 1, time.Since(start)
	}
	inNetns(t, sb.ns, func() { timeRun(t, setupState("client", client), binary, sb.flags...) })
	for i, pid := range pids {
		inNetns(t, sb.ns, func() { timeRun(t, setupState(fmt.Sprint("c", i), pid), binary, sb.flags...) })
		inNetns(t, ns, func() {
			ok, d := query(fmt.Sprintf("c%d.", i))
			if !ok {
				t.Errorf("c%d does not answer right after its setup", i)
			}
			ready = append(ready, d)
		})
	}
	for i, name := range []string{"c0.", "outside.example."} {
		inNetns(t, ns, func() {
			for range 2000 {
				ok, d := query(name)
				if !ok {
					t.Errorf("%s: no answer", name)
					return
				}
				if i == 0 {
					local = append(local, d)
				} else {
					forwarded = append(forwarded, d)
				}
			}
		})
		// Throughput: 8 clients at once, each on a thread of its own.
		const clients, each = 8, 1000
		var wg sync.WaitGroup
		var failed atomic.Int64
		start := time.Now()
		for range clients {
			wg.Go(func() {
				inNetns(t, ns, func() {
					for range each {
						if ok, _ := query(name); !ok {
							failed.Add(1)
						}
					}
				})
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Errorf("%s: %d of %d queries failed", name, failed.Load(), clients*each)
		}
		qps[i] = int(clients * each / time.Since(start).Seconds())
	}
	return local, forwarded, ready, qps
}

// portsAtScaleBench times setups with 2 published ports under two state
// directories, in turn: one whose other network holds 10 leases, one
// whose other network holds 10,000, each lease with a host port of its
// own.
func portsAtScaleBench(t *testing.T, runs int) (few, many figures) {
	sb := newSandbox(t)
	type world struct {
		flags []string
		pids  []int
		f     *figures
	}
	var worlds []world
	for i, held := range []int{10, 10000} {
		dir := nftStateDir(t)
		st, err := ipam.Open(dir, "held0", netip.MustParsePrefix("10.210.0.0/16"))
		if err != nil {
			t.Fatal(err)
		}
		err = st.Do(func(tx ipam.Tx) error {
			for j := range held {
				ports := port.MustParse(fmt.Sprintf("%d:80", 30000+j))
				if _, err := tx.Allocate(ipam.Lease{ID: fmt.Sprint("held", j), Ports: ports}); err != nil {
					return err
				}
			}
			return nil
		})
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		f := &few
		if i == 1 {
			f = &many
		}
		worlds = append(worlds, world{
			flags: []string{"--state-dir", dir, "--bridge", fmt.Sprint("scale", i), "--subnet", fmt.Sprintf("10.%d.0.0/16", 81+i)},
			pids:  sb.containers(runs + 1), f: f,
		})
	}
	inNetns(t, sb.ns, func() {
		for _, w := range worlds {
			timeRun(t, setupState("first", w.pids[runs]), binary, w.flags...)
		}
		for i := range runs {
			for _, w := range worlds {
				state := fmt.Sprintf(`{"id":"p%d","pid":%d,"status":"creating","annotations":{"bridgehook.ports":"%d:80,%d:81/udp"}}`, i, w.pids[i], 10000+i, 20000+i)
				timeRun(t, setupState("x", 1), binary, "version") // light, as before each
				*w.f = append(*w.f, timeRun(t, state, binary, w.flags...))
			}
		}
	})
	return few, many
}

// podmanBench times `podman run --rm ... true` runs entirely in a sandbox,
// in turn: bridgehook through the hooks.d file, and podman's default
// network through its CNI backend (Debian's bridge plugin) and through
// netavark, each against the same podman with --network none in the same
// round: a network's cost is the median of the rounds' differences, which
// the machine's drift from round to round does not move. The peers
// run in a mount namespace of their own per call, with the test's
// directories over /var/lib/cni and /run/containers, where their IPAM
// keeps its state, so that nothing of theirs lands on the host.
func podmanBench(t *testing.T, runs int) (hook, cni, netavark figures) {
	requireRoot(t, "podman", "/usr/lib/podman/netavark")
	sb := newSandbox(t)
	withHook := newPodman(t, sb)
	backend := func(name string) func(args ...string) (string, error) {
		dir, err := os.MkdirTemp("", "podman-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		for _, d := range []string{"cni", "containers", "networks"} {
			os.Mkdir(filepath.Join(dir, d), 0o700)
		}
		script := `set -e
mount --make-rprivate /
mkdir -p /var/lib/cni /run/containers
mount --bind "$D/cni" /var/lib/cni
mount --bind "$D/containers" /run/containers
exec "$@"`
		isolated := func(args ...string) *exec.Cmd {
			c := sb.cmd(append([]string{"unshare", "-m", "sh", "-c", script, "sh"}, args...)...)
			c.Env = append(os.Environ(), "D="+dir)
			return c
		}
		return podmanWith(t, isolated, dir, filepath.Join(dir, "no-hooks"), "--network-backend", name, "--network-config-dir", filepath.Join(dir, "networks"))
	}
	viaCNI, viaNetavark := backend("cni"), backend("netavark")
	run := []string{"run", "--rm", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=1024:1024"}
	time1 := func(podman func(...string) (string, error), args ...string) time.Duration {
		start := time.Now()
		if out, err := podman(append(append(slices.Clone(run), args...), "localhost/bridgehook-test", "true")...); err != nil {
			t.Fatalf("podman %v: %v\n%s", args, err, out)
		}
		return time.Since(start)
	}
	for i := -1; i < runs; i++ { // the first round warms every path up
		round := [][2]time.Duration{
			{time1(withHook, "--network", "none", "--annotation", "bridgehook.enable=true"), time1(withHook, "--network", "none")},
			{time1(viaCNI), time1(viaCNI, "--network", "none")},
			{time1(viaNetavark), time1(viaNetavark, "--network", "none")},
		}
		if i < 0 {
			continue
		}
		for j, f := range []*figures{&hook, &cni, &netavark} {
			*f = append(*f, round[j][0]-round[j][1])
		}
	}
	return hook, cni, netavark
}
