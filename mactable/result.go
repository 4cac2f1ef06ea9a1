package mactable

import "strconv"

// Result says what Learn did.
type Result uint8

const (
	// Refreshed: the MAC was live on this port; its last-seen time moved on.
	Refreshed Result = iota
	// Learned: the MAC is new (or had aged out) and now lives on this port.
	Learned
	// Moved: the MAC was live on another port and now lives on this one.
	Moved
	// TableFull: the MAC was not learned because the table holds Capacity
	// live entries. No other entry was evicted.
	TableFull
	// PortFull: the MAC was not learned (or not moved; it stays on its old
	// port) because this port already holds PortLimit entries.
	PortFull
	// Multicast: the key is a group address and was ignored. Callers may
	// filter with IsMulticastKey first; Learn checks anyway so that a
	// forged group source can never become a unicast destination.
	Multicast
	// OwnerFull: the MAC was not learned (or not moved) because the ports of
	// this port's owner already hold OwnerLimit entries together.
	OwnerFull
	// Conflict: port is the host port (SetHostPort) and the MAC is live on
	// another port, where it stays. The host's side (a bridged LAN, other
	// hosts over VXLAN) never takes a live MAC from a client: one frame
	// from the underlay would otherwise steal a local VM's traffic.
	Conflict
)

var resultNames = [...]string{
	Refreshed: "refreshed",
	Learned:   "learned",
	Moved:     "moved",
	TableFull: "table full",
	PortFull:  "port full",
	Multicast: "multicast",
	OwnerFull: "owner full",
	Conflict:  "conflict",
}

func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "Result(" + strconv.Itoa(int(r)) + ")"
}
