package engine

import (
	"sync/atomic"

	"github.com/vknetd/vknetd/ring"
	"github.com/vknetd/vknetd/secure"
)

// Frames between loops (--workers). A frame read by one loop for a port
// of another is handed over as a buffer reference on a ring from the one
// loop to the other: one single-producer single-consumer ring per ordered
// pair of loops, so no two goroutines ever write the same index and no
// frame takes a lock. The producer fills entries during a batch and
// publishes them at its flush, with one atomic store per ring; it wakes
// the consumer (one eventfd write) only if the consumer sleeps in its
// poller. The consumer drains every ring into it in each round, in order,
// so the frames of one source port reach each destination in the order
// they were read. The reference an entry carries is the entry's own: the
// consumer releases it when it has queued the frame.
//
// What the source loop decides stays with it: secure mode, learning, the
// TAP rules (an entry says whether the frame may go to the TAP), and the
// frame's preparation to go whole (offload.go): after it is handed over,
// no loop writes the buffer. Each destination loop delivers to its own
// ports: the one port of a unicast entry, every port of a flood entry,
// its mirrors for a mirror entry; it cuts the frame for its ports that
// need it cut, into buffers of its own.

// crossEntry is one frame handed to another loop.
type crossEntry struct {
	ref  ring.Ref
	kind crossKind
	// noTap: the frame may not go to the TAP (secure mode's TAP rules, or
	// it came from the TAP), which the source loop judged.
	noTap bool
	out   *port // crossUnicast, crossQueue: the destination
}

type crossKind uint8

const (
	crossUnicast crossKind = iota // to out
	crossFlood                    // to every port of the loop but mirrors
	crossMirror                   // to the loop's mirrors
	// crossQueue: to out, the queue handle (or port) serving the flow of
	// a frame flooded to a spread port (spread.go). Unlike a unicast
	// entry it never takes the read's reference: the flood queues it
	// elsewhere too.
	crossQueue
)

// crossRingLen is each ring's length, in frames: far more than one round
// of reads brings. A loop whose rings to another have less than a read's
// room left reads nothing until that loop has taken some (crossRoom):
// the frames wait where they are, in the clients' sockets and rings, as
// they would for a busy switch, instead of being lost because one loop's
// thread was not scheduled for a moment. A frame that finds its ring full
// all the same is dropped as worker-ring-full.
const crossRingLen = 1024

// crossRing is a single-producer single-consumer ring of entries.
type crossRing struct {
	// head is the consumer's: entries before it are done. tail is the
	// producer's: entries before it are published. Each on a cache line
	// of its own, with the other side's working copy.
	head atomic.Uint64
	// wantRoom: the producer is held back by this ring and sleeps; the
	// consumer wakes it when it takes entries (heldBackByCross).
	wantRoom atomic.Bool
	_        [55]byte
	tail     atomic.Uint64
	// staged is the producer's next entry (published at its flush);
	// seenHead its last look at head.
	staged, seenHead uint64
	_                [40]byte
	entries          [crossRingLen]crossEntry
}

// push stages an entry, or reports false when the ring is full.
func (r *crossRing) push(e crossEntry) bool {
	if r.staged-r.seenHead == crossRingLen {
		r.seenHead = r.head.Load()
		if r.staged-r.seenHead == crossRingLen {
			return false
		}
	}
	r.entries[r.staged%crossRingLen] = e
	r.staged++
	return true
}

// publish makes the staged entries visible to the consumer and reports
// whether there were any.
func (r *crossRing) publish() bool {
	if r.staged == r.tail.Load() {
		return false
	}
	r.tail.Store(r.staged)
	return true
}

// pending: the consumer has entries to take.
func (r *crossRing) pending() bool { return r.head.Load() != r.tail.Load() }

// crossLinks are a loop's rings: to[i] carries its frames to loop i, from[i]
// loop i's to it (nil for itself). With one loop there are none.
type crossLinks struct {
	to, from []*crossRing
	// sleeping: the loop waits in its poller, and a producer that publishes
	// wakes it (wake).
	sleeping atomic.Bool
}

