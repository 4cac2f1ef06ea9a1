// Package control is vknetd's control socket: the server the daemon runs
// beside its client socket, the client vknetctl uses, and the JSON wire
// protocol between them; also the frame capture (decoded lines, pcap)
// that vknetctl monitor and vknetd -c share (Capture, Watch, CloseOnSignal).
//
// The socket is SOCK_SEQPACKET, so message boundaries are kept by the
// kernel and no framing is needed. The server speaks first: a hello
// ({"v":1,"ok":true,"hello":"vknetd"}), or a refusal for a peer that is
// neither root nor in the daemon's group. A client sends nothing before
// the hello, so pointing it at the clients' socket (also SEQPACKET) by
// mistake never puts a request on the network as a frame. It then sends
// one JSON Request per
// message; the server answers with one or more JSON Reply messages, every
// one but the last carrying "more": true (long listings are split so that
// no message outgrows the socket's buffer). Lists are concatenated in
// order; a reply with "ok": false ends the exchange with an error.
//
// Every message carries "v", the protocol version (Version). A server
// refuses requests of another version, naming both, so an old vknetctl
// against a new daemon fails with a clear message rather than misreading.
//
// A "monitor" request turns the connection into a monitor port of the
// switch: after its single "ok" reply, every message the client receives is
// one raw Ethernet frame, and anything it sends is discarded.
//
// The JSON field names of Port, MAC, Binding and Stats are what `vknetctl
// --json` prints; they are stable: fields may be added, never renamed.
package control

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/vknetd/vknetd/engine"
)

// Version is the protocol version this package speaks.
const Version = 1

// Commands a Request may carry.
const (
	CmdPorts    = "ports"
	CmdMACs     = "macs"
	CmdBindings = "bindings"
	CmdStats    = "stats"
	CmdMonitor  = "monitor"
	// CmdUpgrade has the daemon hand itself over to a new process
	// (Request.Binary, or its own executable read again); root only.
	CmdUpgrade = "upgrade"
)

// Request is one client message.
type Request struct {
	V   int    `json:"v"`
	Cmd string `json:"cmd"`
	// All asks a monitor for a copy of every frame the switch forwards,
	// not only the flooded ones.
	All bool `json:"all,omitempty"`
	// Binary is the program an upgrade starts; empty: the daemon's own
	// executable, read again from disk.
	Binary string `json:"binary,omitempty"`
}

// Hello is the greeting a server sends on every accepted connection.
const Hello = "vknetd"

// Reply is one server message. Exactly one of the payload fields is set
// for a successful listing; a monitor's "ok" has none.
type Reply struct {
	V        int       `json:"v"`
	OK       bool      `json:"ok"`
	Hello    string    `json:"hello,omitempty"`
	Error    string    `json:"error,omitempty"`
	More     bool      `json:"more,omitempty"`
	Ports    []Port    `json:"ports,omitempty"`
	MACs     []MAC     `json:"macs,omitempty"`
	Bindings []Binding `json:"bindings,omitempty"`
	Stats    *Stats    `json:"stats,omitempty"`
	// Pid is, in an upgrade's reply, the new daemon's process id.
	Pid int `json:"pid,omitempty"`
}

// Port is one port of the switch: the TAP, a client, or a monitor.
type Port struct {
	ID   uint32 `json:"id"`
	Kind string `json:"kind"` // tap, seqpacket, stream, dgram, monitor
	Name string `json:"name"` // the TAP's name, "pid N uid N", or a datagram client's socket path
	// PID and UID are the peer's credentials from SO_PEERCRED when it
	// connected; -1 when unknown (the TAP, datagram clients).
	PID       int32             `json:"pid"`
	UID       int32             `json:"uid"`
	MACs      int               `json:"macs"`      // MAC addresses learned on this port
	RxFrames  uint64            `json:"rx_frames"` // frames the switch received from this port
	RxBytes   uint64            `json:"rx_bytes"`
	TxFrames  uint64            `json:"tx_frames"` // frames the switch sent to this port
	TxBytes   uint64            `json:"tx_bytes"`
	Drops     map[string]uint64 `json:"drops"`     // non-zero drop counters by reason
	Unlearned uint64            `json:"unlearned"` // frames forwarded without learning their source
	Queued    int               `json:"queued"`    // frames waiting in its transmit queue
	// Offloads is what the port takes whole: csum, tso4, tso6, ecn, uso,
	// comma-separated (the TAP's, a vhost-user guest's as it negotiated
	// them), or "-" for none.
	Offloads string `json:"offloads,omitempty"`
	// Workers is the event loop (--workers, from 0) serving the port; for
	// a vhost-user guest whose queue pairs are spread over loops, the loop
	// of each pair in use ("1,0,1,0").
	Workers string `json:"workers,omitempty"`
	// RxQueues and TxQueues are, for a vhost-user guest, the frames the
	// switch received from each queue pair's TX ring and sent on each
	// pair's RX ring, up to the last pair that moved any.
	RxQueues []uint64 `json:"rx_queues,omitempty"`
	TxQueues []uint64 `json:"tx_queues,omitempty"`
	// Kicks is, for a vhost-user guest, how often its kicks woke the
	// switch (kick eventfd reads that found it had kicked).
	Kicks uint64 `json:"kicks,omitempty"`
}

