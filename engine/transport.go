package engine

import (
	"github.com/vknetd/vknetd/ring"
)

// transport is how one kind of port moves frames between its peer and the
// switch's buffer pool: one type per kind (tapTransport, msgTransport for
// SEQPACKET, streamTransport, dgramTransport, monitorTransport), chosen
// once when the port is made, as gVisor's fdbased endpoint picks a
// dispatcher per kind of fd. Each owns its state and its batch scratch;
// the engine keeps the ports, the tables and the loop, and never asks what
// kind a port is. A new transport (vhost-user) is one more type.
type transport interface {
	// kind names the transport in listings and logs.
	kind() string
	// read reads up to len(refs) frames into the pool buffers refs,
	// recording their lengths, and returns how many hold frames. A frame
	// longer than its buffer is recorded with the buffer's whole size,
	// more than the largest frame, so forwardOne drops it as oversize
	// rather than forwarding it cut. A non-nil error closes the port;
	// errPeerClosed is a hang-up.
	read(p *port, refs []ring.Ref) (int, error)
	// write sends frames from the head of p's queue and releases what it
	// sent. errWouldBlock: the peer took nothing, wait for writability;
	// errRetryLater (with p.retryAt set): only a timer can say when to
	// try again; errPeerClosed or another error closes the port.
	write(p *port) error
	// close lets go of what the transport holds (its fd, its peer's
	// registration); the port is being closed.
	close(p *port)
}

// bufferedReader is a transport that may hold complete frames it has
// already read from the kernel: the poller will not report them, so the
// loop reads again while buffered says so (QEMU's stream framing).
type bufferedReader interface {
	buffered() bool
}

// readBudgeter is a transport that may need more buffers for one read
// than a batch: the TAP with offloads cuts a 64 KiB superframe into up to
// tapReadBudget frames. receive gives it up to readBudget buffers, at most
// maxReadBudget.
type readBudgeter interface {
	readBudget() int
}

// maxReadBudget caps readBudget: the engine's receive scratch is sized for
// it once.
const maxReadBudget = 64

// eventSource is a transport that polls fds of its own (subToken) and
// decides what their readiness means: ready is called for each report,
// sub 0 being the port's own fd, and says whether the loop should read
// frames, send queued ones, both or neither. An error closes the port.
type eventSource interface {
	ready(p *port, sub uint8, hangup bool) (read, write bool, err error)
}

// largeWaiter is a transport whose read may stop at a superframe for want
// of a large buffer (vhost-user: the frame waits in the guest's ring, and
// the guest will not kick for it again). The engine reads it again once a
// large buffer is free, rather than at once and in vain.
type largeWaiter interface {
	waitsForLarge() bool
}

// writeWaiter is a transport that learns by other means than its fd's
// write readiness when its peer can take frames again (vhost-user: the
// guest kicks its RX ring).
type writeWaiter interface {
	waitWritable(p *port, on bool) error
}

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
}

// sent is the common tail of a send: count and release the first n queued
// frames.
func (io *portIO) sent(p *port, n int) {
	for i := 0; i < n; i++ {
		r := p.txq.At(i)
		p.cnt.txFrames++
		p.cnt.txBytes += uint64(io.pool.Len(r))
		io.pool.Release(r)
	}
	p.txq.Drop(n)
}

// skipHead drops the head frame, which the peer can never take (larger
// than its socket accepts, say), instead of retrying it forever.
func (io *portIO) skipHead(p *port) {
	io.pool.Release(p.txq.At(0))
	p.txq.Drop(1)
	p.cnt.drops[DropSendError]++
}
