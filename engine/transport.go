package engine

import (
	"time"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/handover"
	"github.com/vknetd/vknetd/ring"
)

// transport is how one kind of port moves frames between its peer and the
// switch's buffer pool: one type per kind (tapTransport, msgTransport for
// SEQPACKET, streamTransport, dgramTransport, monitorTransport,
// vhostTransport), chosen once when the port is made, as gVisor's fdbased
// endpoint picks a dispatcher per kind of fd. Each owns its fds, its state
// and its batch scratch.
//
// The contract is narrow, so that a transport can be read (and faked in
// tests) on its own: it fills buffers or empties a queue view and returns
// what happened, counts and drop reasons included; it never sees the port
// or the engine. What it can do is declared once, in its caps, when it is
// built. The engine keeps the ports, the counters, the tables and the
// loop, and never asks what kind a port is.
type transport interface {
	// caps says what the transport does beyond reading and writing. The
	// engine asks once, when it makes the port.
	caps() transportCaps
	// read reads up to len(refs) frames into the pool buffers refs,
	// recording their lengths. A frame longer than its buffer is recorded
	// with the buffer's whole size, more than the largest frame, so
	// forwardOne drops it as oversize rather than forwarding it cut.
	// hungUp says the peer has closed: an empty message is then end of
	// stream, not an empty frame.
	read(refs []ring.Ref, hungUp bool) readResult
	// write sends frames from the head of q; the engine releases the
	// ones the result says are done.
	write(q txView) writeResult
	// ready, for a transport with caps.eventSource only, says what a
	// report of its fd sub (0: the port's own fd) means.
	ready(sub uint8, hangup bool) readiness
	// export writes what an upgrade carries of the transport into hp,
	// with every loop parked (handover.go): the fds it hands over,
	// numbered by x.addFd, and the state that is not in them. An error
	// refuses the upgrade.
	export(x *exportScope, hp *handover.Port) error
	// close lets go of what the transport holds (its fds, its peer's
	// registration); the port is being closed and its fd is out of the
	// poller.
	close()
}

// exportScope is what a transport's export may use of the upgrade: the
// record's fd numbering, the switch's clock and its listeners' positions.
type exportScope struct {
	addFd         func(fd int) int // keeps fd (or -1) for the new process and numbers it
	now           int64            // the switch's clock, in ns since its start
	listenerIndex func(*listenerState) int
}

// transportCaps is what a transport declares about itself when it is
// built.
type transportCaps struct {
	// kind names the transport in listings and logs.
	kind string
	// readBudget is how many buffers one read may fill, when that is not
	// a batch: the TAP with offloads cuts a 64 KiB superframe into up to
	// tapReadBudget frames, a vhost-user guest's read takes up to
	// vhostReadBudget. At most maxReadBudget; 0 means a batch. The engine
	// caps it at what the pool's guarantee counts (Engine.readBudget).
	readBudget int
	// eventSource: the transport has fds of its own polled (readiness
	// watch, subToken) and decides what their readiness means (ready).
	eventSource bool
	// writeReadyElsewhere: the transport learns by other means than its
	// fd's write readiness when its peer can take frames again
	// (vhost-user: the guest kicks its RX ring, which is always polled).
	// The engine neither arms write readiness for it nor waits for it
	// before trying.
	writeReadyElsewhere bool
	// offloads is what the peer takes whole from the start
	// (gso.Offloads.Takes): the TAP's with TapVnetHdr, a monitor's. A
	// vhost-user guest's come with its readiness, as it negotiates them.
	offloads gso.Offloads
	// rings, when not nil, lets a busy-polling loop (Config.BusyPoll)
	// see its peer's work without a system call (vhost-user: rings in
	// shared memory).
	rings ringPoller
	// direct, when not nil, moves frames from peer to peer with one copy
	// (vhost-user: guest memory to guest memory; direct.go).
	direct directIO
	// held, when not nil, is how a supervisor keeps the peer across a
	// crash: a copy of state that changes while it runs (vhost-user;
	// supervise.go). Without it the peer's socket alone is kept.
	held heldTransport
	// spreader, when not nil, lets the peer's queue pairs be served by
	// several loops (vhost-user with several queue pairs; spread.go).
	spreader queueSpreader
	// pairs, when not nil, counts the peer's frames by queue pair for
	// listings (vhost-user: a queue handle's pairs or the port's own).
	pairs pairCounter
}

