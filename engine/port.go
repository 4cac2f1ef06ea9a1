package engine

import (
	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/ring"
)

// port is one side of the switch: the TAP, a connected client, or a monitor.
type port struct {
	id       uint32
	fd       int // -1 for a dgram client reached only through its listener
	name     string
	pid, uid int32
	user     *user // the user who connected it (users.go); nil for the TAP and monitors

	txq        ring.Queue // frames waiting to be sent to this port
	dirty      bool       // in Engine.dirty: has frames queued during this batch
	writeArmed bool       // poller reports writability: the kernel pushed back
	hangup     bool       // the peer closed; read what is left, then close
	txClosed   bool       // sending failed because the peer is gone; read what is left, then close
	dead       bool       // closed at the end of this loop iteration

	// readRound is the loop's round in which p was last read; readAgain
	// says p is in Engine.readNext, to be read in the next round.
	readRound uint64
	readAgain bool
	// waitsLarge: p is in Engine.largeWaiters.
	waitsLarge bool

	cnt counters
	// filterCookie keys the kernel filter's drop counter for the socket
	// this client sends on; 0 when the kernel does not filter it.
	filterCookie uint64

	// Drop logging is rate limited per port: at most one line per second,
	// with the number of drops that were not logged in between.
	logNext    int64
	logSkipped uint64
	// heardAt is when the port last sent a frame (the loop's clock);
	// stopped says its device is stopped (vhost-user: GET_VRING_BASE on a
	// ring that ran). Both tell whether a VM has left it (migrate.go).
	heardAt int64
	stopped bool
	// conflictSrc, on the TAP, is the source MAC of the frame last
	// dropped as remote-mac-conflict, for its log line.
	conflictSrc uint64

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
	// watched are the fds the engine polls for t besides fd (engine.watch),
	// by sub-number less one; -1 for none.
	watched [maxSubFDs]int

	// dgram is a datagram client's address and liveness (dgram.go); nil
	// for the other kinds.
	dgram *dgramState
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