// linkLoops makes the rings between every ordered pair of loops.
func linkLoops(loops []*loop) {
	if len(loops) < 2 {
		return
	}
	for _, l := range loops {
		l.cross.to = make([]*crossRing, len(loops))
		l.cross.from = make([]*crossRing, len(loops))
	}
	for i, src := range loops {
		for j, dst := range loops {
			if i != j {
				r := new(crossRing)
				src.cross.to[j], dst.cross.from[i] = r, r
			}
		}
	}
}

// handOver stages r for loop dst as entry kind; the entry holds its own
// reference. A full ring drops the frame, counted on in.
//
// A unicast entry takes the read's own reference instead when nothing
// else holds the frame and nothing will after (a mirror entry, a cut):
// the other loop becomes its one owner, and neither counts its
// references atomically (ring.Pool.Cross), which costs a cache miss each
// time as the buffers' counts move between the loops' cores.
func (l *loop) handOver(in *port, dst *loop, r ring.Ref, kind crossKind, out *port, noTap bool) {
	move := kind == crossUnicast && !l.cut.offloaded && !l.firstLoopMirrors() && l.pool.Sole(r)
	if !l.cross.to[dst.index].push(crossEntry{ref: r, kind: kind, out: out, noTap: noTap}) {
		in.cnt.drops[DropWorkerRingFull]++
		return
	}
	if move {
		l.handedOff = true
		return
	}
	l.pool.Cross(r)
	l.pool.Hold(r)
}

// releaseRead lets go of a frame's read reference once it is switched,
// unless handOver gave it to another loop.
func (l *loop) releaseRead(r ring.Ref) {
	if l.handedOff {
		l.handedOff = false
		return
	}
	l.pool.Release(r)
}

// firstLoopMirrors: the frames this loop switches go to the first loop's
// mirrors too (forwardOne), after their destinations.
func (l *loop) firstLoopMirrors() bool {
	return l.cross.to != nil && l.index != 0 && l.e.mirrored.Load() > 0
}

// handOverUnicast hands r to the loop of out, its destination. The TAP
// rules are judged here, where the checker holds the frame's verdict.
func (l *loop) handOverUnicast(in, out *port, r ring.Ref, fromClient bool) {
	if out.host && fromClient && l.e.secure {
		if v := l.check.ToTap(); v != secure.Pass {
			l.refused(in, v)
			return
		}
	}
	if l.readyToHandOver(in, r) {
		l.handOver(in, out.loop, r, crossUnicast, out, false)
	}
}

// handOverFlood hands r to every other loop that has ports, for all of
// them; to the TAP's loop with the TAP rules' verdict.
func (l *loop) handOverFlood(in *port, r ring.Ref, fromClient bool) {
	for _, dst := range l.e.loops {
		if dst == l || dst.nports.Load() == 0 {
			continue
		}
		if !l.readyToHandOver(in, r) {
			return
		}
		noTap := false
		if fromClient && l.e.secure && dst.index == 0 {
			// host never changes once the port is reachable; dead is
			// the TAP's loop's to read.
			if tap := l.e.ports.get(0); tap != nil && tap.host {
				if v := l.check.ToTap(); v != secure.Pass {
					l.refused(in, v)
					noTap = true
				}
			}
		}
		l.handOver(in, dst, r, crossFlood, nil, noTap)
	}
}

// handOverMirror hands r to the first loop's mirrors.
func (l *loop) handOverMirror(in *port, r ring.Ref) {
	if l.readyToHandOver(in, r) {
		l.handOver(in, l.e.loops[0], r, crossMirror, nil, true)
	}
}

// readyToHandOver prepares a frame with offload work to go whole, once,
// before another loop sees it: from then on no loop writes it.
func (l *loop) readyToHandOver(in *port, r ring.Ref) bool {
	if !l.cut.offloaded || !l.pool.Hdr(r).Offloaded() {
		return true
	}
	return l.prepareWhole(in, r)
}

// crossRoom says whether every ring from l has room for what one more
// read may hand over: for each frame one entry, and one for the mirrors.
func (l *loop) crossRoom() bool {
	for _, r := range l.cross.to {
		if r != nil && r.staged-r.head.Load() > crossRingLen-2*uint64(len(l.rxRefs)) {
			return false
		}
	}
	return true
}