// ringPoller is a transport whose peer's frames and room the engine can
// see by looking at memory, as a busy-polling loop does.
type ringPoller interface {
	// pollRings says the peer has frames to read (read), if asked
	// (wantRead), or has room for frames queued to it (write), if asked
	// (wantWrite); it makes no system call. Each look loads a line the
	// peer writes, most often a cache miss: only what the loop will act
	// on is looked at.
	pollRings(wantRead, wantWrite bool) (read, write bool)
	// busyPoll says the loop polls (on) or waits in its poller again
	// (off): the peer may then post without notifying, and must notify
	// again. Off, read says it posted frames meanwhile, which no
	// notification will announce: read them now.
	busyPoll(on bool) (read bool, err error)
}

// directIO is a transport whose reads leave the bytes of a long frame
// past its head (splitHead) with the peer until the frame is delivered,
// and whose writes can take such a frame from another directIO's peer
// straight into its own (direct.go).
type directIO interface {
	// split says frame slot of the last read has only its first
	// splitHead bytes in its buffer, the rest still in the peer's memory.
	split(slot int) bool
	// fillRest copies the rest of split frame slot into buf, its buffer.
	// An error (counted in dropped) closes the port.
	fillRest(slot int, buf []byte, dropped *tally) error
	// releaseRead gives the peer back what the last read held: no rest
	// may be read after it.
	releaseRead()
	// writeFrom writes split frame slot of src's last read, head (its
	// buffer's first splitHead bytes) and then its rest from src's peer,
	// to this peer, to be published by endWrites. It is small, as it is
	// per frame: the tallies are written only on failure. err is this
	// port's failure, counted in dropped; srcErr src's, in srcDropped.
	writeFrom(src directIO, slot int, head []byte, dropped, srcDropped *tally) (r directWrite, err, srcErr error)
	// endWrites publishes what writeFrom wrote since the last call.
	endWrites()
}

// directWrite is what directIO.writeFrom did with a frame.
type directWrite uint8

const (
	directNoRoom   directWrite = iota // nothing taken: the peer has no room now
	directWritten                     // written
	directOversize                    // taken and dropped: the peer's buffers can never hold it
)

// maxReadBudget caps readBudget: the engine's receive scratch is sized for
// it once.
const maxReadBudget = 64

// vhostReadBudget is a vhost-user port's read: twice a batch. Each read of
// a ring starts with a chain of loads that wait on one another, every one
// a line the guest's core wrote last (the avail idx, then the entries and
// descriptors it names, then the buffers they point to), and a write ends
// with the used ring's; where a line takes 500 ns to come over, those
// trips, not the frames, set the rate. Twice the frames a read halves
// their share: the testpmd point of make bench-peers moved 3.5-16 % more
// 64-byte frames a second, the most where the trips were longest (README,
// "Where a 64-byte vhost-user frame's time goes").
const vhostReadBudget = maxReadBudget

// readBudget is how many buffers one read of a port with caps c may fill:
// what it declared, a batch if nothing, and never more than the pool's
// guarantee counts a read as (readMax).
func (e *Engine) readBudget(c transportCaps) int {
	if c.readBudget <= 0 {
		return min(e.cfg.Batch, e.readMax)
	}
	return min(c.readBudget, e.readMax)
}

// tally is what one call of a transport dropped, by reason, for the engine
// to add to the port's counters. Drops of frames the transport took from
// its peer (rx) also count those frames as received, as the engine counts
// the frames it drops itself.
type tally struct {
	any      bool   // something is counted
	received uint32 // frames taken from the peer and dropped before they reached a buffer
	drops    [numDrops]uint32
	gso      [gso.NumReasons]uint32
}

// dropReceived counts n frames received and dropped for reason d.
func (t *tally) dropReceived(d Drop, n uint32) {
	if n == 0 {
		return
	}
	t.any = true
	t.received += n
	t.drops[d] += n
}

// dropGSO counts n frames received and dropped because its
// virtio_net_hdr lies about it (gso.Check's reason r).
func (t *tally) dropGSO(r gso.Reason, n uint32) {
	if n == 0 {
		return
	}
	t.any = true
	t.received += n
	t.gso[r] += n
}

// drop counts a drop that is not a received frame: a frame refused on
// sending, a read that found no buffer, a peer closed for what it did.
func (t *tally) drop(d Drop, n uint32) {
	if n == 0 {
		return
	}
	t.any = true
	t.drops[d] += n
}

// readResult is what one read did.
type readResult struct {
	n       int // refs[:n] hold frames
	dropped tally
	// buffered: the transport holds complete frames it has read already
	// (a stream's buffer, a vhost-user ring that has more, a cut
	// superframe's rest): the poller will not report them, so the engine
	// reads again in the next round.
	buffered bool
	// waitsLarge: the read stopped at a superframe for want of a large
	// buffer (vhost-user: the frame waits in the guest's ring, and the
	// guest will not kick for it again). The engine reads again once a
	// large buffer is free, rather than at once and in vain.
	waitsLarge bool
	// err closes the port; errPeerClosed is a hang-up.
	err error
}

