package engine

import (
	"strconv"
	"time"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/ring"
	"github.com/vknetd/vknetd/secure"
)

const (
	etherHeaderLen = 14
	vlanTagLen     = 4
)

// vlanTagged reports an 802.1Q or 802.1ad tag, which may take a frame
// 4 bytes past MTU+14.
func vlanTagged(frame []byte) bool {
	t := uint16(frame[12])<<8 | uint16(frame[13])
	return t == 0x8100 || t == 0x88a8
}

// forward switches one batch of frames read from in. Each frame's buffer
// arrives with one reference, which forwardOne gives up when done: the
// queues it was pushed on hold their own.
func (e *Engine) forward(in *port, refs []ring.Ref) {
	for _, r := range refs {
		e.forwardOne(in, r)
		e.pool.Release(r)
		if e.cut.offloaded && e.endCut() {
			e.flush()
		}
	}
}

// forwardOne is the switch's whole decision for one frame: validate, check
// secure mode, learn the source, then send to the one port that owns the
// destination or flood to every other port.
func (e *Engine) forwardOne(in *port, r ring.Ref) {
	frame, hdr := e.pool.Frame(r), e.pool.Hdr(r)
	in.cnt.rxFrames++
	in.cnt.rxBytes += uint64(len(frame))
	fromClient := !in.host
	if fromClient && hdr.Flags != 0 {
		// Only the host's kernel may vouch for a checksum (a TAP read);
		// a guest's word would have the host skip checking its frames.
		hdr.Flags &^= gso.FlagDataValid
	}
	offloaded := hdr.Offloaded()
	e.cut.offloaded = offloaded
	if offloaded {
		e.cut.begin()
	}
	switch {
	case len(frame) < etherHeaderLen:
		e.dropped(in, DropRunt)
		return
	case hdr.GSOType == gso.GSONone &&
		(len(frame) > e.maxFrame-vlanTagLen && !vlanTagged(frame) || len(frame) > e.maxFrame):
		e.dropped(in, DropOversize)
		return
	case offloaded:
		// The header must describe its frame, in every mode: it decides
		// how the frame is cut and which bytes a device rewrites.
		if v := gso.Check(frame, *hdr, e.cfg.MTU); v != gso.OK {
			e.droppedGSO(in, v)
			return
		}
	}

	src := mactable.Key(frame[6:12])
	e.heard(in, src)
	if fromClient && e.secure {
		if v := e.check.Check(frame, in.id); v != secure.Pass {
			e.refused(in, v)
			return
		}
		// The switch's MAC rules sit between the policy's checks and its
		// binding: a frame refused for its MAC must not bind its IP
		// address to the spoofed MAC on the way.
		if d, ok := e.learnSecure(in, src, frame); !ok {
			e.dropped(in, d)
			return
		}
		if v := e.check.Bind(e.now); v != secure.Pass {
			e.refused(in, v)
			return
		}
	} else if !e.learn(in, src) && !e.remoteTakeOver(in, src, frame) {
		in.conflictSrc = src
		e.dropped(in, DropRemoteMACConflict)
		return
	} else if e.leases && in.host {
		e.snoopLease(frame)
	}
	for _, m := range e.mirrors {
		e.deliver(in, m, r, false)
	}

	dst := mactable.Key(frame[0:6])
	if !mactable.IsMulticastKey(dst) {
		if id, ok := e.macs.Lookup(dst, e.now); ok {
			if id == in.id {
				// The destination lives behind the port the frame came in
				// on (a bridge behind the TAP, or a confused client).
				e.dropped(in, DropSamePort)
				return
			}
			e.deliver(in, e.ports[id], r, fromClient)
			return
		}
	}
	// Broadcast, multicast and unknown unicast: every other port.
	for _, out := range e.live {
		if out != in && !out.dead && !out.mirror {
			e.deliver(in, out, r, fromClient)
		}
	}
}

