package firewalld

import (
	"net"
	"path/filepath"
	"testing"
)

func TestWithoutASystemBusThereIsNoFirewalld(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "system_bus_socket")
	missing := []string{filepath.Join(dir, "none")}
	if busExists("", missing) {
		t.Error("no socket and no address: a bus")
	}
	if !busExists("unix:path=/elsewhere", missing) {
		t.Error("an address in the environment: no bus")
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !busExists("", append(missing, sock)) {
		t.Error("a socket: no bus")
	}
	if busExists("", []string{dir}) {
		t.Error("a directory taken for a socket")
	}
}
