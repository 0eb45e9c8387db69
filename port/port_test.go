package port

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := map[string]string{
		"8080:80":                            "8080:80/tcp",
		"127.0.0.1:5353:53/udp":              "127.0.0.1:5353:53/udp",
		"0.0.0.0:8080:80":                    "8080:80/tcp",
		"9000-9002:7000-7002/sctp":           "9000-9002:7000-7002/sctp",
		" 80:80/tcp , 443:443 ":              "80:80/tcp,443:443/tcp",
		"53:53/udp,53:53/tcp":                "53:53/udp,53:53/tcp",
		"10.0.0.1:80:80,10.0.0.2:80:80":      "10.0.0.1:80:80/tcp,10.0.0.2:80:80/tcp",
		"[2001:db8::1]:8080:80":              "[2001:db8::1]:8080:80/tcp",
		"[::]:53:53/udp":                     "53:53/udp",
		"[2001:db8::1]:80:80,10.0.0.1:80:80": "[2001:db8::1]:80:80/tcp,10.0.0.1:80:80/tcp",
	}
	for in, want := range good {
		ps, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		var got []string
		for _, p := range ps {
			got = append(got, p.String())
		}
		if strings.Join(got, ",") != want {
			t.Errorf("Parse(%q) = %v, want %s", in, got, want)
		}
	}
	bad := map[string]string{
		"":                       "no ports",
		"80":                     "want [HOST_IP:]",
		"80:80/icmp":             "protocol",
		"0:80":                   "not a port number",
		"65536:80":               "not a port number",
		"80-70:80-70":            "backwards",
		"80-82:80-81":            "differ in length",
		"fe80::1:80:80":          "want [HOST_IP:]",
		"host:80:80":             "host address",
		"8080:80,8080:81":        "overlaps",
		"8080-8090:1-11,8085:80": "overlaps",
		"+80:80":                 "not a port number",
		"[::1]:8080:80":          "IPv6 cannot forward loopback traffic",
		"[10.0.0.1]:80:80":       "want an IPv6 address in brackets",
		"[2001:db8::1]80:80":     "want an IPv6 address in brackets",
		"[fe80::1%eth0]:80:80":   "want an IPv6 address in brackets",
		"[2001:db8::1]:1:80:80":  "want [HOST_IP:]",
		"[::]:1.2.3.4:80:80":     "want [HOST_IP:]",
	}
	for in, want := range bad {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

func TestOverlaps(t *testing.T) {
	p := func(s string) Mapping {
		ps, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return ps[0]
	}
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"8080:80", "8080:81", true},
		{"8080:80", "8080:80/udp", false},
		{"10.0.0.1:8080:80", "8080:80", true},
		{"10.0.0.1:8080:80", "10.0.0.2:8080:80", false},
		{"8000-8010:8000-8010", "8010:1", true},
		{"8000-8010:8000-8010", "8011:1", false},
	} {
		if got := p(c.a).Overlaps(p(c.b)); got != c.want {
			t.Errorf("%s overlaps %s = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// FuzzParsePorts checks that whatever parses renders back to something
// that parses to the same thing, and that nothing panics.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../testdata/ports/*")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add("8080:80")
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := Parse(s)
		if err != nil {
			return
		}
		for _, p := range ps {
			again, err := Parse(p.String())
			if err != nil || len(again) != 1 || again[0] != p {
				t.Fatalf("%q parsed to %+v, which renders as %q and parses to %+v, %v", s, p, p.String(), again, err)
			}
			if p.HostEnd < p.HostPort || p.HostPort == 0 || int(p.Container)+int(p.HostEnd-p.HostPort) > 65535 {
				t.Fatalf("%q parsed to an impossible %+v", s, p)
			}
		}
	})
}
