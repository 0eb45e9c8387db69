package nat

// A fake of the kernel's nftables, over google/nftables' test dial: it
// keeps tables, chains and rules as the transactions left them and
// answers the reads bridgehook makes, so the nftables backend is tested
// without root.

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

type kernel struct {
	tables []*ktable
	handle uint64
	// reads and writes count the requests that read, and the
	// transactions.
	reads, writes int
	// failWrite refuses every transaction with this errno.
	failWrite unix.Errno
	// tableDeletes counts the tables deleted: each waits for the RCU
	// grace period in the kernel.
	tableDeletes int
}

type ktable struct {
	family byte
	name   string
	chains []string
	rules  map[string][]netlink.Message // by chain: NEWRULE messages, with a handle
	sets   map[string][][]byte          // by set: the elements' keys
}

// firewall is an NFTables that talks to k.
func (k *kernel) firewall() *NFTables {
	return &NFTables{c: conn{opts: []nftables.ConnOption{nftables.WithTestDial(k.dial)}}, sysctl: func(string) error { return nil }}
}

func (k *kernel) table(family byte, name string) *ktable {
	for _, t := range k.tables {
		if t.family == family && t.name == name {
			return t
		}
	}
	return nil
}

// attrs reads a message's attributes by type (the nested flag dropped).
func attrs(m netlink.Message) map[uint16][]byte {
	as, _ := netlink.UnmarshalAttributes(m.Data[4:])
	out := map[uint16][]byte{}
	for _, a := range as {
		out[a.Type&^netlink.Nested] = a.Data
	}
	return out
}

func str(b []byte) string { return string(b[:max(len(b)-1, 0)]) } // NUL-terminated

func msgType(m netlink.Message) uint16 { return uint16(m.Header.Type) & 0xff }

func (k *kernel) dial(req []netlink.Message) ([]netlink.Message, error) {
	if len(req) == 0 {
		return nil, io.EOF // no multicast: nothing more to receive
	}
	if uint16(req[0].Header.Type) == unix.NFNL_MSG_BATCH_BEGIN {
		return k.transaction(req[1 : len(req)-1])
	}
	k.reads++
	m := req[0]
	a := attrs(m)
	switch msgType(m) {
	case unix.NFT_MSG_GETTABLE:
		t := k.table(m.Data[0], str(a[unix.NFTA_TABLE_NAME]))
		if t == nil {
			return nltest.Error(int(unix.ENOENT), req)
		}
		use := binary.BigEndian.AppendUint32(nil, uint32(len(t.chains)+len(t.sets)))
		return []netlink.Message{reply(m, unix.NFT_MSG_NEWTABLE, t.family, []netlink.Attribute{
			{Type: unix.NFTA_TABLE_NAME, Data: append([]byte(t.name), 0)},
			{Type: unix.NFTA_TABLE_USE, Data: use},
		})}, nil
	case unix.NFT_MSG_GETCHAIN:
		t := k.table(m.Data[0], str(a[unix.NFTA_TABLE_NAME]))
		chain := str(a[unix.NFTA_CHAIN_NAME])
		if t == nil || !slices.Contains(t.chains, chain) {
			return nltest.Error(int(unix.ENOENT), req)
		}
		return []netlink.Message{reply(m, unix.NFT_MSG_NEWCHAIN, t.family, []netlink.Attribute{
			{Type: unix.NFTA_TABLE_NAME, Data: append([]byte(t.name), 0)},
			{Type: unix.NFTA_CHAIN_NAME, Data: append([]byte(chain), 0)},
		})}, nil
	case unix.NFT_MSG_GETSETELEM:
		t := k.table(m.Data[0], str(a[unix.NFTA_SET_ELEM_LIST_TABLE]))
		name := str(a[unix.NFTA_SET_ELEM_LIST_SET])
		if t == nil || t.sets[name] == nil {
			return nltest.Error(int(unix.ENOENT), req)
		}
		var els []netlink.Attribute
		for _, key := range t.sets[name] {
			els = append(els, netlink.Attribute{Type: unix.NFTA_LIST_ELEM | netlink.Nested, Data: marshal(
				netlink.Attribute{Type: unix.NFTA_SET_ELEM_KEY | netlink.Nested, Data: marshal(netlink.Attribute{Type: unix.NFTA_DATA_VALUE, Data: key})})})
		}
		r := reply(m, unix.NFT_MSG_NEWSETELEM, t.family, []netlink.Attribute{
			{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: append([]byte(t.name), 0)},
			{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: append([]byte(name), 0)},
			{Type: unix.NFTA_SET_ELEM_LIST_ELEMENTS | netlink.Nested, Data: marshal(els...)},
		})
		r.Header.Flags = netlink.Multi
		done := netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi, Sequence: m.Header.Sequence, PID: nltest.PID}, Data: make([]byte, 4)}
		return []netlink.Message{r, done}, nil
	case unix.NFT_MSG_GETRULE:
		// A dump filters: a table or chain that is not there dumps
		// nothing, as the kernel's does.
		var rules []netlink.Message
		if t := k.table(m.Data[0], str(a[unix.NFTA_RULE_TABLE])); t != nil {
			rules = t.rules[str(a[unix.NFTA_RULE_CHAIN])]
		}
		var out []netlink.Message
		for _, r := range rules {
			r.Header = netlink.Header{Type: r.Header.Type, Sequence: m.Header.Sequence, PID: nltest.PID, Flags: netlink.Multi}
			out = append(out, r)
		}
		done := netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi, Sequence: m.Header.Sequence, PID: nltest.PID}, Data: make([]byte, 4)}
		return append(out, done), nil
	}
	return nltest.Error(int(unix.EOPNOTSUPP), req)
}

