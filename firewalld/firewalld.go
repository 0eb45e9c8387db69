// Package firewalld makes bridgehook a well-behaved tenant of firewalld,
// over its D-Bus API (github.com/godbus/dbus/v5), as Docker and netavark
// are: a zone "bridgehook" with target ACCEPT holds each network's bridge,
// so that containers reach each other and the outside, and a policy
// "bridgehook-ports" from any zone into it lets published ports' DNAT'd
// traffic in. Both are permanent and applied at runtime, so a reload or a
// reboot keeps them, and both go with the last network.
//
// Without firewalld nothing here makes a D-Bus connection: Running looks
// for its process first.
package firewalld

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// The zone and the policy bridgehook keeps in firewalld.
const (
	Zone   = "bridgehook"
	Policy = "bridgehook-ports"
)

const (
	busName    = "org.fedoraproject.FirewallD1"
	objectPath = "/org/fedoraproject/FirewallD1"
	configPath = "/org/fedoraproject/FirewallD1/config"
	iface      = "org.fedoraproject.FirewallD1"
)

// systemBus is where the system bus listens unless DBUS_SYSTEM_BUS_ADDRESS
// says otherwise.
var systemBus = []string{"/run/dbus/system_bus_socket", "/var/run/dbus/system_bus_socket"}

// Running reports whether a process named firewalld runs on the host:
// without one, no D-Bus connection is worth making. (Dial then asks the
// bus who owns firewalld's name.) firewalld lives on the system bus, so
// without one there is none, and /proc is not read: that read is a file
// per process, 3 ms of a cold setup here.
func Running() bool {
	if !busExists(os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"), systemBus) {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "firewalld" {
			return true
		}
	}
	return false
}

// busExists reports whether a system bus may be there: one named by
// address, or a socket at one of the usual paths.
func busExists(address string, paths []string) bool {
	if address != "" {
		return true
	}
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.Mode()&os.ModeSocket != 0 {
			return true
		}
	}
	return false
}

// Conn is a connection to firewalld on the system bus.
type Conn struct{ bus *dbus.Conn }

// ErrNotRunning says firewalld's name has no owner on the system bus.
var ErrNotRunning = errors.New("firewalld is not running")

// Dial connects to the system bus and to firewalld on it.
func Dial() (*Conn, error) {
	bus, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("%w: system bus: %v", ErrNotRunning, err)
	}
	var owned bool
	if err := bus.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, busName).Store(&owned); err != nil || !owned {
		bus.Close()
		return nil, fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	return &Conn{bus: bus}, nil
}

// Close lets go of the bus.
func (c *Conn) Close() { c.bus.Close() }

func (c *Conn) call(path dbus.ObjectPath, method string, out any, args ...any) error {
	call := c.bus.Object(busName, path).Call(method, 0, args...)
	if call.Err != nil {
		return fmt.Errorf("firewalld %s: %w", method[strings.LastIndexByte(method, '.')+1:], call.Err)
	}
	if out != nil {
		return call.Store(out)
	}
	return nil
}

// Join puts bridge in the zone, permanently and at runtime, making the
// zone and the policy first if they are not there (and reloading
// firewalld, which is how a permanent zone comes to be at runtime: the
// caller installs its rules after this). A bridge the administrator put in
// another zone stays there.
func (c *Conn) Join(bridge string) (reloaded bool, err error) {
	if reloaded, err = c.ensureZoneAndPolicy(); err != nil {
		return reloaded, err
	}
	var permanent string
	if err := c.call(configPath, iface+".config.getZoneOfInterface", &permanent, bridge); err != nil {
		return reloaded, err
	}
	if permanent == "" {
		zone, err := c.zoneConfig(Zone)
		if err != nil {
			return reloaded, err
		}
		if err := c.call(zone, iface+".config.zone.addInterface", nil, bridge); err != nil {
			return reloaded, err
		}
	}
	var runtime string
	if err := c.call(objectPath, iface+".zone.getZoneOfInterface", &runtime, bridge); err != nil {
		return reloaded, err
	}
	if runtime == "" {
		return reloaded, c.call(objectPath, iface+".zone.addInterface", nil, Zone, bridge)
	}
	return reloaded, nil
}

