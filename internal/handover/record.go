package handover

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// Version is the state record's version. A daemon reads only its own
// version: a record of another is refused before anything is adopted, and
// the old daemon keeps serving.
const Version = 1

// Bounds Decode enforces besides MaxRecordBytes: more than any daemon
// has (its --max-clients is at most 65535, its MAC table at most 1<<24).
const (
	MaxRecordBytes  = 64 << 20
	MaxRecordFds    = 1 << 16
	MaxPorts        = 1 << 17
	MaxListeners    = 16
	MaxMACs         = 1 << 24
	MaxBindings     = 1 << 22
	MaxQueued       = 4096    // frames in one port's queue
	MaxFrameBytes   = 1 << 17 // one queued frame, or a stream's unread bytes
	MaxNameBytes    = 4096
	MaxCounterNames = 256
	MaxArgs         = 1024
)

// Record is everything a daemon hands to the next one besides the fds;
// the fds are referred to by their index in the list sent with it (-1:
// none).
type Record struct {
	Version int `json:"version"`
	// Fds is how many descriptors came with the record.
	Fds    int      `json:"fds"`
	Args   []string `json:"args"`
	Daemon Daemon   `json:"daemon"`
	Engine Engine   `json:"engine"`
}

// Daemon is what cmd/vknetd holds around the engine.
type Daemon struct {
	Pidfile   int        `json:"pidfile"`
	Control   int        `json:"control"`
	Metrics   int        `json:"metrics"`
	Listeners []Listener `json:"listeners"`
	TAP       TAP        `json:"tap"`
	// Keeper is the --user keeper's pipe (its write end: closing the last
	// copy tells it to clean up) and pid.
	KeeperAlive int `json:"keeper_alive"`
	// Supervisor is the --supervise supervisor's channel, or -1.
	Supervisor int    `json:"supervisor"`
	KeeperPid  int    `json:"keeper_pid"`
	Restarts   uint64 `json:"restarts"`
	// KernelFilter is secure mode's loaded eBPF filter, nil when the
	// daemon has none (or is older than the field: a record without it
	// still reads).
	KernelFilter *KernelFilter `json:"kernel_filter,omitempty"`
}

// KernelFilter is the loaded socket filter and its drop counter map, so
// that the next daemon, which may not load BPF (--user), uses the same and
// the counts go on.
type KernelFilter struct {
	Program int `json:"program"`
	Drops   int `json:"drops"`
}

// Listener is a client listening socket.
type Listener struct {
	Fd   int    `json:"fd"`
	Kind uint8  `json:"kind"`
	Path string `json:"path"`
	// Dev and Ino are the socket file's, for removing only it at exit.
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// TAP is the device as tap.Adopt needs it.
type TAP struct {
	Fd      int       `json:"fd"`
	Name    string    `json:"name"`
	Index   int       `json:"index"`
	MAC     [6]byte   `json:"mac"`
	HostMAC [6]byte   `json:"host_mac"`
	MTU     int       `json:"mtu"`
	Bridge  string    `json:"bridge"`
	VXLAN   string    `json:"vxlan"`
	VXIndex int       `json:"vx_index"`
	VXMAC   [6]byte   `json:"vx_mac"`
	VnetHdr bool      `json:"vnet_hdr"`
	USO     bool      `json:"uso"`
	Created []Created `json:"created"`
	// Existed: the TAP was there before the first daemon (-t of a
	// persistent TAP); Prefix is the address the daemon gave the host.
	Existed bool         `json:"existed"`
	Prefix  netip.Prefix `json:"prefix"`
}

// Created is a device the first daemon created (tap.Created).
type Created struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	Mark  string `json:"mark"`
}

// Engine is the switch's state.
type Engine struct {
	Accepted  uint64           `json:"accepted"`
	Departed  Counters         `json:"departed"`
	Listeners []ListenerCounts `json:"listeners"`
	Ports     []Port           `json:"ports"`
	MACs      []MAC            `json:"macs"`
	Bindings  []Binding        `json:"bindings"`
}

// ListenerCounts is what a listener counted, in the order of the
// daemon's listeners.
type ListenerCounts struct {
	Unnamed uint64 `json:"unnamed"`
}

