package engine

import (
	"math/rand/v2"
	"time"

	"github.com/vknetd/vknetd/mactable"
)

// A migrating VM keeps its MAC and addresses but reaches the switch through
// a new port: the destination QEMU's connection (or, with --vxlan, another
// host's switch, behind the TAP). Secure mode binds a MAC to the port it is
// live on and its addresses to that MAC and port, so without these rules
// the destination's announcement and every frame after it would be dropped
// as src-mac-in-use until the source QEMU exits, or for good while it stays
// paused.
//
// A client port takes a MAC live on another client port, with the MAC's
// address bindings, when both ports belong to the same user and the old
// port no longer speaks for the VM:
//   - its device is stopped (vhost-user: GET_VRING_BASE on a ring that
//     ran: QEMU stops the source's device at the switch-over), or it is
//     closing (the peer hung up); any frame from the new port moves the
//     MAC then;
//   - or the frame announces the MAC (RARP, or a gratuitous ARP) and the
//     old port has been silent for moveSilence. This covers -netdev stream
//     and dgram, whose source QEMU just pauses.
//
// Another user never takes a MAC: its frames stay src-mac-in-use.
//
// The TAP (the host's side: other hosts over VXLAN) has no user, so across
// hosts only "stopped or silent" applies, and only to an announcement: the
// TAP takes a client's MAC when the client's device is stopped or its port
// is closing or silent, and a client takes a MAC from the TAP when the MAC
// itself has been silent there (remoteHeard) for moveSilence.
//
// Each move is counted (Stats.MACMoves) and logged, rate-limited.

// moveSilence is how long a port must have sent nothing before an
// announcement of one of its MACs from another port of its user takes the
// MAC away. QEMU announces a migrated VM at once when the destination
// starts, then 50 ms later, then at growing intervals (net/announce.c:
// initial 50 ms, step 100 ms). The source stopped its guest before the
// destination started, so at the second announcement it has been silent for
// over 50 ms: below that, the second announcement always moves the MAC, and
// the first one does when the switch-over itself took moveSilence. The VM is
// then reachable within about 50 ms of the destination starting, however
// long the source stays paused. A VM that is running and talking sends more
// often than this; one that is idle is protected by the user rule, not by
// the silence.
const moveSilence = 40 * time.Millisecond

// Why a MAC moved, for the log line.
const (
	movedStopped = "old device stopped"
	movedClosing = "old port closing"
	movedSilent  = "announced, old port silent"
	movedRemote  = "announced, silent on the host's side"
)

const msgMACMoved = "MAC moved to a new port with its VM"

// heard notes that port in sent a frame from src now: the silence rules
// compare with it. The loop's clock (e.now) is read once per round, so this
// costs two stores, no clock read.
func (e *Engine) heard(in *port, src uint64) {
	in.heardAt = e.now
	if in.host {
		e.remote.note(src, e.now)
	}
}

// announces reports whether frame is a VM announcing its MAC: a RARP
// (ethertype 0x8035, what QEMU sends for a migrated VM), or a gratuitous
// ARP (the sender asks about or answers for its own address, what a guest
// sends with VIRTIO_NET_F_GUEST_ANNOUNCE).
func announces(frame []byte) bool {
	if len(frame) < etherHeaderLen {
		return false
	}
	switch uint16(frame[12])<<8 | uint16(frame[13]) {
	case 0x8035:
		return true
	case 0x0806:
		a := frame[etherHeaderLen:]
		// Ethernet/IPv4 ARP: sender IP at 14, target IP at 24.
		return len(a) >= 28 && string(a[14:18]) == string(a[24:28]) && string(a[8:14]) == string(frame[6:12])
	}
	return false
}

// movable says why client port in may take a MAC live on old, the frame
// being from that MAC, or "" when it may not (src-mac-in-use).
func (e *Engine) movable(in, old *port, src uint64, frame []byte) string {
	switch {
	case old == nil:
		return movedClosing
	case old.host:
		if announces(frame) && e.remote.silence(src, e.now) >= int64(moveSilence) {
			return movedRemote
		}
		return ""
	case old.user == nil || old.user != in.user:
		return ""
	}
	return e.released(old, frame)
}

