module github.com/bridgehook/bridgehook

go 1.26.8

require (
	github.com/coreos/go-iptables v0.8.0
	github.com/gofrs/flock v0.13.1
	github.com/vishvananda/netlink v1.3.1
	github.com/vishvananda/netns v0.0.5
	golang.org/x/sys v0.47.0
)

require github.com/opencontainers/runtime-spec v1.3.0 // indirect