// Counters are a port's counts; drops by their listed names, so that a
// reason added or moved in a newer daemon keeps its count.
type Counters struct {
	RxFrames  uint64            `json:"rx_frames"`
	RxBytes   uint64            `json:"rx_bytes"`
	TxFrames  uint64            `json:"tx_frames"`
	TxBytes   uint64            `json:"tx_bytes"`
	Unlearned uint64            `json:"unlearned"`
	Drops     map[string]uint64 `json:"drops,omitempty"`
	Secure    map[string]uint64 `json:"secure,omitempty"`
	GSO       map[string]uint64 `json:"gso,omitempty"`
}

// Port is one port. Kind is the transport's (tap, seqpacket, stream,
// dgram, monitor, vhost-user).
type Port struct {
	ID       uint32   `json:"id"`
	Kind     string   `json:"kind"`
	Name     string   `json:"name"`
	PID      int32    `json:"pid"`
	UID      int32    `json:"uid"`
	Fd       int      `json:"fd"`
	Mirror   bool     `json:"mirror,omitempty"`
	Counters Counters `json:"counters"`
	// Queue is the frames still waiting to be sent to the port, oldest
	// first; TxOff how many bytes of the first a stream has sent already.
	Queue [][]byte `json:"queue,omitempty"`
	TxOff int      `json:"tx_off,omitempty"`
	// Unread is what a stream read and has not cut into frames yet.
	Unread []byte `json:"unread,omitempty"`
	Dgram  *Dgram `json:"dgram,omitempty"`
	// Vhost is a vhost-user guest's device state (vhostuser.State).
	Vhost json.RawMessage `json:"vhost,omitempty"`
}

// Dgram is a datagram client's registration.
type Dgram struct {
	Listener int    `json:"listener"` // index in Daemon.Listeners
	Key      string `json:"key"`
	PathFd   int    `json:"path_fd"`
	Dev      uint64 `json:"dev"`
	Ino      uint64 `json:"ino"`
	Via      bool   `json:"via"`
	IdleNs   int64  `json:"idle_ns"`
}

// MAC is a learned address.
type MAC struct {
	MAC   uint64 `json:"m"`
	Port  uint32 `json:"p"`
	AgeNs int64  `json:"a"`
}

// Binding is a secure-mode binding; LeftNs is the time before it ends
// unless used (0: with its port; -1: never, a lease without end).
type Binding struct {
	IP     netip.Addr `json:"ip"`
	MAC    [6]byte    `json:"mac"`
	Port   uint32     `json:"port"`
	Source uint8      `json:"source"`
	LeftNs int64      `json:"left_ns"`
}

// Encode writes r as the wire's payload.
func Encode(r *Record) ([]byte, error) {
	r.Version = Version
	return json.Marshal(r)
}

// Decode reads a record of nfds descriptors and refuses one that is not
// this version, is larger than its bounds, or refers to descriptors that
// did not come with it or twice to the same one.
func Decode(b []byte, nfds int) (*Record, error) {
	if len(b) > MaxRecordBytes {
		return nil, fmt.Errorf("handover: state record of %d bytes, more than %d", len(b), MaxRecordBytes)
	}
	// The version first, alone: a record of another version may not even
	// have our shape.
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("handover: state record unreadable: %w", err)
	}
	if v.Version != Version {
		return nil, fmt.Errorf("handover: state record version %d, this daemon reads version %d only", v.Version, Version)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("handover: state record unreadable: %w", err)
	}
	if err := r.check(nfds); err != nil {
		return nil, fmt.Errorf("handover: state record refused: %w", err)
	}
	return &r, nil
}