// MAC is one learned address, as `bridge fdb show` lists it.
type MAC struct {
	MAC      string  `json:"mac"`
	Port     uint32  `json:"port"`
	Kind     string  `json:"kind"`
	Name     string  `json:"name"`
	PID      int32   `json:"pid"` // -1 when unknown
	AgeSecs  float64 `json:"age_seconds"`
	PortGone bool    `json:"port_gone,omitempty"` // the port closed between the two snapshots
	// Via and VTEP say, for a MAC learned on the TAP, that it sits on
	// another host: behind the VXLAN device Via (the bridge's fdb says
	// so), at the peer VTEP when the device knows (empty otherwise).
	Via  string `json:"via,omitempty"`
	VTEP string `json:"vtep,omitempty"`
}

// Binding is a secure-mode IP-to-MAC binding.
type Binding struct {
	IP   string `json:"ip"`
	MAC  string `json:"mac"`
	Port uint32 `json:"port"`
	// Source is how the address was bound: "first-use" (the first client
	// to use an address in no --user-net range) or "range" (one in a
	// --user-net range of the client's user).
	Source string `json:"source"`
	// ExpiresSecs is the time left before the binding ends unless its
	// address is used again, in seconds; 0 when it ends only with its
	// client.
	ExpiresSecs float64 `json:"expires_seconds"`
}

// Traffic is the frame and byte counts of one side of the switch.
type Traffic struct {
	RxFrames uint64 `json:"rx_frames"`
	RxBytes  uint64 `json:"rx_bytes"`
	TxFrames uint64 `json:"tx_frames"`
	TxBytes  uint64 `json:"tx_bytes"`
}

// Stats is the switch's totals. Every counter only grows for the life of
// the daemon: the clients' side includes clients that have disconnected,
// and monitors (observers, not members of the network) are left out, so
// a monitor coming and going moves nothing.
type Stats struct {
	Clients       int            `json:"clients"`         // connected clients
	ClientsByKind map[string]int `json:"clients_by_kind"` // seqpacket, stream, dgram: always all three
	Monitors      int            `json:"monitors"`
	Accepted      uint64         `json:"accepted"` // clients accepted since start
	// MACMoves counts MACs that moved to a new port with their VM (live
	// migration), taking their secure-mode bindings along.
	MACMoves    uint64 `json:"mac_moves"`
	MACs        int    `json:"macs"`
	Buffers     int    `json:"buffers"`
	BuffersFree int    `json:"buffers_free"`
	Queued      int    `json:"queued"` // frames waiting in all transmit queues
	Traffic     Sides  `json:"traffic"`
	// Drops and Unlearned are summed over the TAP and every client; Drops
	// also holds what the kernel filter dropped on datagram listeners.
	Drops     map[string]uint64 `json:"drops"`
	Unlearned uint64            `json:"unlearned"`
	// Restarts is how often a supervisor (vknetd --supervise) started a
	// new daemon after the one before died; 0 without one.
	Restarts uint64 `json:"restarts"`
}

// Sides splits traffic into the host's side and the clients' side. Rx is
// what the switch received from that side, Tx what it sent to it.
type Sides struct {
	TAP     Traffic `json:"tap"`
	Clients Traffic `json:"clients"` // every client there has been, connected or not
	// Remote is, with --vxlan, the VXLAN device's own counters: Rx what
	// came from other hosts, Tx what went to them (a frame flooded to N
	// peers counts N times). It is part of the TAP's side: the TAP's
	// counters include it, together with the host's own traffic.
	Remote *Traffic `json:"remote,omitempty"`
}

// ClientKinds are the kinds a client port can have, listed in Stats even
// when no client of that kind is connected so that consumers see zeros
// rather than missing keys.
var ClientKinds = []string{"seqpacket", "stream", "dgram", "vhost-user"}

// PortFrom converts an engine snapshot of one port.
func PortFrom(p engine.PortStats) Port {
	out := Port{ID: p.ID, Kind: p.Kind, Name: p.Name, PID: p.PID, UID: p.UID, MACs: p.MACs,
		RxFrames: p.RxFrames, RxBytes: p.RxBytes, TxFrames: p.TxFrames, TxBytes: p.TxBytes,
		Drops: make(map[string]uint64, len(p.Drops)), Unlearned: p.Unlearned, Queued: p.Queued,
		Offloads: p.Offloads, Workers: p.Workers, RxQueues: p.RxQueues, TxQueues: p.TxQueues, Kicks: p.Kicks}
	for _, d := range p.Drops {
		out.Drops[d.Reason] += d.Count
	}
	return out
}