// reply is a message of type typ answering m.
func reply(m netlink.Message, typ uint16, family byte, as []netlink.Attribute) netlink.Message {
	b, _ := netlink.MarshalAttributes(as)
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Sequence: m.Header.Sequence, PID: nltest.PID},
		Data:   append([]byte{family, 0, 0, 0}, b...),
	}
}

// transaction applies a batch all or nothing, and acknowledges it.
func (k *kernel) transaction(msgs []netlink.Message) ([]netlink.Message, error) {
	k.writes++
	if k.failWrite != 0 {
		return nltest.Error(int(k.failWrite), msgs)
	}
	saved := k.clone()
	for _, m := range msgs {
		if err := k.apply(m); err != 0 {
			k.tables = saved
			return nltest.Error(int(err), []netlink.Message{m})
		}
	}
	ack := netlink.Message{Header: netlink.Header{Type: netlink.Error, Sequence: msgs[len(msgs)-1].Header.Sequence, PID: nltest.PID}, Data: make([]byte, 4)}
	return []netlink.Message{ack}, nil
}

func (k *kernel) apply(m netlink.Message) unix.Errno {
	a := attrs(m)
	family := m.Data[0]
	switch msgType(m) {
	case unix.NFT_MSG_NEWTABLE:
		if k.table(family, str(a[unix.NFTA_TABLE_NAME])) == nil {
			k.tables = append(k.tables, &ktable{family: family, name: str(a[unix.NFTA_TABLE_NAME]), rules: map[string][]netlink.Message{}, sets: map[string][][]byte{}})
		}
	case unix.NFT_MSG_DELTABLE:
		t := k.table(family, str(a[unix.NFTA_TABLE_NAME]))
		if t == nil {
			return unix.ENOENT
		}
		k.tables = slices.DeleteFunc(k.tables, func(o *ktable) bool { return o == t })
		k.tableDeletes++
	case unix.NFT_MSG_NEWCHAIN:
		t := k.table(family, str(a[unix.NFTA_CHAIN_TABLE]))
		if t == nil {
			return unix.ENOENT
		}
		if name := str(a[unix.NFTA_CHAIN_NAME]); !slices.Contains(t.chains, name) {
			t.chains = append(t.chains, name)
		}
	case unix.NFT_MSG_NEWRULE:
		t := k.table(family, str(a[unix.NFTA_RULE_TABLE]))
		chain := str(a[unix.NFTA_RULE_CHAIN])
		if t == nil || !slices.Contains(t.chains, chain) {
			return unix.ENOENT
		}
		k.handle++
		h, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_RULE_HANDLE, Data: binary.BigEndian.AppendUint64(nil, k.handle)}})
		r := netlink.Message{Header: netlink.Header{Type: m.Header.Type}, Data: append(slices.Clone(m.Data), h...)}
		if m.Header.Flags&netlink.Append != 0 {
			t.rules[chain] = append(t.rules[chain], r)
		} else {
			t.rules[chain] = append([]netlink.Message{r}, t.rules[chain]...)
		}
	case unix.NFT_MSG_NEWSET:
		t := k.table(family, str(a[unix.NFTA_SET_TABLE]))
		if t == nil {
			return unix.ENOENT
		}
		if name := str(a[unix.NFTA_SET_NAME]); t.sets[name] == nil {
			t.sets[name] = [][]byte{}
		}
	case unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_DELSETELEM:
		t := k.table(family, str(a[unix.NFTA_SET_ELEM_LIST_TABLE]))
		name := str(a[unix.NFTA_SET_ELEM_LIST_SET])
		if t == nil || t.sets[name] == nil {
			return unix.ENOENT
		}
		for _, key := range keysOf(a[unix.NFTA_SET_ELEM_LIST_ELEMENTS]) {
			has := slices.ContainsFunc(t.sets[name], func(k []byte) bool { return slices.Equal(k, key) })
			switch {
			case msgType(m) == unix.NFT_MSG_NEWSETELEM && !has:
				t.sets[name] = append(t.sets[name], key)
			case msgType(m) == unix.NFT_MSG_DELSETELEM && !has:
				return unix.ENOENT
			case msgType(m) == unix.NFT_MSG_DELSETELEM:
				t.sets[name] = slices.DeleteFunc(t.sets[name], func(k []byte) bool { return slices.Equal(k, key) })
			}
		}
	case unix.NFT_MSG_DELRULE:
		t := k.table(family, str(a[unix.NFTA_RULE_TABLE]))
		chain := str(a[unix.NFTA_RULE_CHAIN])
		if t == nil {
			return unix.ENOENT
		}
		handle := a[unix.NFTA_RULE_HANDLE]
		n := len(t.rules[chain])
		t.rules[chain] = slices.DeleteFunc(t.rules[chain], func(r netlink.Message) bool {
			return slices.Equal(attrs(r)[unix.NFTA_RULE_HANDLE], handle)
		})
		if len(t.rules[chain]) == n {
			return unix.ENOENT
		}
	}
	return 0
}

