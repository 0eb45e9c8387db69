package hook

import (
	"strings"

	"github.com/bridgehook/bridgehook/input"
)

// MaxID is the longest container id accepted.
const MaxID = 1024

// CheckID accepts the ids runc accepts. An id names files of the lease
// store and labels interfaces, so nothing else may pass.
func CheckID(id string) error {
	switch {
	case id == "":
		return input.Errorf(input.ID, ": missing; want the container id")
	case len(id) > MaxID:
		return input.Errorf(input.ID, "is %d bytes; at most %d allowed", len(id), MaxID)
	case id == "." || id == "..":
		return input.Errorf(input.ID, "%q is not allowed", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return input.Errorf(input.ID, "%q has %q at byte %d; only letters, digits, '_', '-' and '.' are allowed", clip(id), c, i)
		}
	}
	return nil
}

// checkLeaseID checks an id as leases hold them: a container id, or for
// an attachment through CNI, "CONTAINER_ID/IFNAME".
func checkLeaseID(id string) error {
	if cid, ifname, ok := strings.Cut(id, "/"); ok {
		if err := CheckID(cid); err != nil {
			return err
		}
		return checkIfName(input.Iface, ifname)
	}
	return CheckID(id)
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
