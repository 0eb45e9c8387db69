package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// listenOnHost holds a port in the sandbox host's namespace, as a host
// service would, until the test ends: network is tcp or udp (dual-stack
// on [::], as most servers bind), tcp4 or udp4.
func (s *sandbox) listenOnHost(t *testing.T, network, addr string) {
	t.Helper()
	var closer interface{ Close() error }
	var err error
	inNetns(t, s.ns, func() {
		if strings.HasPrefix(network, "udp") {
			closer, err = net.ListenPacket(network, addr)
		} else {
			closer, err = net.Listen(network, addr)
		}
	})
	if err != nil {
		t.Fatalf("listen on %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { closer.Close() })
}

// TestHostPortsInUse: a host port that a service on the host holds is
// refused, on its address and on the wildcard covering it, TCP and UDP,
// both families, every port of a range, through both faces; the refusal
// leaves nothing. A free port, and the same port on another address, are
// published.
func TestHostPortsInUse(t *testing.T) {
	sb := newSandbox(t)
	sb.listenOnHost(t, "tcp4", "0.0.0.0:8001")
	sb.listenOnHost(t, "tcp4", "127.0.0.1:8002")
	sb.listenOnHost(t, "tcp", "[::]:8003")
	sb.listenOnHost(t, "udp4", "0.0.0.0:8004")
	sb.listenOnHost(t, "udp4", "127.0.0.1:8005")
	sb.listenOnHost(t, "udp", "[::]:8006")
	pid := sb.container()
	with := func(ports string) string {
		return fmt.Sprintf(`{"ociVersion":"1.0.2","id":"x","pid":%d,"status":"creating","annotations":{"bridgehook.ports":%q}}`, pid, ports)
	}
	dual := []string{"--subnet", "172.19.0.0/16", "--subnet", "fd19::/64"}
	for _, tc := range []struct {
		ports string
		args  []string
		want  string
	}{
		{"8001:80", nil, "host port 8001/tcp on 0.0.0.0 (every address) is in use by a process on the host"},
		{"127.0.0.1:8001:80", nil, "host port 8001/tcp on 127.0.0.1 is in use"},
		{"8002:80", nil, "host port 8002/tcp on 0.0.0.0 (every address) is in use"},
		{"127.0.0.1:8002:80", nil, "host port 8002/tcp on 127.0.0.1 is in use"},
		{"8003:80", nil, "host port 8003/tcp on 0.0.0.0 (every address) is in use"}, // [::] holds IPv4 too
		{"8003:80", dual, "host port 8003/tcp on 0.0.0.0 (every address) is in use"},
		{"[fd19::99]:8003:80", dual, "host port 8003/tcp on fd19::99 is in use"},
		{"8004:53/udp", nil, "host port 8004/udp on 0.0.0.0 (every address) is in use"},
		{"8005:53/udp", nil, "host port 8005/udp on 0.0.0.0 (every address) is in use"},
		{"127.0.0.1:8005:53/udp", nil, "host port 8005/udp on 127.0.0.1 is in use"},
		{"8006:53/udp", dual, "host port 8006/udp on 0.0.0.0 (every address) is in use"},
		{"7990-8010:7990-8010", nil, "host port 8001/tcp on 0.0.0.0"},
		{"9000:90, 8005:53/udp", nil, "host port 8005/udp"},
	} {
		t.Run(tc.ports+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			sb.refused(t, with(tc.ports), tc.args, "annotation bridgehook.ports: "+tc.want)
		})
	}
	// Free ports are published: another port, the other protocol, and
	// the same port on another address than the service's.
	for _, ports := range []string{"9000:90", "8001:80/udp", "8004:53", "10.0.0.1:8002:80"} {
		if _, err := sb.hook(with(ports)); err != nil {
			t.Errorf("%s: %v", ports, err)
		}
		sb.mustHook(stopState("x"))
	}

	// Through CNI: code 7, naming the capability.
	w := newCNIWorld(t, sb)
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"bhnet","type":"bridgehook","stateDir":%q,
		"runtimeConfig":{"portMappings":[{"hostPort":8002,"containerPort":80,"protocol":"tcp"}]}}`, sb.stateDir)
	out, code := sb.cniExec(conf, "ADD", "pod1", w.netns(t), "eth0")
	var e types.Error
	if code != 1 || json.Unmarshal([]byte(out), &e) != nil || e.Code != types.ErrInvalidNetworkConfig ||
		!strings.Contains(e.Msg, "runtimeConfig.portMappings: host port 8002/tcp on 0.0.0.0 (every address) is in use") {
		t.Errorf("CNI ADD of a port in use: exit %d %s", code, out)
	}
	if ids, veths := sb.leaseIDs(), sb.veths(); len(ids)+len(veths) != 0 {
		t.Errorf("the refused ADD left leases %v, veths %v", ids, veths)
	}
}
