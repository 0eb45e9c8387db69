package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"

	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridgehook/bridgehook/cli"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bridgehook/bridgehook/cni"
	"github.com/bridgehook/bridgehook/hook"
	"github.com/bridgehook/bridgehook/input"
	"github.com/bridgehook/bridgehook/internal/fake"
	"github.com/bridgehook/bridgehook/ipam"
	"github.com/bridgehook/bridgehook/oci"
	"github.com/bridgehook/bridgehook/port"
)

// Long functions hide their steps: none in the code (tests aside) is over
// 80 lines.
func TestNoFunctionIsLongerThan80Lines(t *testing.T) {
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != "." {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok {
				if n := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1; n > 80 {
					t.Errorf("%s: %s is %d lines; split it", path, fn.Name.Name, n)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every refusal the core makes, shown by each face: the hook's in flags
// and annotations, CNI's in keys, capabilities and its environment, and
// neither in the other's words. A command to run, "(run: bridgehook
// ...)", is the CLI's in both.
func TestEachFaceNamesSettingsInItsOwnWords(t *testing.T) {
	var refusals []error
	bad := map[string]func(*hook.Config){
		"bridge":  func(c *hook.Config) { c.Bridge = "a b" },
		"iface":   func(c *hook.Config) { c.Iface = "" },
		"mtu":     func(c *hook.Config) { c.MTU = 100 },
		"mtu6":    func(c *hook.Config) { c.Subnets, c.MTU = []netip.Prefix{netip.MustParsePrefix("fd19::/64")}, 1279 },
		"subnets": func(c *hook.Config) { c.Subnets = nil },
		"order": func(c *hook.Config) {
			c.Subnets = []netip.Prefix{netip.MustParsePrefix("fd19::/64"), netip.MustParsePrefix("10.0.0.0/24")}
		},
		"nomasq":   func(c *hook.Config) { c.NonMasquerade = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")} },
		"firewall": func(c *hook.Config) { c.Firewall = "pf" },
		"statedir": func(c *hook.Config) { c.StateDir = "run" },
	}
	for _, mod := range bad {
		c := hook.Defaults()
		mod(&c)
		refusals = append(refusals, c.Check())
	}
	for _, s := range []string{"10.0.0.1/24", "nonsense", "224.0.0.0/8", "fe80::/64", "127.0.0.0/8", "::/0", "10.0.0.0/31", "fd00::/121"} {
		_, err := hook.ParseSubnet(s)
		refusals = append(refusals, err)
	}
	internal, v6 := hook.Defaults(), hook.Defaults()
	internal.Internal = true
	v6.Subnets = []netip.Prefix{netip.MustParsePrefix("fd19::/64")}
	for _, tc := range []struct {
		c   hook.Config
		req hook.Request
	}{
		{internal, hook.Request{ID: "a", Netns: hook.Netns{PID: 5}, Ports: port.MustParse("80:80")}},
		{v6, hook.Request{ID: "a", Netns: hook.Netns{PID: 5}, Ports: port.MustParse("10.0.0.1:80:80")}},
		{v6, hook.Request{ID: "a", Netns: hook.Netns{PID: 5}, IP: netip.MustParseAddr("10.0.0.1")}},
		{hook.Defaults(), hook.Request{ID: "a", Netns: hook.Netns{PID: 5}, IP6: netip.MustParseAddr("fd19::1")}},
		{hook.Defaults(), hook.Request{ID: "a", Netns: hook.Netns{PID: 5}, MAC: []byte{1, 2, 3, 4, 5, 6}}},
		{hook.Defaults(), hook.Request{ID: "a b", Netns: hook.Netns{PID: 5}}},
		{hook.Defaults(), hook.Request{ID: "a/b c", Netns: hook.Netns{Path: "/x"}}},
		{hook.Defaults(), hook.Request{ID: "a"}},
	} {
		refusals = append(refusals, tc.req.Check(tc.c))
	}
	refusals = append(refusals, refusalsOfTheCore(t)...)

	foreign := map[string][]string{ // words the other face uses
		"hook": {`"bridge"`, `"subnet"`, `"mtu"`, `"stateDir"`, `"nonMasqueradeCIDRs"`, `"firewall"`, `"internal"`, "runtimeConfig", "CNI_"},
		"cni":  {"annotation bridgehook", "--"},
	}
	for _, err := range refusals {
		if err == nil {
			t.Fatal("a refusal refused nothing")
		}
		var in *input.Error
		if !errors.As(err, &in) {
			t.Errorf("%v: not an input.Error", err)
			continue
		}
		for face, spell := range map[string]func(input.Field) string{"hook": oci.Spell, "cni": cni.Spell} {
			msg := input.Render(err, spell)
			if in.Field != "" && spell(in.Field) != "" && !strings.Contains(msg, spell(in.Field)) {
				t.Errorf("%s face: %q does not name %s as %s", face, msg, in.Field, spell(in.Field))
			}
			if strings.Contains(msg, "{") {
				t.Errorf("%s face: %q has a field left unspelt", face, msg)
			}
			msg, _, _ = strings.Cut(msg, "(run: ")
			for _, w := range foreign[face] {
				if strings.Contains(msg, w) {
					t.Errorf("%s face: %q has the other face's %s", face, msg, w)
				}
			}
		}
	}
}

// refusalsOfTheCore are refusals that need a network: made over the
// fakes of package fake.
func refusalsOfTheCore(t *testing.T) []error {
	sys := fake.NewSystem()
	host, fw := fake.NewHost(sys, fake.Fails{}), fake.NewFirewall(fake.Fails{})
	opts := []hook.Option{hook.WithHost(host), hook.WithFirewall(fw), hook.WithGuard(fake.NewGuard(fake.Fails{})), hook.WithTenant(nil), hook.WithStores(&ipam.Memories{}), hook.WithSystem(sys)}
	c := hook.Defaults()
	c.Subnets, c.StateDir = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/30")}, t.TempDir()
	join := func(c hook.Config, id string, pid int, f func(*hook.Request)) error {
		req := hook.Request{ID: id, Netns: hook.Netns{PID: sys.Container(pid)}}
		if f != nil {
			f(&req)
		}
		_, err := hook.Join(c, req, opts...)
		return err
	}
	if err := join(c, "first", 10, func(r *hook.Request) { r.Ports = port.MustParse("8080:80") }); err != nil {
		t.Fatal(err)
	}
	nft, dual := c, c
	nft.Firewall = "nftables"
	dual.Subnets = append(dual.Subnets, netip.MustParsePrefix("fd19::/64"))
	return []error{
		join(c, "taken", 11, func(r *hook.Request) { r.IP = netip.MustParseAddr("10.9.0.2") }),
		join(c, "outside", 12, func(r *hook.Request) { r.IP = netip.MustParseAddr("10.8.0.2") }),
		join(c, "clash", 13, func(r *hook.Request) { r.Ports = port.MustParse("8080:81") }),
		join(c, "first", 14, nil),
		join(nft, "other", 15, nil),
		join(dual, "dual", 16, nil),
		join(c, "nopid", -1, nil),
	}
}

// The hook page's flag table is --help's flags: every flag of every command
// has its row, no row names a flag that is gone, and a default the table
// gives in code spelling is the one --help gives.
func TestTheFlagTableIsTheHelp(t *testing.T) {
	readme, err := os.ReadFile("docs/hook.md")
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]string{} // flag -> its default as the table gives it
	name := regexp.MustCompile("`--([a-z-]+)`")
	for _, line := range strings.Split(string(readme), "\n") {
		cols := strings.Split(line, "|")
		if !strings.HasPrefix(line, "| `--") || len(cols) < 4 {
			continue
		}
		for _, m := range name.FindAllStringSubmatch(cols[1], -1) {
			table[m[1]] = strings.TrimSpace(cols[2])
		}
	}
	help := map[string]*pflag.Flag{}
	var visit func(c *cobra.Command)
	visit = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) { help[f.Name] = f })
		for _, sub := range c.Commands() {
			if sub.Name() != "completion" {
				visit(sub)
			}
		}
	}
	visit(cli.Root())
	delete(help, "help")
	for n, f := range help {
		def, ok := table[n]
		switch {
		case !ok:
			t.Errorf("--%s is not in docs/hook.md's flag table", n)
		case strings.HasPrefix(def, "`") && f.DefValue != "" && def != "`"+f.DefValue+"`":
			t.Errorf("--%s: the table's default is %s, --help's %q", n, def, f.DefValue)
		}
	}
	for n := range table {
		if help[n] == nil {
			t.Errorf("docs/hook.md's flag table has --%s, which no command takes", n)
		}
	}
}

// The CNI page's table of flag, key and annotation is the faces' own
// spelling of each setting (oci.Spell, cni.Spell): row for row.
func TestTheCNITableIsTheCode(t *testing.T) {
	page, err := os.ReadFile("docs/cni.md")
	if err != nil {
		t.Fatal(err)
	}
	cell := func(s string) string {
		if s == "" {
			return "—"
		}
		return "`" + s + "`"
	}
	var want []string
	for _, f := range input.Fields {
		want = append(want, fmt.Sprintf("| %s | %s |", cell(oci.Spell(f)), cell(cni.Spell(f))))
	}
	var got []string
	for _, line := range strings.Split(string(page), "\n") {
		if strings.HasPrefix(line, "| `") || strings.HasPrefix(line, "| —") {
			got = append(got, line)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("docs/cni.md's table is\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