// released says why the VM behind client port old may have left it, for a
// frame from one of its MACs seen elsewhere, or "".
func (e *Engine) released(old *port, frame []byte) string {
	switch {
	case old.dead || old.hangup || old.txClosed:
		return movedClosing
	case old.stopped:
		return movedStopped
	case announces(frame) && e.now-old.heardAt >= int64(moveSilence):
		return movedSilent
	}
	return ""
}

// moved finishes a move of src from port from to port in: the MAC table
// has it on in already; its bindings follow (or, when in is the host's
// side, which holds none, end), and the move is counted and logged.
func (e *Engine) moved(in *port, from uint32, src uint64, why string) {
	var m [6]byte
	for i := range m {
		m[i] = byte(src >> (40 - 8*i))
	}
	var n int
	if in.host {
		n = e.policy.ReleaseMAC(m, from)
	} else {
		n = e.policy.MoveMAC(m, from, in.id)
	}
	e.macMoves++
	select {
	case e.moves <- struct{}{}:
	default: // one wake-up pending is enough
	}
	fromName := ""
	if p := e.ports[from]; p != nil {
		fromName = p.name
	}
	e.clientLog.Info(msgMACMoved, "mac", mactable.FormatKey(src), "from_port", from, "from", fromName,
		"to_port", in.id, "to", in.name, "bindings", n, "because", why)
}

// MACMoved is signalled (at most one wake-up pending) when a MAC moved to
// another port with its VM, so that the daemon pins the clients' MACs in
// the host's bridge anew at once: a VM gone to another host must not stay
// pinned on the TAP's port, where the bridge would keep sending its frames.
func (e *Engine) MACMoved() <-chan struct{} { return e.moves }

// remoteTakeOver is the host's side taking a MAC that is live on a client
// port, on the TAP's frame from it that learn refused (Conflict): allowed
// when the frame announces the MAC and the VM left the client port (see
// released), since the VM then speaks from another host. It reports
// whether the MAC moved to the TAP.
func (e *Engine) remoteTakeOver(in *port, src uint64, frame []byte) bool {
	if !announces(frame) {
		return false
	}
	owner, ok := e.macs.Lookup(src, e.now)
	if !ok || owner == in.id {
		return false
	}
	old := e.ports[owner]
	why := movedClosing
	if old != nil {
		if why = e.released(old, frame); why == "" {
			return false
		}
	}
	if e.macs.Take(src, in.id, e.now) != mactable.Moved {
		return false
	}
	e.moved(in, owner, src, why)
	return true
}

// remoteHeard is when each MAC on the host's side last sent a frame, for
// the silence rule across hosts: the TAP itself is never silent (the host
// and every remote VM speak through it), so the rule looks at the MAC. A
// direct-mapped table: a frame costs one hash and two stores. A MAC whose
// slot another took since is reported silent: it has not spoken since that
// other MAC did, and a client could take it anyway after moveSilence once
// it stops.
type remoteHeard struct {
	seed  uint64
	slots [remoteHeardSlots]struct {
		mac uint64 // liveBit | MAC; 0 empty
		at  int64
	}
}

const (
	remoteHeardBits  = 12
	remoteHeardSlots = 1 << remoteHeardBits
	remoteHeardLive  = 1 << 63
)

func newRemoteHeard() *remoteHeard { return &remoteHeard{seed: rand.Uint64()} }

func (r *remoteHeard) index(mac uint64) uint64 {
	return ((mac ^ r.seed) * 0x9e3779b97f4a7c15) >> (64 - remoteHeardBits)
}

func (r *remoteHeard) note(mac uint64, now int64) {
	s := &r.slots[r.index(mac)]
	s.mac, s.at = remoteHeardLive|mac, now
}

// silence is how long mac has not been heard on the host's side, in ns.
func (r *remoteHeard) silence(mac uint64, now int64) int64 {
	s := &r.slots[r.index(mac)]
	if s.mac != remoteHeardLive|mac {
		return now + int64(moveSilence) // not heard since its slot was taken
	}
	return now - s.at
}
