package main

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/vhostguest"
	"github.com/vknetd/vknetd/tap"
)

// Tokens of the loop's fds in epoll; a link numbers its own from tokLink.
const (
	tokTAP  = 1
	tokStop = 2
	tokLink = 3
)

const (
	batchSize = 64 // frames per read or write call
	// superBatchSize is the batch when frames carry headers: each buffer
	// holds a 64 KiB superframe, so 16 of them are 1 MiB per direction.
	superBatchSize = 16
	// maxRounds bounds the batches one direction moves per wake-up, so
	// the other is served too.
	maxRounds = 16
)

// errStopped is the loop's way out on SIGTERM or SIGINT.
var errStopped = errors.New("stopped by a signal")

// link is the switch's side of the plug: the daemon's SEQPACKET socket or
// a vhost-user connection. The loop owns the TAP side.
type link interface {
	// watch adds the link's fds to the epoll set ep, with tokens from
	// tokLink up.
	watch(ep int) error
	// event serves readiness on one of the link's fds: in says the switch
	// may have frames for us, out that it may take frames again.
	event(tok int, events uint32) (in, out bool, err error)
	// recv takes up to len(bufs) frames from the switch, lengths in sizes
	// and, when hdrs is not nil, virtio-net headers in hdrs.
	recv(bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr) (int, error)
	// send gives frames to the switch, behind headers hdrs unless nil,
	// and returns how many it took; fewer than given means it is full
	// for now.
	send(frames [][]byte, hdrs []gso.VirtioNetHdr) (int, error)
	// idleIn is called when recv came back short, before the loop may
	// sleep: true means frames arrived since and recv should run again.
	idleIn() bool
	// blockedOut is called when send came back short: true means there is
	// room now; false, that event will report out when there is.
	blockedOut() bool
	// interest says what the loop waits for, for links whose fds are
	// level-triggered: in (frames from the switch) unless the TAP is full,
	// out (room in the switch) while frames wait for it.
	interest(in, out bool) error
	// drops is how many frames the link dropped (too big, truncated).
	drops() uint64
	close() error
}

// directLink is a link that moves frames between the TAP (with its
// virtio_net_hdr) and the switch itself, the kernel copying them straight
// to and from the switch's memory: the vhost-user link, whose rings are
// in memory the plug maps. Superframes then cross the plug with no copy of
// its own.
type directLink interface {
	// sendFrom reads up to limit frames from the TAP and gives them to the
	// switch: SinkFull means the switch is full (blockedOut, then event,
	// say when it is not), SourceDry that the TAP is empty.
	sendFrom(tapfd, limit int) (vhostguest.Moved, error)
	// recvTo writes up to limit frames from the switch to the TAP, leaving
	// in the switch's ring those the TAP pushed back (SinkFull); SourceDry
	// means the switch had no more (idleIn before sleeping).
	recvTo(tapfd, limit int) (vhostguest.Moved, error)
}

// batch is one direction's buffers: frames[head:n] are read and not yet
// written; hdrs[i] is frame i's header when the TAP carries them (else
// hdrs is nil), encoded in wire[i] for a write to the TAP.
type batch struct {
	bufs    [][]byte
	sizes   []int
	frames  [][]byte
	hdrs    []gso.VirtioNetHdr
	wire    [][]byte
	refused []bool
	head, n int
}

func newBatch(n, size int, vnet bool) batch {
	b := batch{bufs: make([][]byte, n), sizes: make([]int, n), frames: make([][]byte, n), refused: make([]bool, n)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, size)
	}
	if vnet {
		b.hdrs = make([]gso.VirtioNetHdr, n)
		b.wire = make([][]byte, n)
		for i := range b.wire {
			b.wire[i] = make([]byte, tap.VnetHdrSize)
		}
	}
	return b
}

func (b *batch) pending() bool { return b.head < b.n }

