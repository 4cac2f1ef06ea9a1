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
func (l *loop) forward(in *port, refs []ring.Ref) {
	for i, r := range refs {
		l.slot = i
		l.forwardOne(in, r)
		l.releaseRead(r)
		if l.cut.offloaded && l.endCut() {
			l.flush()
		}
	}
}

// forwardOne is the switch's whole decision for one frame: validate, check
// secure mode, learn the source, then send to the one port that owns the
// destination or flood to every other port.
func (l *loop) forwardOne(in *port, r ring.Ref) {
	frame := l.pool.Frame(r)
	in.cnt.rxFrames++
	in.cnt.rxBytes += uint64(len(frame))
	// A split frame's buffer holds its head only (direct.go): whatever
	// is to read more of it gets it whole first.
	l.split = in.caps.direct != nil && in.caps.direct.split(l.slot)
	if l.split && !l.decidesOnHead(frame) && !l.fillRest(in, r) {
		return
	}
	if !l.admit(in, frame, l.pool.Hdr(r)) || !l.judge(in, frame) {
		return
	}
	for _, m := range l.mirrors {
		l.deliver(in, m, r, false)
	}
	l.toDestination(in, r, frame)
	if l.firstLoopMirrors() {
		// The first loop's mirrors, last: a frame handed over is not
		// written again (crossloop.go).
		l.handOverMirror(in, r)
	}
}

// toDestination sends a frame that passed to the one port that owns its
// destination, or floods it to every other port.
func (l *loop) toDestination(in *port, r ring.Ref, frame []byte) {
	fromClient := !in.host
	dst := mactable.Key(frame[0:6])
	if !mactable.IsMulticastKey(dst) {
		if id, ok := l.e.macs.LookupHint(dst, l.now, &in.dstHint); ok {
			if id == in.id {
				// The destination lives behind the port the frame came in
				// on (a bridge behind the TAP, or a confused client).
				l.dropped(in, DropSamePort)
				return
			}
			// nil: its loop closed it since the lookup; flooded as unknown.
			if out := l.e.ports.get(id); out != nil {
				if out.spread != nil {
					out = out.spread.target(out, frame) // the loop of its flow's pair
				}
				switch {
				case out.loop == l && l.split:
					l.deliverSplit(in, out, r, fromClient)
				case out.loop == l:
					l.deliver(in, out, r, fromClient)
				case !l.split || l.fillRest(in, r):
					l.handOverUnicast(in, out, r, fromClient)
				}
				return
			}
		}
	}
	if l.split && !l.fillRest(in, r) {
		return
	}
	// Broadcast, multicast and unknown unicast: every other port.
	for _, out := range l.live {
		if out != in && !out.dead && !out.mirror && out.spread == nil {
			l.deliver(in, out, r, fromClient)
		}
	}
	if len(l.e.spreadPorts) > 0 {
		l.floodSpread(in, r, fromClient)
	}
	if l.cross.to != nil {
		l.handOverFlood(in, r, fromClient)
	}
}

// admit checks what a frame is before anything is learned from it: its
// length, and that an offload header describes it. It also readies the
// cut scratch for a frame that carries offload work (offload.go).
func (l *loop) admit(in *port, frame []byte, hdr *gso.VirtioNetHdr) bool {
	if !in.host && hdr.Flags != 0 {
		// Only the host's kernel may vouch for a checksum (a TAP read);
		// a guest's word would have the host skip checking its frames.
		hdr.Flags &^= gso.FlagDataValid
	}
	offloaded := hdr.Offloaded()
	l.cut.offloaded = offloaded
	if offloaded {
		l.cut.begin()
	}
	switch {
	case len(frame) < etherHeaderLen:
		l.dropped(in, DropRunt)
		return false
	case hdr.GSOType == gso.GSONone &&
		(len(frame) > l.e.maxFrame-vlanTagLen && !vlanTagged(frame) || len(frame) > l.e.maxFrame):
		l.dropped(in, DropOversize)
		return false
	case offloaded:
		// The header must describe its frame, in every mode: it decides
		// how the frame is cut and which bytes a device rewrites.
		if v := gso.Check(frame, *hdr, l.e.cfg.MTU); v != gso.OK {
			l.droppedGSO(in, v)
			return false
		}
	}
	return true
}

// judge applies secure mode to a client's frame and learns its source
// MAC; false drops the frame (counted).
func (l *loop) judge(in *port, frame []byte) bool {
	src := mactable.Key(frame[6:12])
	l.heard(in, src)
	if !in.host && l.e.secure {
		if v := l.check.Check(frame, in.id); v != secure.Pass {
			l.refused(in, v)
			return false
		}
		// The switch's MAC rules sit between the policy's checks and its
		// binding: a frame refused for its MAC must not bind its IP
		// address to the spoofed MAC on the way. The port's own live MAC,
		// nearly every frame, is refreshed here through the port's hint,
		// one slot read (and one call less than learnSecure).
		if !l.e.macs.RefreshHint(src, in.id, l.now, &in.srcHint) {
			if d, ok := l.learnSecure(in, src, frame); !ok {
				l.dropped(in, d)
				return false
			}
		}
		if v := l.check.Bind(l.now); v != secure.Pass {
			l.refused(in, v)
			return false
		}
		return true
	}
	if !l.learn(in, src) && !l.remoteTakeOver(in, src, frame) {
		in.conflictSrc = src
		l.dropped(in, DropRemoteMACConflict)
		return false
	}
	if l.e.leases && in.host {
		l.e.snoopLease(frame, l.now)
	}
	return true
}

