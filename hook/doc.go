// Package hook wires containers to networks: it is the only package that
// orchestrates the lease store (ipam), the bridge (bridge), the
// firewall (nat) and the name server (names). The faces over it, the OCI hook (package oci) and the
// CNI plugin (package cni), each hand it one Request and show its Result
// and errors in their own words (package input).
//
// Where to read:
//   - setup.go: what happens when a container starts (Network.Setup) and
//     stops (Network.Teardown), step by step, each step with its undo;
//   - lease.go: a container's lease and host ports, claimed, refused,
//     reclaimed and given back (the addresses themselves are chosen by
//     ipam's alloc.go; the rules a network gets are nat's policy.go);
//   - attach.go: the entry points a face calls (Join, Leave, Check,
//     Collect, Status); ops.go: the commands that look after networks
//     (ls, inspect, gc, repair, network rm);
//   - network.go: Config connected (Open), with its Options: the kernel,
//     firewalls, stores and /proc it drives, real by default;
//   - request.go: what a face asks (Request, Netns), checked; what it
//     gets back is setup.go's Result;
//   - config.go: a network as plain data, checked; record.go: what a
//     setup trusts on the warm path (and what the name server reads of the
//     network); gen.go: when a warm setup trusts nftables by its
//     generation; dns.go: the container's resolv.conf.
package hook