func (r *Record) check(nfds int) error {
	if r.Fds != nfds {
		return fmt.Errorf("it names %d descriptors and %d came", r.Fds, nfds)
	}
	if len(r.Args) > MaxArgs {
		return fmt.Errorf("%d arguments", len(r.Args))
	}
	used := make([]bool, nfds)
	fd := func(what string, i int, required bool) error {
		if i == -1 && !required {
			return nil
		}
		if i < 0 || i >= nfds {
			return fmt.Errorf("%s: descriptor %d of %d", what, i, nfds)
		}
		if used[i] {
			return fmt.Errorf("%s: descriptor %d given twice", what, i)
		}
		used[i] = true
		return nil
	}
	name := func(what, s string) error {
		if len(s) > MaxNameBytes {
			return fmt.Errorf("%s: name of %d bytes", what, len(s))
		}
		return nil
	}
	d := &r.Daemon
	if err := fd("pidfile", d.Pidfile, false); err != nil {
		return err
	}
	if err := fd("control socket", d.Control, true); err != nil {
		return err
	}
	if err := fd("metrics socket", d.Metrics, false); err != nil {
		return err
	}
	if err := fd("keeper", d.KeeperAlive, false); err != nil {
		return err
	}
	if err := fd("supervisor", d.Supervisor, false); err != nil {
		return err
	}
	if k := d.KernelFilter; k != nil {
		if err := fd("kernel filter", k.Program, true); err != nil {
			return err
		}
		if err := fd("kernel filter counters", k.Drops, true); err != nil {
			return err
		}
	}
	if len(d.Listeners) > MaxListeners {
		return fmt.Errorf("%d listeners", len(d.Listeners))
	}
	for _, l := range d.Listeners {
		if err := fd("listener", l.Fd, true); err != nil {
			return err
		}
		if err := name("listener", l.Path); err != nil {
			return err
		}
	}
	if err := fd("TAP", d.TAP.Fd, false); err != nil {
		return err
	}
	if len(d.TAP.Created) > 4 {
		return fmt.Errorf("%d created devices", len(d.TAP.Created))
	}
	e := &r.Engine
	if len(e.Listeners) > MaxListeners {
		return fmt.Errorf("%d listener counts", len(e.Listeners))
	}
	if len(e.Ports) > MaxPorts || len(e.MACs) > MaxMACs || len(e.Bindings) > MaxBindings {
		return fmt.Errorf("%d ports, %d MACs, %d bindings", len(e.Ports), len(e.MACs), len(e.Bindings))
	}
	if err := checkCounters(&e.Departed); err != nil {
		return err
	}
	ids := make(map[uint32]bool, len(e.Ports))
	for i := range e.Ports {
		p := &e.Ports[i]
		what := fmt.Sprintf("port %d", p.ID)
		if p.ID >= MaxPorts || ids[p.ID] {
			return fmt.Errorf("%s: id out of range or given twice", what)
		}
		ids[p.ID] = true
		if err := name(what, p.Name); err != nil {
			return err
		}
		if err := fd(what, p.Fd, p.Dgram == nil && p.Kind != "tap"); err != nil {
			return err
		}
		if err := checkCounters(&p.Counters); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if len(p.Queue) > MaxQueued || len(p.Unread) > MaxFrameBytes {
			return fmt.Errorf("%s: %d frames queued, %d bytes unread", what, len(p.Queue), len(p.Unread))
		}
		for _, f := range p.Queue {
			if len(f) == 0 || len(f) > MaxFrameBytes {
				return fmt.Errorf("%s: queued frame of %d bytes", what, len(f))
			}
		}
		if p.TxOff < 0 || p.TxOff > 0 && (len(p.Queue) == 0 || p.TxOff >= 4+len(p.Queue[0])) {
			return fmt.Errorf("%s: %d bytes of its head frame sent", what, p.TxOff)
		}
		if len(p.Vhost) > MaxFrameBytes {
			return fmt.Errorf("%s: vhost-user state of %d bytes", what, len(p.Vhost))
		}
		if g := p.Dgram; g != nil {
			if g.Listener < 0 || g.Listener >= len(d.Listeners) {
				return fmt.Errorf("%s: listener %d of %d", what, g.Listener, len(d.Listeners))
			}
			if len(g.Key) == 0 || len(g.Key) > 110 {
				return fmt.Errorf("%s: address of %d bytes", what, len(g.Key))
			}
			if err := fd(what+" socket file", g.PathFd, false); err != nil {
				return err
			}
			if g.IdleNs < 0 {
				return fmt.Errorf("%s: idle for %d ns", what, g.IdleNs)
			}
		}
	}
	for _, m := range e.MACs {
		if !ids[m.Port] || m.MAC >= 1<<48 || m.AgeNs < 0 {
			return fmt.Errorf("MAC %012x on port %d: no such port, or a bad address or age", m.MAC, m.Port)
		}
	}
	for _, b := range e.Bindings {
		if !ids[b.Port] || !b.IP.IsValid() || b.LeftNs < -1 {
			return fmt.Errorf("binding %v on port %d: no such port, or a bad address or time", b.IP, b.Port)
		}
	}
	return nil
}

func checkCounters(c *Counters) error {
	if len(c.Drops)+len(c.Secure)+len(c.GSO) > MaxCounterNames {
		return fmt.Errorf("%d counter names", len(c.Drops)+len(c.Secure)+len(c.GSO))
	}
	return nil
}