// publishCross publishes what the last batch staged for other loops and
// wakes those that sleep.
func (l *loop) publishCross() {
	for i, r := range l.cross.to {
		if r == nil || !r.publish() {
			continue
		}
		dst := l.e.loops[i]
		if dst.cross.sleeping.Load() && dst.cross.sleeping.CompareAndSwap(true, false) {
			dst.wake()
		}
	}
}

// crossPending: another loop has handed this one frames it has not taken.
func (l *loop) crossPending() bool {
	for _, r := range l.cross.from {
		if r != nil && r.pending() {
			return true
		}
	}
	return false
}

// receiveCross takes the frames other loops handed this one, ring by
// ring, in order, delivers them to its ports and flushes them.
func (l *loop) receiveCross() {
	for i, r := range l.cross.from {
		if r == nil {
			continue
		}
		head, tail := r.head.Load(), r.tail.Load()
		if head == tail {
			continue
		}
		for n := 1; head != tail; n++ {
			if n%l.io.batch == 1 || l.io.batch == 1 {
				l.warm(r, head, min(tail, head+uint64(l.io.batch)))
			}
			ent := &r.entries[head%crossRingLen]
			l.deliverCross(ent)
			ent.out = nil // the ring keeps no port alive
			head++
			// Flushed a batch at a time, as frames read are: the
			// destinations' queues hold a few batches, not a ring.
			if l.cut.offloaded && l.endCut() || n%l.io.batch == 0 {
				r.head.Store(head)
				l.flush()
			}
		}
		r.head.Store(head)
		l.flush()
		if r.wantRoom.Load() && r.wantRoom.CompareAndSwap(true, false) {
			l.e.loops[i].wake()
		}
	}
}

// heldBackByCross: the loop's only work is reading ports that a ring to
// another loop holds back (crossRoom), so it may sleep until that loop
// takes frames instead of polling in a spin; the full rings are asked to
// wake it. Room is looked at again after asking: a consumer that made
// room before it saw the request leaves room to see.
func (l *loop) heldBackByCross() bool {
	if l.cross.to == nil || l.crossRoom() || l.crossPending() ||
		len(l.largeWaiters) > 0 && l.pool.FreeLarge() > 0 {
		return false
	}
	for _, r := range l.cross.to {
		if r != nil {
			r.wantRoom.Store(true)
		}
	}
	return !l.crossRoom()
}

// warm loads the pool records of the entries from head to end of r before
// they are delivered one by one. Each record was last written on the other
// loop's CPU, and its first load here is a cache miss: loaded in a row,
// independent of each other, the misses overlap instead of stalling the
// delivery of each frame in turn.
func (l *loop) warm(r *crossRing, head, end uint64) {
	var sum int
	for h := head; h != end; h++ {
		sum += l.pool.Len(r.entries[h%crossRingLen].ref)
	}
	l.warmed = sum // kept, so the loads are not dropped as unused
}

// deliverCross queues a frame another loop handed over to this loop's
// ports the entry names, and lets go of the entry's reference.
func (l *loop) deliverCross(ent *crossEntry) {
	r := ent.ref
	l.cut.offloaded = l.pool.Hdr(r).Offloaded()
	if l.cut.offloaded {
		l.cut.begin()
		l.cut.whole, l.cut.shared = true, true // prepared by the source loop
	}
	switch ent.kind {
	case crossUnicast, crossQueue:
		if out := ent.out; out.closed || out.dead {
			// It closed while the frame was on its way: as if it had been
			// in its queue.
			l.departed.drops[DropPortClosed]++
		} else if !(out.host && ent.noTap) {
			l.deliver(out, out, r, false)
		}
	case crossFlood:
		for _, out := range l.live {
			// A spread port got it from the source loop (floodSpread).
			if !out.dead && !out.mirror && !(out.host && ent.noTap) && out.spread == nil {
				l.deliver(out, out, r, false)
			}
		}
	case crossMirror:
		for _, m := range l.mirrors {
			l.deliver(m, m, r, false)
		}
	}
	l.pool.Release(r)
}

// wake interrupts l's wait in its poller, unless it has exited.
func (l *loop) wake() error {
	l.wakeMu.Lock()
	defer l.wakeMu.Unlock()
	if l.pollClosed {
		return nil
	}
	return l.poll.wake()
}