// Summarize totals an engine snapshot; see Stats for what is counted where.
func Summarize(s engine.Stats) Stats {
	out := Stats{Clients: s.Clients, Accepted: s.Accepted, MACs: s.MACs, MACMoves: s.MACMoves,
		Buffers: s.PoolCap, BuffersFree: s.PoolFree,
		ClientsByKind: make(map[string]int, len(ClientKinds)), Drops: map[string]uint64{}}
	for _, k := range ClientKinds {
		out.ClientsByKind[k] = 0
	}
	add := func(t *Traffic, p engine.PortStats) {
		t.RxFrames += p.RxFrames
		t.RxBytes += p.RxBytes
		t.TxFrames += p.TxFrames
		t.TxBytes += p.TxBytes
		for _, d := range p.Drops {
			out.Drops[d.Reason] += d.Count
		}
		out.Unlearned += p.Unlearned
	}
	for _, p := range s.Ports {
		out.Queued += p.Queued
		switch p.Kind {
		case "monitor":
			out.Monitors++
		case "tap":
			add(&out.Traffic.TAP, p)
		default:
			out.ClientsByKind[p.Kind]++
			add(&out.Traffic.Clients, p)
		}
	}
	add(&out.Traffic.Clients, s.Departed)
	// Frames the kernel filter dropped on a datagram listener belong to
	// no port (the filter cannot name their sender), but to the total.
	if s.ListenerKernelDrops != 0 {
		out.Drops[engine.DropKernelFilter.String()] += s.ListenerKernelDrops
	}
	return out
}

// MACsFrom converts the MAC table, taking each port's peer pid from ports
// (a snapshot taken just before; a port missing from it has closed since).
func MACsFrom(entries []engine.MACEntry, ports []engine.PortStats) []MAC {
	byID := make(map[uint32]engine.PortStats, len(ports))
	for _, p := range ports {
		byID[p.ID] = p
	}
	out := make([]MAC, 0, len(entries))
	for _, e := range entries {
		m := MAC{MAC: macString(e.MAC), Port: e.Port, Kind: e.Kind, Name: e.PortName, PID: -1,
			AgeSecs: e.Age.Round(time.Millisecond).Seconds()}
		if p, ok := byID[e.Port]; ok {
			m.PID = p.PID
		} else {
			m.PortGone = true
		}
		out = append(out, m)
	}
	return out
}

// Where is where a remote MAC sits: the VXLAN device and, when known, the
// peer's underlay address.
type Where struct{ Via, VTEP string }

// MarkRemote fills Via and VTEP of the MACs learned on the TAP that the
// bridge has behind the VXLAN device; where is keyed like MAC.MAC.
func MarkRemote(macs []MAC, where map[string]Where) {
	for i := range macs {
		if macs[i].Kind != "tap" {
			continue
		}
		if w, ok := where[macs[i].MAC]; ok {
			macs[i].Via, macs[i].VTEP = w.Via, w.VTEP
		}
	}
}

// BindingsFrom converts secure mode's bindings.
func BindingsFrom(bs []engine.Binding) []Binding {
	out := make([]Binding, 0, len(bs))
	for _, b := range bs {
		var left float64
		if b.ExpiresIn > 0 {
			// Not 0, which would read as no end.
			left = max(b.ExpiresIn.Round(time.Millisecond).Seconds(), 0.001)
		}
		out = append(out, Binding{IP: b.IP.String(), MAC: macString(b.MAC), Port: b.Port, Source: b.Source, ExpiresSecs: left})
	}
	return out
}

func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// SortedDrops returns a drop map's reasons in name order, for stable text
// output.
func SortedDrops(drops map[string]uint64) []string {
	names := make([]string, 0, len(drops))
	for n := range drops {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// maxReplyBytes bounds one reply message well below the default unix
// socket buffer (net.core.wmem_default, about 208 KiB), which is also the
// largest SEQPACKET message the kernel accepts.
const maxReplyBytes = 48 << 10

// encodeList splits items into replies of at most about maxReplyBytes
// each; set puts one chunk into a Reply. An empty list is one reply.
func encodeList[T any](items []T, set func(*Reply, []T)) ([][]byte, error) {
	var msgs [][]byte
	start, size := 0, 0
	emit := func(end int, more bool) error {
		r := Reply{V: Version, OK: true, More: more}
		set(&r, items[start:end])
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		msgs = append(msgs, b)
		start, size = end, 0
		return nil
	}
	for i, it := range items {
		b, err := json.Marshal(it)
		if err != nil {
			return nil, err
		}
		if size > 0 && size+len(b) > maxReplyBytes {
			if err := emit(i, true); err != nil {
				return nil, err
			}
		}
		size += len(b) + 1
	}
	if err := emit(len(items), false); err != nil {
		return nil, err
	}
	return msgs, nil
}
