package hook

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/port"
)

// Request.Check refuses what the network cannot give, whichever face
// built the request, naming the setting.
func TestRequestCheck(t *testing.T) {
	v4 := Defaults()
	v6 := Defaults()
	v6.Subnets = []netip.Prefix{netip.MustParsePrefix("fd19::/64")}
	internal := Defaults()
	internal.Internal = true
	ok := Request{ID: "a", Netns: Netns{PID: 5}}
	with := func(f func(*Request)) Request { r := ok; f(&r); return r }
	for name, tc := range map[string]struct {
		c     Config
		req   Request
		field input.Field
	}{
		"bad id":          {v4, with(func(r *Request) { r.ID = "a b" }), input.ID},
		"bad CNI ifname":  {v4, with(func(r *Request) { r.ID = "a/b c" }), input.Iface},
		"no namespace":    {v4, with(func(r *Request) { r.Netns = Netns{} }), input.Netns},
		"two namespaces":  {v4, with(func(r *Request) { r.Netns.Path = "/x" }), input.Netns},
		"internal ports":  {internal, with(func(r *Request) { r.Ports = port.MustParse("80:80") }), input.Ports},
		"IPv6 host addr":  {v4, with(func(r *Request) { r.Ports = port.MustParse("[2001:db8::1]:80:80") }), input.Ports},
		"IPv4 on IPv6":    {v6, with(func(r *Request) { r.IP = netip.MustParseAddr("10.0.0.1") }), input.IP},
		"IPv6 as IP":      {v4, with(func(r *Request) { r.IP = netip.MustParseAddr("fd19::1") }), input.IP},
		"IPv6 on IPv4":    {v4, with(func(r *Request) { r.IP6 = netip.MustParseAddr("fd19::1") }), input.IP6},
		"multicast MAC":   {v4, with(func(r *Request) { r.MAC = []byte{1, 0, 0x5e, 0, 0, 1} }), input.MAC},
		"short MAC":       {v4, with(func(r *Request) { r.MAC = []byte{2, 0} }), input.MAC},
		"long id":         {v4, with(func(r *Request) { r.ID = strings.Repeat("a", MaxID+1) }), input.ID},
		"dot id":          {v4, with(func(r *Request) { r.ID = ".." }), input.ID},
		"empty id":        {v4, with(func(r *Request) { r.ID = "" }), input.ID},
		"negative pid":    {v4, with(func(r *Request) { r.Netns.PID = -1 }), input.Netns},
		"long CNI ifname": {v4, with(func(r *Request) { r.ID = "a/" + strings.Repeat("e", 16) }), input.Iface},
	} {
		err := tc.req.Check(tc.c)
		var in *input.Error
		if !errors.As(err, &in) || in.Field != tc.field || !errors.Is(err, input.Err) {
			t.Errorf("%s: %v, want bad %s", name, err, tc.field)
		}
	}
	if err := ok.Check(v4); err != nil {
		t.Errorf("a good request: %v", err)
	}
	if s := (Netns{Path: "/run/netns/x"}).String() + " " + (Netns{PID: 7}).String(); s != "/run/netns/x pid 7" {
		t.Errorf("Netns.String: %s", s)
	}
}