// counters are the plug's frame counts, printed with -v.
type counters struct {
	upFrames, upBytes     uint64 // TAP to switch
	downFrames, downBytes uint64 // switch to TAP
	tapRefused            uint64 // frames the TAP would not take
	tapTooLong            uint64 // frames read from the TAP longer than a buffer: dropped
}

// loop moves frames between the TAP and the switch: one epoll set, level-
// triggered, each direction read in batches until the source is empty or
// the destination full. A full destination stops reading its source until
// it takes frames again, so nothing is read that cannot be written.
type loop struct {
	ep, tapfd, stopfd int
	tapName           string
	sw                link
	up, dn            batch // up: TAP to switch; dn: switch to TAP
	// direct, with vnet over a link that can, moves frames in place of
	// up and dn, which are then empty.
	direct directLink

	// vnet: every TAP read and write carries a virtio_net_hdr
	// (tap.VnetHdrSize bytes), passed to and from the link beside the
	// frame. vnetHdr is the header being read; over catches
	// the end of a frame longer than a buffer, to drop it.
	vnet    bool
	vnetHdr [tap.VnetHdrSize]byte
	over    [1]byte

	tapIn, swIn          bool // the source may have frames
	upBlocked, dnBlocked bool // the switch, the TAP took fewer than given
	tapEvents            uint32
	linkIn, linkOut      bool

	events [16]unix.EpollEvent
	st     counters
}