// learnSecure applies secure mode's MAC rules to a client's frame whose
// source is not the live MAC the port's hint names (judge refreshes that
// one), and learns that source: a client cannot take over a MAC that is
// live on another port (MAC spoofing), and a MAC the switch cannot learn
// (the port's, its user's or the table's limit is reached) does not speak
// at all. A MAC moves with its VM from one port to another only as
// migrate.go allows (movable). A plain bridge forwards such frames
// unlearned, which is what lets a user who fills the table have everyone
// else's unicast flooded to him: in secure mode no unicast is ever flooded
// for a client MAC the switch could not learn, because that MAC's frames
// never got through.
func (l *loop) learnSecure(in *port, src uint64, frame []byte) (Drop, bool) {
	if mactable.IsMulticastKey(src) {
		return 0, true // the policy refuses it with its own reason
	}
	if owner, known := l.e.macs.Lookup(src, l.now); known && owner != in.id {
		why := l.movable(in, l.e.ports.get(owner), src, frame)
		if why == "" {
			return DropMACInUse, false
		}
		return l.move(in, owner, src, why)
	}
	return limitDrop(l.e.macs.LearnHint(src, in.id, l.now, &in.srcHint))
}

// limitDrop is what a secure client's frame is dropped as when the MAC
// table would not take its source for a limit (the port's, its user's or
// the table's), or (0, true) when it did.
func limitDrop(r mactable.Result) (Drop, bool) {
	switch r {
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
func (l *loop) learn(in *port, src uint64) bool {
	if mactable.IsMulticastKey(src) {
		return true // never learned
	}
	switch l.e.macs.LearnHint(src, in.id, l.now, &in.srcHint) {
	case mactable.PortFull, mactable.OwnerFull, mactable.TableFull:
		in.cnt.unlearned++
	case mactable.Conflict:
		return false
	}
	return true
}

// enqueue puts a reference to r on out's transmit queue. Frames bound for
// the TAP from a client pass the secure-mode TAP rules first.
func (l *loop) enqueue(in, out *port, r ring.Ref, fromClient bool) {
	if out.host && fromClient && l.e.secure {
		if v := l.check.ToTap(); v != secure.Pass {
			l.refused(in, v)
			return
		}
	}
	if out.txClosed {
		out.cnt.drops[DropPortClosed]++
		return
	}
	if !l.mayQueue(out) {
		out.cnt.drops[DropPoolPressure]++
		return
	}
	if !out.txq.Push(r) {
		out.cnt.drops[DropQueueFull]++
		return
	}
	l.pool.Hold(r)
	if !out.dirty {
		out.dirty = true
		l.dirty = append(l.dirty, out)
	}
}

// dropped counts a frame the engine discarded on its ingress port.
func (l *loop) dropped(in *port, d Drop) {
	in.cnt.drops[d]++
	if d == DropMACInUse || d == DropPortMACLimit || d == DropUserMACLimit || d == DropMACTableFull || d == DropRemoteMACConflict {
		l.logDrop(in, d.String())
	}
}

// refused counts and (rate-limited) logs a secure-mode drop.
func (l *loop) refused(in *port, v secure.Reason) {
	in.cnt.secureDrops[v]++
	l.logDrop(in, v.String())
}

// logDrop logs at most one drop per port per second, and few in all
// however many ports drop, so an attack or a misconfigured VM is visible
// without flooding the log: not_logged_since_last counts this port's drops
// since its last line, suppressed the lines of all ports held back since
// the last one written. Describe renders the frame's addresses only when a
// line is actually written.
func (l *loop) logDrop(in *port, reason string) {
	if l.now < in.logNext {
		in.logSkipped++
		return
	}
	ok, suppressed := l.e.clientLog.Allow(msgFrameDropped)
	if !ok {
		in.logSkipped++
		return
	}
	in.logNext = l.now + int64(time.Second)
	var frame string
	if in.host {
		// The policy never saw the TAP's frame; the one drop logged for
		// the TAP is a remote-mac-conflict, which names the client.
		owner, _ := l.e.macs.Lookup(in.conflictSrc, l.now)
		frame = "source " + mactable.FormatKey(in.conflictSrc) + " is live on client port " + strconv.FormatUint(uint64(owner), 10)
	} else {
		frame = l.check.Describe()
	}
	l.e.log.Warn(msgFrameDropped, "port", in.id, "client", in.name, "reason", reason,
		"frame", frame, "not_logged_since_last", in.logSkipped, "suppressed", suppressed)
	in.logSkipped = 0
}

const msgFrameDropped = "frame dropped"
