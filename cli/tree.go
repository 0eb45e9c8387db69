package cli

import "github.com/spf13/cobra"

// commands are the commands under the root, each with its help.
func (e *env) commands() []*cobra.Command {
	cmds := e.hookCommands()
	cmds = append(cmds, e.networkCommands()...)
	return append(cmds, e.serviceCommands()...)
}

// networkCommands look after the networks and their containers.
func (e *env) networkCommands() []*cobra.Command {
	ls := &cobra.Command{
		Use:   "ls",
		Short: "list networks and their endpoints",
		Long: `Lists the network's endpoints: IP, CONTAINER, PID, VETH, PORTS, CREATED and
STATUS ("running" while the container's network namespace lives, "stale"
after it died without a poststop; "bridgehook gc" reclaims stale ones).
--all lists every network under --state-dir; --json prints the networks and
their endpoints as JSON.`,
		Example: `  bridgehook ls
  bridgehook ls --all --json | jq '.[].endpoints[].ip'`,
		RunE: e.action(false, runLs),
	}
	ls.Flags().BoolVar(&e.json, "json", false, "print the networks and their endpoints as JSON")
	e.allFlag(ls.Flags())
	gc := &cobra.Command{
		Use:   "gc",
		Short: "reclaim leases, veths and rules of containers that are gone",
		Long: `Brings the lease store and the kernel back into agreement, and prints what
it did: releases leases whose container's network namespace is gone (the
pid is gone, or reused by a process in another namespace); frees the
addresses that teardowns held back until the kernel deleted their veths,
deleting those veths itself if they are still there; rebuilds leases that
the store lost or cannot read from the live veths on the bridge; deletes
veths no lease accounts for, and port rules no lease accounts for; frees
the lease of a setup that was killed before it gave its container a veth.
When it returns, nothing is left of a container that is gone: no lease,
no veth, no rule. Safe to run while hooks run: it leaves setups in
progress alone. --all does every network under --state-dir.`,
		Example: `  bridgehook gc
  bridgehook gc --all    # e.g. from a systemd timer`,
		RunE: e.action(true, runGC),
	}
	e.allFlag(gc.Flags())
	repair := &cobra.Command{
		Use:   "repair",
		Short: "re-create the network's bridge and firewall rules",
		Long: `After something flushed the firewall (a firewalld reload, an
iptables-restore, a restart of nftables.service), repair puts the
network's bridge, address and rules back. Running it again
changes nothing. --all repairs every network under --state-dir, each with
the options (--icc, --internal, --firewall) its rules were installed
with: what the systemd units in systemd/ run. Setups check their
network's rules too, and reinstall them if they are gone, so repair is
for networks where no container starts.

Given a --firewall other than the network's, repair moves its rules to
that backend: out of the old one first, so both never hold them.`,
		Example: `  bridgehook --bridge br1 --subnet 10.88.0.0/24 repair
  bridgehook repair --all
  bridgehook --firewall nftables repair    # move netns0 to nftables`,
		RunE: e.action(true, runRepair),
	}
	e.allFlag(repair.Flags())
	return []*cobra.Command{
		ls,
		{
			Use:   "inspect ID",
			Short: "print one container's endpoint as JSON",
			Long: `Prints the endpoint of container ID as JSON, looking in every network under
--state-dir. Exits 2 if no network knows the id.`,
			Example: "  bridgehook inspect web-1",
			RunE:    e.action(false, runInspect),
		},
		gc,
		repair,
		{
			Use:   "network rm",
			Short: "remove the network's bridge, rules and store when unused",
			Long: `Removes the network's bridge, its firewall rules and its lease store. It
refuses, naming them, while containers with live network namespaces hold
leases.`,
			Example: "  bridgehook --bridge br1 --subnet 10.88.0.0/24 network rm",
			RunE:    e.action(true, runNetwork),
		},
	}
}

// hookCommands are the hook face by name: what it does by the state's
// status, said explicitly.
func (e *env) hookCommands() []*cobra.Command {
	hookLong := `As a hook, bridgehook reads the container state the runtime writes on stdin
and decides from its "status": "creating", "created" or "running" sets the
container up, "stopped" tears it down. "setup" and "teardown" say so
explicitly. Setup leases an address, creates the bridge and its firewall
rules if missing, and gives the container eth0 with a default route via the
gateway; teardown releases the container's lease and deletes its veth, or,
once the container has exited, leaves the veth to the kernel, which
deletes it with the container's namespace (the address is not handed out
again until it has). A teardown of an unknown id succeeds: poststop may
run twice, or after a failed create.`
	return []*cobra.Command{
		{
			Use:   "setup < state.json",
			Short: "read the OCI state on stdin and set the container up",
			Long:  hookLong,
			Example: `  bridgehook --bridge br1 --subnet 10.88.0.0/24 setup < state.json
  echo '{"id":"c1","pid":4242,"status":"creating"}' | bridgehook`,
			RunE: e.action(true, runHook),
		},
		{
			Use:     "teardown < state.json",
			Short:   "read the OCI state on stdin and tear the container down",
			Long:    hookLong,
			Example: `  echo '{"id":"c1","status":"stopped"}' | bridgehook teardown`,
			RunE:    e.action(true, runHook),
		},
	}
}

// serviceCommands run beside the hooks, and tell about the binary.
func (e *env) serviceCommands() []*cobra.Command {
	return []*cobra.Command{
		{
			Use:   "watch",
			Short: "repair every network each time firewalld reloads or restarts",
			Long: `Waits on the system bus for firewalld: each time it reloads
(firewall-cmd --reload) or starts again, which flush the rules it did not
make, runs what "repair --all" runs, and says what it repaired. It runs
until the bus goes; systemd/bridgehook-firewalld.service runs it. Give it
the --state-dir your hooks use, if not the default.`,
			Example: "  bridgehook watch",
			RunE:    e.action(true, runWatch),
		},
		{
			Use:   "dns",
			Short: "serve the names of the networks that have --names",
			Long: `The name server of the networks under --state-dir that have --names: on
each one's gateway addresses, port 53, UDP and TCP, it answers the names
of that network's containers (id, hostname, name, aliases; A, AAAA and
PTR) and forwards other names to the --dns servers, then the host's. The
first setup that needs it starts it; it ends when no network with names
has a container. systemd/bridgehook-dns.service runs it at boot.`,
			Example: "  bridgehook dns --debug",
			RunE:    e.action(true, runDNS),
		},
		{
			Use:   "version",
			Short: "print the version",
			Long:  "Prints the module version and the VCS revision it was built from.",
			RunE:  e.action(false, runVersion),
		},
	}
}
