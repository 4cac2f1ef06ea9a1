package engine

import (
	"sync/atomic"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/mactable"
	"github.com/vknetd/vknetd/ring"
)

// port is one side of the switch: the TAP, a connected client, or a monitor.
type port struct {
	id       uint32
	loop     *loop // the loop that owns the port: it alone reads, writes and counts it
	fd       int   // -1 for a dgram client reached only through its listener
	name     string
	pid, uid int32
	user     *user // the user who connected it (users.go); nil for the TAP and monitors

	txq        ring.Queue // frames waiting to be sent to this port
	dirty      bool       // in loop.dirty: has frames queued during this batch
	writeArmed bool       // poller reports writability: the kernel pushed back
	hangup     bool       // the peer closed; read what is left, then close
	txClosed   bool       // sending failed because the peer is gone; read what is left, then close
	dead       bool       // closed at the end of this loop iteration
	closed     bool       // closed: frames other loops handed over for it are dropped
	// directWritten: in loop.written, written to straight from another
	// guest during this batch, to be published (direct.go).
	directWritten bool

	// readRound is the loop's round in which p was last read; readAgain
	// says p is in loop.readNext, to be read in the next round.
	readRound uint64
	readAgain bool
	// waitsLarge: p is in loop.largeWaiters.
	waitsLarge bool

	cnt counters
	// filterCookie keys the kernel filter's drop counter for the socket
	// this client sends on; 0 when the kernel does not filter it.
	filterCookie uint64

	// Drop logging is rate limited per port: at most one line per second,
	// with the number of drops that were not logged in between.
	logNext    int64
	logSkipped uint64
	// left is what another port's loop reads to judge whether the VM
	// behind this one has left it (migrate.go).
	left departure
	// conflictSrc, on the TAP, is the source MAC of the frame last
	// dropped as remote-mac-conflict, for its log line.
	conflictSrc uint64
	// srcHint and dstHint remember where the MAC table held the source
	// this port last learned and the destination it last looked up: a
	// port's frames mostly share both, and a hint checked costs two
	// loads where a lookup hashes and probes (mactable.Hint). The port's
	// loop alone uses them (a queue handle has its own).
	srcHint, dstHint mactable.Hint

	// host is the TAP: the host's side, not a client. observer is a
	// monitor, which gets copies of frames and is counted apart; mirror
	// one that gets every forwarded frame, not only floods.
	host, observer, mirror bool

	// offloads is what the port takes whole (gso.Offloads.Takes): the
	// TAP's with TapVnetHdr, a vhost-user guest's as it negotiated them.
	// Frames that ask for more are cut or finished for it.
	offloads gso.Offloads

	// retryAt is when to retry sending after the peer pushed back where
	// the poller cannot tell us (datagrams through a listener); 0 when not
	// waiting.
	retryAt int64

	t    transport     // how frames move for this kind of port
	caps transportCaps // what t declared when it was built
	// watched are the fds the engine polls for t besides fd (loop.watch),
	// by sub-number less one; -1 for none.
	watched [maxSubFDs]int

	// dgram is a datagram client's address and liveness (dgram.go); nil
	// for the other kinds.
	dgram *dgramState

	// spread, on a port whose queue pairs are served by several loops,
	// says which serves each (spread.go); nil while its loop serves them
	// all. Its loop writes it only while every other loop is parked, so
	// any loop reads it. quietSince is when the port's peer last sent a
	// control message (its loop's clock): it is spread only once quiet.
	spread     *spreading
	quietSince int64
	// queuesOf, on a queue handle (a loop serving some of another port's
	// pairs), is that port; nil on every other port.
	queuesOf *port
}

// retire takes off p's queue the frames a write is through with, back to
// pool, and counts them.
func (p *port) retire(pool *ring.Pool, res *writeResult) {
	for i := 0; i < res.done; i++ {
		pool.Release(p.txq.At(i))
	}
	p.txq.Drop(res.done)
	p.cnt.txFrames += res.frames
	p.cnt.txBytes += res.bytes
	p.cnt.count(&res.dropped)
}

// departure is what tells that the VM behind a client port may have left
// it, for a frame from one of its MACs on another port (migrate.go). The
// port's own loop writes it; the loop of the port the frame came in on,
// which may be another (--workers), reads it: so atomics, each written
// only when it changes.
type departure struct {
	// heardAt is when the port last sent a frame (its loop's clock, so one
	// store per round at most).
	heardAt atomic.Int64
	// stopped: its device is stopped (vhost-user: GET_VRING_BASE on a
	// ring that ran).
	stopped atomic.Bool
	// closing: the peer hung up or is gone, or the port closes at the end
	// of its loop's round.
	closing atomic.Bool
}

// heard notes a frame from the port at now.
func (d *departure) heard(now int64) {
	if d.heardAt.Load() != now {
		d.heardAt.Store(now)
	}
}