// writeResult is what one write did.
type writeResult struct {
	// done is how many frames from the head of the queue the transport is
	// through with, sent or dropped: the engine releases them.
	done          int
	frames, bytes uint64 // of them, sent
	dropped       tally  // of them, refused (send-error), and anything else counted
	// blocked: the peer takes no more now; wait for its writability.
	blocked bool
	// retryAfter: the peer pushed back where no poller can tell when it
	// has room (datagrams through a listener): try again after this long.
	retryAfter time.Duration
	// rerouted: the transport closed its own fd and reaches its peer
	// another way from now on (a datagram client answered through its
	// listener); the engine forgets the port's fd.
	rerouted bool
	// err closes the port; errPeerClosed and peerGone are hang-ups.
	err error
}

// txView is a port's transmit queue as a transport sees it: the frames
// waiting, oldest first. The engine takes off what the transport is done
// with.
type txView struct{ q *ring.Queue }

// Len is how many frames wait.
func (v txView) Len() int { return v.q.Len() }

// At is the i-th oldest (0 is the head).
func (v txView) At(i int) ring.Ref { return v.q.At(i) }

// readiness is what an event source's report means.
type readiness struct {
	read, write bool // read frames, send queued ones
	// offloads is what the peer takes whole now, when offloadsKnown (a
	// vhost-user guest, once it set its features).
	offloads      gso.Offloads
	offloadsKnown bool
	dropped       tally
	err           error // closes the port
	// watch, when watchChanged, is every fd the transport wants polled
	// besides its own now, by sub-number less one (watch[0] is reported
	// as sub 1); -1 for none. The engine follows it into the poller.
	watch        [maxSubFDs]int
	watchChanged bool
	// stopped, when stateKnown, says whether the peer's device is stopped
	// now (vhost-user: a ring that ran stopped by GET_VRING_BASE), so
	// that the VM it served may have moved to another port (migrate.go).
	stopped, stateKnown bool
	// heldChanged: the state a supervisor keeps of the port changed
	// (heldTransport): the engine tells it.
	heldChanged bool
}

// maxSubFDs is how many fds a transport may have polled besides its own
// (vhost-user: its guest's kick eventfds, one per ring of up to
// vhostuser.MaxQueuePairs pairs).
const maxSubFDs = 16

// polledByEngine is embedded by the transports whose one fd the engine
// polls: they have no fds of their own to judge.
type polledByEngine struct{}

func (polledByEngine) ready(uint8, bool) readiness { return readiness{read: true} }

// portIO is what every transport reads and writes through: the pool its
// frames live in and the loop's batch size.
type portIO struct {
	pool  *ring.Pool
	batch int

	// What moving frames costs, counted by every transport on the loop
	// goroutine: system calls made for frames, and frames copied in user
	// space (beyond the kernel's copy into or out of the pool). The
	// performance guards (guards_test.go) hold them per frame, since
	// timings on these machines vary and these numbers do not.
	syscalls uint64
	copies   uint64
	// superframesCut counts superframes cut into MTU-sized frames in user
	// space (offload.go: the one cutting path). Tests read it; it is not
	// in the listings.
	superframesCut uint64
	// guestToGuest counts frames a directIO wrote straight from their
	// sender's memory (one copy of their rest), restsCopied split frames
	// whose rest was copied into their pool buffer instead (two copies,
	// as for every other frame). Tests read them.
	guestToGuest, restsCopied uint64

	// The cutting path's scratch (portIO.cut).
	cutBufs  [][]byte
	cutSizes []int
}

func newPortIO(pool *ring.Pool, batch int) portIO {
	return portIO{pool: pool, batch: batch, cutBufs: make([][]byte, maxSegments), cutSizes: make([]int, maxSegments)}
}

// sent is the result of sending the first n queued frames.
func (io *portIO) sent(q txView, n int) writeResult {
	res := writeResult{done: n, frames: uint64(n)}
	for i := 0; i < n; i++ {
		res.bytes += uint64(io.pool.Len(q.At(i)))
	}
	return res
}

// skipHead drops the head frame, which the peer can never take (larger
// than its socket accepts, say), instead of retrying it forever.
func skipHead() writeResult {
	res := writeResult{done: 1}
	res.dropped.drop(DropSendError, 1)
	return res
}
