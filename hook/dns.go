package hook

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/names"
)

// writesResolvConf reports whether the network gives its containers name
// servers, and so a resolv.conf.
func (c Config) writesResolvConf() bool { return len(c.DNS) > 0 || c.HostDNS || c.Names }

// resolvConf renders the file the container gets: the network's name
// server (Names), or the servers given, or the host's; with HostDNS, the
// host's search domains.
func (c Config) resolvConf() ([]byte, error) {
	servers := c.DNS
	var search []string
	if c.HostDNS {
		var hosts []netip.Addr
		hosts, search = names.HostResolvers(hostResolvConfs)
		if len(hosts) == 0 && !c.Names {
			return nil, input.Errorf(input.HostDNS, ": the host has no name server but loopback ones; give {dns} servers instead")
		}
		servers = hosts
	}
	if c.Names {
		servers = c.NameServers()
	}
	var b strings.Builder
	b.WriteString("# written by bridgehook\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	return []byte(b.String()), nil
}

// Where the host's own resolvers are listed (names.HostResolvConfs); a
// variable, for tests.
var hostResolvConfs = names.HostResolvConfs

// writeResolvConf writes /etc/resolv.conf into the container's root
// filesystem. Every path is resolved inside rootfs (openat2 with
// RESOLVE_IN_ROOT): a symlink in the image can never send the write to
// the host's files.
func (c Config) writeResolvConf(rootfs string) error {
	data, err := c.resolvConf()
	if err != nil {
		return err
	}
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("resolv.conf: open root %s: %w", rootfs, err)
	}
	defer unix.Close(root)
	how := func(flags uint64) *unix.OpenHow {
		h := &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
		if flags&unix.O_CREAT != 0 {
			h.Mode = 0o644 // the kernel refuses a mode without O_CREAT
		}
		return h
	}
	if err := unix.Mkdirat(root, "etc", 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("resolv.conf: create etc in %s: %w", rootfs, err)
	}
	etc, err := unix.Openat2(root, "etc", how(unix.O_PATH|unix.O_DIRECTORY))
	if err != nil {
		return fmt.Errorf("resolv.conf: open etc in %s: %w", rootfs, err)
	}
	defer unix.Close(etc)
	fd, err := unix.Openat2(etc, "resolv.conf", how(unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW))
	if errors.Is(err, unix.ELOOP) {
		// A symlink, as images of systemd hosts have: replace it with
		// our file rather than write through it.
		if err := unix.Unlinkat(etc, "resolv.conf", 0); err != nil {
			return fmt.Errorf("resolv.conf: replace symlink in %s: %w", rootfs, err)
		}
		fd, err = unix.Openat2(etc, "resolv.conf", how(unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL))
	}
	if err != nil {
		return fmt.Errorf("resolv.conf: open in %s: %w", rootfs, err)
	}
	f := os.NewFile(uintptr(fd), "resolv.conf")
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("resolv.conf: write in %s: %w", rootfs, err)
	}
	return nil
}
