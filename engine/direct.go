package engine

import (
	"github.com/vknetd/vknetd/ring"
	"github.com/vknetd/vknetd/secure"
)

// One copy from guest to guest. A vhost-user guest's frame longer than
// oneCopyOver (any longer than splitHead, in a chain of several
// descriptors) is read split (directIO): its first splitHead bytes into a
// pool buffer, the rest left in the guest's memory. The switch decides
// and secure mode checks on the head in the pool buffer, which the sender
// can no longer change; when the frame goes to one vhost-user port of the
// same loop with nothing queued before it, it is written there straight
// from the sender's memory (deliverSplit): the head from the pool buffer,
// the rest with its one copy. Any other way (a wait in a queue, a flood,
// a monitor, another loop, a TAP or socket port, a check that reads past
// the head: secure.HeadDecides) first copies the rest into the pool
// buffer (fillRest), and the frame goes on as every other frame does.

// splitHead is how much of a long frame the switch copies before it
// decides: Ethernet with a tag, IPv4 or IPv6 and a TCP header with
// options, all that forwarding and the checks read of most frames.
const splitHead = 128

// oneCopyOver is how long a frame in one descriptor (the chain Linux and
// DPDK send) may be and still be read whole, copied twice, guest to pool
// buffer to guest, as every frame of a standard MTU is: with DPDK testpmd
// guests, 1514-byte frames moved 5 % more that way than copied once (26
// alternating rounds, p = 0.051) and 21 % more with --busy-poll (14
// rounds, p = 0.039), and with the Go guests of BenchmarkVhostUser one
// copy gained nothing from 1514 to 6000 bytes; it pays at 9000 (README,
// "One copy from guest to guest"). A variable for the tests, which set it
// to split every frame.
var oneCopyOver = 4096

// decidesOnHead says the frame being switched, a split one, can be
// forwarded and checked by its head alone.
func (l *loop) decidesOnHead(frame []byte) bool {
	return len(l.mirrors) == 0 && !l.firstLoopMirrors() &&
		(!l.e.secure || secure.HeadDecides(frame[:splitHead]))
}

// fillRest copies the rest of the split frame being switched into its
// pool buffer r, after which it is a frame like any other. False: the
// sender's memory failed, and in is closed.
func (l *loop) fillRest(in *port, r ring.Ref) bool {
	l.split = false
	l.io.restsCopied++
	if err := in.caps.direct.fillRest(l.slot, l.pool.Frame(r), &l.failed); err != nil {
		l.srcFailed(in, err)
		return false
	}
	return true
}

// deliverSplit delivers the split frame being switched to out, on this
// loop: straight from the sender's memory when out takes it so and has
// room with nothing queued before it, else through r as deliver does.
func (l *loop) deliverSplit(in, out *port, r ring.Ref, fromClient bool) {
	if d := out.caps.direct; d != nil && out.txq.Len() == 0 && !out.txClosed && !out.dead {
		w, err, srcErr := d.writeFrom(in.caps.direct, l.slot, l.pool.Frame(r)[:splitHead], &l.failed, &l.failed)
		switch {
		case srcErr != nil:
			l.srcFailed(in, srcErr)
			return
		case err != nil:
			out.cnt.count(&l.failed)
			l.failed = tally{}
			l.kill(out, err)
			return
		case w == directOversize:
			// As write counts a frame the guest's buffers can never hold.
			out.cnt.drops[DropSendError]++
			l.wrote(out)
			return
		case w == directWritten:
			out.cnt.txFrames++
			out.cnt.txBytes += uint64(len(l.pool.Frame(r)))
			l.moved++
			l.io.guestToGuest++
			l.wrote(out)
			return
		}
		// No room: the frame waits in out's queue, and so do those after it.
	}
	if l.fillRest(in, r) {
		l.deliver(in, out, r, fromClient)
	}
}

// wrote notes that out was written to straight from a guest in this
// batch, to be published.
func (l *loop) wrote(out *port) {
	if !out.directWritten {
		out.directWritten = true
		l.written = append(l.written, out)
	}
}

// endWrites publishes what deliverSplit wrote in this batch.
func (l *loop) endWrites() {
	for _, p := range l.written {
		p.directWritten = false
		if !p.dead {
			p.caps.direct.endWrites()
		}
	}
	l.written = l.written[:0]
}

// srcFailed closes in, whose memory failed while its split frame was
// copied (a front-end that shrank it), counting what its transport said.
func (l *loop) srcFailed(in *port, err error) {
	in.cnt.count(&l.failed)
	l.failed = tally{}
	l.kill(in, err)
}
