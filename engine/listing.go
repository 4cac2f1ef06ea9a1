package engine

import (
	"net/netip"
	"sort"
	"time"

	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/secure"
)

// MACEntry is one learned MAC address, as `bridge fdb show` lists it.
type MACEntry struct {
	MAC      [6]byte
	Port     uint32
	PortName string
	Kind     string
	Age      time.Duration // since the MAC was last seen
}

// MACs lists the MAC table, sorted by port then address.
func (e *Engine) MACs() ([]MACEntry, error) {
	var out []MACEntry
	err := e.do(func() {
		e.macs.Walk(e.loops[0].now, func(m mactable.Entry) {
			me := MACEntry{Port: m.Port, Age: m.Age}
			for i := 0; i < 6; i++ {
				me.MAC[i] = byte(m.MAC >> (40 - 8*i))
			}
			if p := e.ports.get(m.Port); p != nil {
				me.PortName, me.Kind = p.name, p.caps.kind
			}
			out = append(out, me)
		})
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Port != out[j].Port {
			return out[i].Port < out[j].Port
		}
		return string(out[i].MAC[:]) < string(out[j].MAC[:])
	})
	return out, err
}

// ClientMACs appends to buf the MACs live on client ports (every port but
// the TAP) and returns it. It walks the table from the caller's goroutine
// (the table allows it) rather than the event loop's, so the daemon may
// call it every second without holding up a frame.
func (e *Engine) ClientMACs(buf [][6]byte) [][6]byte {
	e.macs.Walk(int64(time.Since(e.start)), func(m mactable.Entry) {
		if m.Port == 0 {
			return
		}
		var mac [6]byte
		for i := range mac {
			mac[i] = byte(m.MAC >> (40 - 8*i))
		}
		buf = append(buf, mac)
	})
	return buf
}

// Binding is a secure-mode IP-to-MAC binding: the address belongs to that
// MAC on that port until it ages out or the port goes.
type Binding struct {
	IP   netip.Addr
	MAC  [6]byte
	Port uint32
	// Source is how the address was bound: "first-use" or "range" (a
	// --user-net range of the port's user); secure.Source.
	Source string
	// ExpiresIn is the time left before the binding ends unless its
	// address is used again; 0 when it lasts as long as its port.
	ExpiresIn time.Duration
}

// Bindings lists secure mode's IP-to-MAC bindings (none with -U).
func (e *Engine) Bindings() ([]Binding, error) {
	var out []Binding
	err := e.do(func() {
		now := int64(time.Since(e.start)) // the policy's clock, as of now
		e.policy.Bindings(func(b secure.Binding) {
			var left time.Duration
			if b.Expires != 0 {
				// At least 1ns: one past its end waits for the next sweep,
				// and 0 means no end.
				left = max(time.Duration(b.Expires-now), 1)
			}
			out = append(out, Binding{IP: b.IP, MAC: b.MAC, Port: b.Port, Source: b.Source.String(), ExpiresIn: left})
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out, err
}
