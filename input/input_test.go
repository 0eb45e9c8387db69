package input

import (
	"errors"
	"fmt"
	"testing"
)

func TestRender(t *testing.T) {
	flags := func(f Field) string {
		if f == Netns {
			return ""
		}
		return "--" + string(f)
	}
	for _, tc := range []struct {
		err       error
		neutral   string
		flag      string
		input     bool
		unwrapsTo error
	}{
		{Errorf(Subnet, "%s: too small", "10.0.0.0/31"), "subnet 10.0.0.0/31: too small", "--subnet 10.0.0.0/31: too small", true, nil},
		{Errorf(Subnet, ": missing"), "subnet: missing", "--subnet: missing", true, nil},
		{Errorf(Subnet, "::1/128: loopback"), "subnet ::1/128: loopback", "--subnet ::1/128: loopback", true, nil},
		{Errorf(Netns, ": pid 0; want one"), "netns: pid 0; want one", "pid 0; want one", true, nil},
		{Errorf("", "no {mtu} below {subnet}"), "no mtu below subnet", "no --mtu below --subnet", true, nil},
		{fmt.Errorf("setup c1: %w", &Error{Field: Firewall, Msg: "pf: no", Run: "bridgehook --firewall x repair"}),
			"setup c1: firewall pf: no (run: bridgehook --firewall x repair)", "setup c1: --firewall pf: no (run: bridgehook --firewall x repair)", true, nil},
		{Explain(errBoom, "%v (use a larger {subnet})", errBoom), "boom (use a larger subnet)", "boom (use a larger --subnet)", false, errBoom},
		{errBoom, "boom", "boom", false, errBoom},
	} {
		if got := tc.err.Error(); got != tc.neutral {
			t.Errorf("Error() = %q, want %q", got, tc.neutral)
		}
		if got := Render(tc.err, flags); got != tc.flag {
			t.Errorf("Render = %q, want %q", got, tc.flag)
		}
		if errors.Is(tc.err, Err) != tc.input {
			t.Errorf("%q: errors.Is(Err) = %v", tc.err, !tc.input)
		}
		if tc.unwrapsTo != nil && !errors.Is(tc.err, tc.unwrapsTo) {
			t.Errorf("%q does not unwrap to its cause", tc.err)
		}
	}
}

var errBoom = errors.New("boom")