// ensureZoneAndPolicy makes the permanent zone and policy if missing, and
// reloads firewalld to apply them.
func (c *Conn) ensureZoneAndPolicy() (reloaded bool, err error) {
	var zones, policies []string
	if err := c.call(configPath, iface+".config.getZoneNames", &zones); err != nil {
		return false, err
	}
	if err := c.call(configPath, iface+".config.getPolicyNames", &policies); err != nil {
		return false, err
	}
	made := false
	if !slices.Contains(zones, Zone) {
		settings := map[string]dbus.Variant{
			"short":       dbus.MakeVariant("bridgehook"),
			"description": dbus.MakeVariant("Bridges of bridgehook's container networks: their containers reach each other and beyond."),
			"target":      dbus.MakeVariant("ACCEPT"),
		}
		if err := c.call(configPath, iface+".config.addZone2", nil, Zone, settings); err != nil {
			return false, err
		}
		made = true
	}
	if !slices.Contains(policies, Policy) {
		settings := map[string]dbus.Variant{
			"short":         dbus.MakeVariant("bridgehook published ports"),
			"description":   dbus.MakeVariant("Traffic to bridgehook's containers from any zone: their published ports, DNAT'd."),
			"ingress_zones": dbus.MakeVariant([]string{"ANY"}),
			"egress_zones":  dbus.MakeVariant([]string{Zone}),
			"target":        dbus.MakeVariant("ACCEPT"),
		}
		if err := c.call(configPath, iface+".config.addPolicy", nil, Policy, settings); err != nil {
			return false, err
		}
		made = true
	}
	if !made {
		return false, nil
	}
	return true, c.Reload()
}

func (c *Conn) zoneConfig(name string) (dbus.ObjectPath, error) {
	var path dbus.ObjectPath
	err := c.call(configPath, iface+".config.getZoneByName", &path, name)
	return path, err
}

// Leave takes bridge out of the zone, permanently and at runtime; with no
// bridge left in it, the zone and the policy go too (a reload applies
// that: the caller is removing the last network).
func (c *Conn) Leave(bridge string) (reloaded bool, err error) {
	var runtime string
	if err := c.call(objectPath, iface+".zone.getZoneOfInterface", &runtime, bridge); err != nil {
		return false, err
	}
	if runtime == Zone {
		if err := c.call(objectPath, iface+".zone.removeInterface", nil, Zone, bridge); err != nil {
			return false, err
		}
	}
	var zones []string
	if err := c.call(configPath, iface+".config.getZoneNames", &zones); err != nil || !slices.Contains(zones, Zone) {
		return false, err
	}
	zone, err := c.zoneConfig(Zone)
	if err != nil {
		return false, err
	}
	var members []string
	if err := c.call(zone, iface+".config.zone.getInterfaces", &members); err != nil {
		return false, err
	}
	if slices.Contains(members, bridge) {
		if err := c.call(zone, iface+".config.zone.removeInterface", nil, bridge); err != nil {
			return false, err
		}
		members = slices.DeleteFunc(members, func(m string) bool { return m == bridge })
	}
	if len(members) > 0 {
		return false, nil
	}
	var policy dbus.ObjectPath
	if err := c.call(configPath, iface+".config.getPolicyByName", &policy, Policy); err == nil {
		if err := c.call(policy, iface+".config.policy.remove", nil); err != nil {
			return false, err
		}
	}
	if err := c.call(zone, iface+".config.zone.remove", nil); err != nil {
		return false, err
	}
	return true, c.Reload()
}

// Reload reloads firewalld: its permanent configuration becomes its
// runtime one.
func (c *Conn) Reload() error { return c.call(objectPath, iface+".reload", nil) }

// Watch calls repair each time firewalld has reloaded, or has started (or
// restarted) and is running, until the bus goes. It returns the error
// that ended it.
func Watch(repair func(why string)) error {
	bus, err := dbus.ConnectSystemBus()
	if err != nil {
		return fmt.Errorf("system bus: %w", err)
	}
	defer bus.Close()
	if err := bus.AddMatchSignal(dbus.WithMatchInterface(iface), dbus.WithMatchMember("Reloaded")); err != nil {
		return fmt.Errorf("watch firewalld's reloads: %w", err)
	}
	if err := bus.AddMatchSignal(dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(0, busName)); err != nil {
		return fmt.Errorf("watch firewalld's restarts: %w", err)
	}
	signals := make(chan *dbus.Signal, 16)
	bus.Signal(signals)
	for s := range signals {
		switch {
		case s.Name == iface+".Reloaded":
			repair("firewalld reloaded")
		case len(s.Body) == 3 && s.Body[2] != "":
			// A new owner: firewalld (re)started. Its rules go in before
			// it says it is running; ours go after them.
			waitRunning(bus)
			repair("firewalld started")
		}
	}
	return errors.New("system bus closed")
}

// waitRunning waits, for up to ten seconds, for firewalld's state to be
// RUNNING.
func waitRunning(bus *dbus.Conn) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		v, err := bus.Object(busName, objectPath).GetProperty(iface + ".state")
		if err == nil && v.Value() == "RUNNING" {
			return
		}
	}
}