// learnSecure applies secure mode's MAC rules to a client's frame and
// learns its source: a client cannot take over a MAC that is live on
// another port (MAC spoofing), and a MAC the switch cannot learn (the
// port's, its user's or the table's limit is reached) does not speak at
// all. A MAC moves with its VM from one port to another only as
// migrate.go allows (movable). A plain bridge forwards such frames
// unlearned, which is what lets a user who fills the table have everyone else's unicast flooded to
// him: in secure mode no unicast is ever flooded for a client MAC the
// switch could not learn, because that MAC's frames never got through.
func (e *Engine) learnSecure(in *port, src uint64, frame []byte) (Drop, bool) {
	if mactable.IsMulticastKey(src) {
		return 0, true // the policy refuses it with its own reason
	}
	why := ""
	owner, known := e.macs.Lookup(src, e.now)
	if known && owner != in.id {
		if why = e.movable(in, e.ports[owner], src, frame); why == "" {
			return DropMACInUse, false
		}
	}
	switch e.macs.Learn(src, in.id, e.now) {
	case mactable.Moved:
		if why != "" {
			e.moved(in, owner, src, why)
		}
	case mactable.PortFull:
		return DropPortMACLimit, false
	case mactable.OwnerFull:
		return DropUserMACLimit, false
	case mactable.TableFull:
		return DropMACTableFull, false
	}
	return 0, true
}

// learn records the frame's source MAC on port in, for the TAP and for
// clients without secure mode: there the switch behaves like a plain
// learning bridge: MACs move between clients, and frames from MACs over
// the limits are forwarded without being learned. The TAP's frames, from
// a bridged LAN or other hosts over VXLAN, are the exception: they never
// take a MAC that is live on a client port (the table says Conflict), and
// learn returns false to have such a frame dropped, so that no one on the
// underlay can steal a local client's traffic or make its own frames look
// spoofed. A TAP frame over --remote-macs is forwarded unlearned like any
// other: the host and the LAN behind it keep working, only their replies
// flood.
func (e *Engine) learn(in *port, src uint64) bool {
	if mactable.IsMulticastKey(src) {
		return true // never learned
	}
	switch e.macs.Learn(src, in.id, e.now) {
	case mactable.PortFull, mactable.OwnerFull, mactable.TableFull:
		in.cnt.unlearned++
	case mactable.Conflict:
		return false
	}
	return true
}

// enqueue puts a reference to r on out's transmit queue. Frames bound for
// the TAP from a client pass the secure-mode TAP rules first.
func (e *Engine) enqueue(in, out *port, r ring.Ref, fromClient bool) {
	if out.host && fromClient && e.secure {
		if v := e.check.ToTap(); v != secure.Pass {
			e.refused(in, v)
			return
		}
	}
	if out.txClosed {
		out.cnt.drops[DropPortClosed]++
		return
	}
	if !e.mayQueue(out) {
		out.cnt.drops[DropPoolPressure]++
		return
	}
	if !out.txq.Push(r) {
		out.cnt.drops[DropQueueFull]++
		return
	}
	e.pool.Hold(r)
	if !out.dirty {
		out.dirty = true
		e.dirty = append(e.dirty, out)
	}
}

// dropped counts a frame the engine discarded on its ingress port.
func (e *Engine) dropped(in *port, d Drop) {
	in.cnt.drops[d]++
	if d == DropMACInUse || d == DropPortMACLimit || d == DropUserMACLimit || d == DropMACTableFull || d == DropRemoteMACConflict {
		e.logDrop(in, d.String())
	}
}

// refused counts and (rate-limited) logs a secure-mode drop.
func (e *Engine) refused(in *port, v secure.Reason) {
	in.cnt.secureDrops[v]++
	e.logDrop(in, v.String())
}

// logDrop logs at most one drop per port per second, and few in all
// however many ports drop, so an attack or a misconfigured VM is visible
// without flooding the log: not_logged_since_last counts this port's drops
// since its last line, suppressed the lines of all ports held back since
// the last one written. Describe renders the frame's addresses only when a
// line is actually written.
func (e *Engine) logDrop(in *port, reason string) {
	if e.now < in.logNext {
		in.logSkipped++
		return
	}
	ok, suppressed := e.clientLog.Allow(msgFrameDropped)
	if !ok {
		in.logSkipped++
		return
	}
	in.logNext = e.now + int64(time.Second)
	var frame string
	if in.host {
		// The policy never saw the TAP's frame; the one drop logged for
		// the TAP is a remote-mac-conflict, which names the client.
		owner, _ := e.macs.Lookup(in.conflictSrc, e.now)
		frame = "source " + mactable.FormatKey(in.conflictSrc) + " is live on client port " + strconv.FormatUint(uint64(owner), 10)
	} else {
		frame = e.check.Describe()
	}
	e.log.Warn(msgFrameDropped, "port", in.id, "client", in.name, "reason", reason,
		"frame", frame, "not_logged_since_last", in.logSkipped, "suppressed", suppressed)
	in.logSkipped = 0
}

const msgFrameDropped = "frame dropped"
