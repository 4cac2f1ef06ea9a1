package engine

import (
	"math/rand/v2"
	"sync/atomic"
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
//
// With --workers the old port may belong to another loop than the port
// the frame came in on. The decision reads only what the old port's loop
// publishes for it in atomics (port.left: last heard, stopped, closing)
// and its uid, set before the port was published; the move itself goes
// through the shared tables: the MAC table moves the MAC only if it is
// still on the old port (Take), so of two loops racing for it one wins,
// and the policy moves the bindings under its lock. Nothing of the old
// port's own (its counters, its queue) is touched: what was queued for it
// drains or is dropped there, counted by its loop.

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
// compare with it. The loop's clock (l.now) is read once per round, so
// this costs a load or two and a store at most once per round and port
// (per MAC on the TAP), no clock read.
func (l *loop) heard(in *port, src uint64) {
	if in.host {
		l.e.remote.note(src, l.now)
		return
	}
	in.device().left.heard(l.now)
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
// being from that MAC, or "" when it may not (src-mac-in-use). old may
// be another loop's: only what it publishes for others is read.
func (l *loop) movable(in, old *port, src uint64, frame []byte) string {
	switch {
	case old == nil:
		return movedClosing
	case old.host:
		if announces(frame) && l.e.remote.silence(src, l.now) >= int64(moveSilence) {
			return movedRemote
		}
		return ""
	case !sameUser(in, old):
		return ""
	}
	return l.released(old, frame)
}

// sameUser: client ports a and b were connected by one user. A port's uid
// is set before the port is published to the loops and never changes
// (its user, p.user, is let go by its own loop when it closes, so another
// loop does not read it).
func sameUser(a, b *port) bool {
	return !a.observer && !b.observer && a.uid >= 0 && a.uid == b.uid
}

// released says why the VM behind client port old may have left it, for a
// frame from one of its MACs seen elsewhere, or "".
func (l *loop) released(old *port, frame []byte) string {
	switch {
	case old.left.closing.Load():
		return movedClosing
	case old.left.stopped.Load():
		return movedStopped
	case announces(frame) && l.now-old.left.heardAt.Load() >= int64(moveSilence):
		return movedSilent
	}
	return ""
}

// move moves src from port from to client port in, as movable allowed,
// and says what to drop the frame as if it cannot.
func (l *loop) move(in *port, from uint32, src uint64, why string) (Drop, bool) {
	switch r := l.e.macs.Take(src, from, in.id, l.now); r {
	case mactable.Moved:
		l.finishMove(in, from, src, why)
	case mactable.Conflict:
		// Another port took the MAC since the lookup (another loop's
		// frame): the decision was about a port that no longer has it.
		return DropMACInUse, false
	default:
		// Learned: the old port let the MAC go meanwhile (it closed or
		// the MAC aged), and with it its bindings: nothing to move.
		return limitDrop(r)
	}
	return 0, true
}

// finishMove finishes a move of src from port from to port in: the MAC table
// has it on in already; its bindings follow (or, when in is the host's
// side, which holds none, end), and the move is counted and logged.
func (l *loop) finishMove(in *port, from uint32, src uint64, why string) {
	e := l.e
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
	e.macMoves.Add(1)
	select {
	case e.moves <- struct{}{}:
	default: // one wake-up pending is enough
	}
	fromName := ""
	if p := e.ports.get(from); p != nil {
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
// whether the MAC is the TAP's now.
func (l *loop) remoteTakeOver(in *port, src uint64, frame []byte) bool {
	if !announces(frame) {
		return false
	}
	owner, ok := l.e.macs.Lookup(src, l.now)
	if !ok || owner == in.id {
		return false
	}
	why := movedClosing
	if old := l.e.ports.get(owner); old != nil {
		if why = l.released(old, frame); why == "" {
			return false
		}
	}
	switch l.e.macs.Take(src, owner, in.id, l.now) {
	case mactable.Moved:
		l.finishMove(in, owner, src, why)
		return true
	case mactable.Learned, mactable.Refreshed:
		return true
	}
	return false
}

// remoteHeard is when each MAC on the host's side last sent a frame, for
// the silence rule across hosts: the TAP itself is never silent (the host
// and every remote VM speak through it), so the rule looks at the MAC. A
// direct-mapped table: a frame costs one hash and two loads, and two
// stores when the MAC's slot or time changed. A MAC whose slot another
// took since is reported silent: it has not spoken since that other MAC
// did, and a client could take it anyway after moveSilence once it stops.
//
// The TAP's loop writes it, a client's loop reads it (silence). A reader
// may pair a MAC with the time of the frame that just took or refreshed
// its slot, nanoseconds off: the time is stored before the MAC, so a
// reader that sees the MAC sees a time at least as new as that MAC's.
type remoteHeard struct {
	seed  uint64
	slots [remoteHeardSlots]struct {
		mac atomic.Uint64 // liveBit | MAC; 0 empty
		at  atomic.Int64
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
	if s.at.Load() != now {
		s.at.Store(now)
	}
	if s.mac.Load() != remoteHeardLive|mac {
		s.mac.Store(remoteHeardLive | mac)
	}
}

// silence is how long mac has not been heard on the host's side, in ns.
func (r *remoteHeard) silence(mac uint64, now int64) int64 {
	s := &r.slots[r.index(mac)]
	if s.mac.Load() != remoteHeardLive|mac {
		return now + int64(moveSilence) // not heard since its slot was taken
	}
	return now - s.at.Load()
}