func (k *kernel) clone() []*ktable {
	var out []*ktable
	for _, t := range k.tables {
		c := &ktable{family: t.family, name: t.name, chains: slices.Clone(t.chains), rules: map[string][]netlink.Message{}, sets: map[string][][]byte{}}
		for ch, rs := range t.rules {
			c.rules[ch] = slices.Clone(rs)
		}
		for name, keys := range t.sets {
			c.sets[name] = slices.Clone(keys)
		}
		out = append(out, c)
	}
	return out
}

// addChain makes table family/name hold chain, as another tool would
// (iptables-nft's FORWARD, say).
func (k *kernel) addChain(family byte, name, chain string) {
	t := k.table(family, name)
	if t == nil {
		t = &ktable{family: family, name: name, rules: map[string][]netlink.Message{}, sets: map[string][][]byte{}}
		k.tables = append(k.tables, t)
	}
	t.chains = append(t.chains, chain)
}

// rules counts the rules of a chain.
func (k *kernel) rules(family byte, table, chain string) int {
	if t := k.table(family, table); t != nil {
		return len(t.rules[chain])
	}
	return -1
}

func marshal(as ...netlink.Attribute) []byte {
	b, _ := netlink.MarshalAttributes(as)
	return b
}

// keysOf reads the keys of a list of set elements.
func keysOf(list []byte) [][]byte {
	var keys [][]byte
	els, _ := netlink.UnmarshalAttributes(list)
	for _, el := range els {
		as, _ := netlink.UnmarshalAttributes(el.Data)
		for _, a := range as {
			if a.Type&^netlink.Nested == unix.NFTA_SET_ELEM_KEY {
				vs, _ := netlink.UnmarshalAttributes(a.Data)
				for _, v := range vs {
					keys = append(keys, v.Data)
				}
			}
		}
	}
	return keys
}

// elements lists the keys of a set, as strings for the eye.
func (k *kernel) elements(family byte, table, set string) []string {
	t := k.table(family, table)
	if t == nil {
		return nil
	}
	var out []string
	for _, key := range t.sets[set] {
		out = append(out, fmt.Sprintf("%x", key))
	}
	return out
}