// newLoop builds the loop over a non-blocking TAP fd (or any fd with one
// frame per read and write) and a link; frameSize is the largest frame
// either way. With vnet the TAP carries a virtio_net_hdr before every
// frame and the link takes and gives headers: frames are superframes of
// up to gso.MaxFrameLen bytes, whatever frameSize says, in smaller
// batches. Such a link that is a directLink moves the frames itself, and
// the loop needs no buffers.
func newLoop(tapfd int, tapName string, sw link, frameSize int, vnet bool) (*loop, error) {
	n := batchSize
	if vnet {
		n, frameSize = superBatchSize, gso.MaxFrameLen
	}
	direct, _ := sw.(directLink)
	if !vnet {
		direct = nil
	}
	bufs := n
	if direct != nil {
		bufs = 0
	}
	l := &loop{ep: -1, stopfd: -1, tapfd: tapfd, tapName: tapName, sw: sw, vnet: vnet, direct: direct,
		up: newBatch(bufs, frameSize, vnet), dn: newBatch(bufs, frameSize, vnet),
		tapIn: true, swIn: true, linkIn: true}
	var err error
	if l.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if l.stopfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l.tapEvents = unix.EPOLLIN
	for _, a := range []struct {
		fd, tok int
		ev      uint32
	}{{tapfd, tokTAP, l.tapEvents}, {l.stopfd, tokStop, unix.EPOLLIN}} {
		ev := unix.EpollEvent{Events: a.ev, Fd: int32(a.tok)}
		if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, a.fd, &ev); err != nil {
			l.close()
			return nil, fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	if err := sw.watch(l.ep); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// stop makes run return errStopped; safe from any goroutine.
func (l *loop) stop() {
	one := [8]byte{1}
	unix.Write(l.stopfd, one[:])
}

func (l *loop) close() {
	for _, fd := range []*int{&l.ep, &l.stopfd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// run serves until a signal (errStopped) or an error: the switch or the
// TAP gone.
func (l *loop) run() error {
	for {
		if err := l.once(-1); err != nil {
			return err
		}
	}
}

func (l *loop) upWork() bool { return !l.upBlocked && (l.up.pending() || l.tapIn) }
func (l *loop) dnWork() bool { return !l.dnBlocked && (l.dn.pending() || l.swIn) }

// once waits for events (up to timeout ms, -1 forever; not at all while
// work is left from the last round) and moves what they allow.
func (l *loop) once(timeout int) error {
	if l.upWork() || l.dnWork() {
		timeout = 0
	}
	n, err := unix.EpollWait(l.ep, l.events[:], timeout)
	if err != nil && err != unix.EINTR {
		return fmt.Errorf("epoll_wait: %w", err)
	}
	for i := 0; i < n; i++ {
		ev := l.events[i].Events
		switch tok := int(l.events[i].Fd); tok {
		case tokStop:
			return errStopped
		case tokTAP:
			if ev&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				l.tapIn = true // a read says what went wrong
			}
			if ev&unix.EPOLLOUT != 0 {
				l.dnBlocked = false
			}
		default:
			in, out, err := l.sw.event(tok, ev)
			if err != nil {
				return err
			}
			l.swIn = l.swIn || in
			if out {
				l.upBlocked = false
			}
		}
	}
	if l.dnWork() {
		if err := l.down(); err != nil {
			return err
		}
	}
	if l.upWork() {
		if err := l.upward(); err != nil {
			return err
		}
	}
	return l.sync()
}

// upwardDirect is upward over a directLink: the frames go from the TAP
// into the switch's ring with no stop in between, so the TAP is read only
// while the ring has room for a superframe.
func (l *loop) upwardDirect() error {
	for r := 0; r < maxRounds && l.tapIn; r++ {
		m, err := l.direct.sendFrom(l.tapfd, superBatchSize)
		l.st.upFrames += uint64(m.Frames)
		l.st.upBytes += uint64(m.Bytes)
		l.st.tapTooLong += uint64(m.Dropped)
		if err != nil {
			return fmt.Errorf("reading TAP %s: %w (was it deleted?)", l.tapName, err)
		}
		if m.SourceDry {
			l.tapIn = false // empty: epoll says when it is not
		}
		if m.SinkFull && !l.sw.blockedOut() {
			l.upBlocked = true
			return nil
		}
	}
	return nil
}

// downDirect is down over a directLink: the frames go from the switch's
// ring to the TAP, and one the TAP pushes back waits in the ring (which
// holds the switch's next frames back too) until the TAP is writable.
func (l *loop) downDirect() error {
	for r := 0; r < maxRounds && l.swIn; r++ {
		m, err := l.direct.recvTo(l.tapfd, superBatchSize)
		l.st.downFrames += uint64(m.Frames)
		l.st.downBytes += uint64(m.Bytes)
		l.st.tapRefused += uint64(m.Dropped)
		if err != nil {
			return fmt.Errorf("writing TAP %s: %w (was it deleted?)", l.tapName, err)
		}
		if m.SinkFull {
			l.dnBlocked = true
			return nil
		}
		if m.SourceDry && !l.sw.idleIn() {
			l.swIn = false
		}
	}
	return nil
}

// upward moves frames from the TAP to the switch.
func (l *loop) upward() error {
	if l.direct != nil {
		return l.upwardDirect()
	}
	b := &l.up
	for r := 0; r < maxRounds; r++ {
		if b.pending() {
			k, err := l.sw.send(b.frames[b.head:b.n], b.hdrsOf(b.head, b.n))
			if err != nil {
				return err
			}
			for _, f := range b.frames[b.head : b.head+k] {
				l.st.upBytes += uint64(len(f))
			}
			l.st.upFrames += uint64(k)
			b.head += k
			if b.pending() {
				if l.sw.blockedOut() {
					continue
				}
				l.upBlocked = true
				return nil
			}
		}
		if !l.tapIn {
			return nil
		}
		n, err := l.readTAP(b)
		if err != nil {
			return fmt.Errorf("reading TAP %s: %w (was it deleted?)", l.tapName, err)
		}
		if n < len(b.bufs) {
			l.tapIn = false // empty: epoll says when it is not
		}
		for i := 0; i < n; i++ {
			b.frames[i] = b.bufs[i][:b.sizes[i]]
		}
		b.head, b.n = 0, n
	}
	return nil
}

// down moves frames from the switch to the TAP.
func (l *loop) down() error {
	if l.direct != nil {
		return l.downDirect()
	}
	b := &l.dn
	for r := 0; r < maxRounds; r++ {
		if b.pending() {
			k, err := l.writeTAP(b)
			if err == unix.EAGAIN {
				k, err = 0, nil
			}
			if err != nil {
				return fmt.Errorf("writing TAP %s: %w (was it deleted?)", l.tapName, err)
			}
			for i, f := range b.frames[b.head : b.head+k] {
				if b.refused[i] {
					l.st.tapRefused++
					continue
				}
				l.st.downFrames++
				l.st.downBytes += uint64(len(f))
			}
			b.head += k
			if b.pending() {
				l.dnBlocked = true
				return nil
			}
		}
		if !l.swIn {
			return nil
		}
		n, err := l.sw.recv(b.bufs, b.sizes, b.hdrs)
		if err != nil {
			return err
		}
		if n < len(b.bufs) && !l.sw.idleIn() {
			l.swIn = false
		}
		for i := 0; i < n; i++ {
			b.frames[i] = b.bufs[i][:b.sizes[i]]
		}
		b.head, b.n = 0, n
	}
	return nil
}

// hdrsOf is hdrs[from:to], or nil when frames carry no header.
func (b *batch) hdrsOf(from, to int) []gso.VirtioNetHdr {
	if b.hdrs == nil {
		return nil
	}
	return b.hdrs[from:to]
}

// readTAP fills b's buffers from the TAP (and, with vnet, b.hdrs from
// the headers before the frames) until it is empty or the buffers are
// full; it returns how many frames it read.
func (l *loop) readTAP(b *batch) (int, error) {
	if !l.vnet {
		return tap.ReadFrames(l.tapfd, b.bufs, b.sizes)
	}
	n := 0
	for n < len(b.bufs) {
		k, err := tap.ReadVnetFrame(l.tapfd, l.vnetHdr[:], b.bufs[n], l.over[:])
		switch {
		case err == unix.EAGAIN:
			return n, nil
		case err == unix.EINTR:
			continue
		case err != nil:
			return n, err
		case k > len(l.vnetHdr)+len(b.bufs[n]):
			l.st.tapTooLong++ // cannot happen with gso.MaxFrameLen buffers
			continue
		case k <= len(l.vnetHdr):
			continue // no frame behind the header: nothing to forward
		}
		b.hdrs[n].Decode(l.vnetHdr[:], tap.VnetHdrSize)
		b.sizes[n] = k - len(l.vnetHdr)
		n++
	}
	return n, nil
}

// writeTAP writes b's pending frames to the TAP as tap.WriteFrames does
// (same return values and refusals), with vnet each behind its own
// header.
func (l *loop) writeTAP(b *batch) (int, error) {
	frames, refused := b.frames[b.head:b.n], b.refused[:b.n-b.head]
	if !l.vnet {
		return tap.WriteFrames(l.tapfd, frames, refused)
	}
	wire := b.wire[b.head:b.n]
	for i := range wire {
		b.hdrs[b.head+i].Encode(wire[i], tap.VnetHdrSize)
	}
	return tap.WriteVnetFrames(l.tapfd, wire, frames, refused)
}

// sync brings the epoll interests in line with the blocked directions:
// a source is not watched while its destination is full, a full
// destination is watched for room.
func (l *loop) sync() error {
	want := uint32(0)
	if !l.upBlocked {
		want |= unix.EPOLLIN
	}
	if l.dnBlocked {
		want |= unix.EPOLLOUT
	}
	if want != l.tapEvents {
		ev := unix.EpollEvent{Events: want, Fd: tokTAP}
		if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_MOD, l.tapfd, &ev); err != nil {
			return fmt.Errorf("epoll_ctl on TAP %s: %w", l.tapName, err)
		}
		l.tapEvents = want
	}
	if in, out := !l.dnBlocked, l.upBlocked; in != l.linkIn || out != l.linkOut {
		if err := l.sw.interest(in, out); err != nil {
			return err
		}
		l.linkIn, l.linkOut = in, out
	}
	return nil
}
