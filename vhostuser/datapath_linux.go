package vhostuser

import (
	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
)

// ReadTX takes up to len(bufs) frames the guest sent, copying each into
// bufs[i] without its virtio-net header, storing its length in sizes[i]
// and its header in hdrs[i] (the zero header when the guest negotiated no
// offload to send; nil hdrs discards them, for a caller without
// Config.Offloads); it returns how many. The guest's buffers are all
// returned (used) before ReadTX returns, with at most one call
// notification.
//
// more says the ring may hold frames not taken and the guest was asked not
// to kick: call ReadTX again, now or after serving other ports, without
// waiting for the kick fd. With more false the ring was empty after kicks
// were re-enabled, and the guest's next frame kicks.
//
// A frame longer than its buffer goes to a buffer from Config.Large (which
// then stays in bufs[i], frame or not); when Large has none, ReadTX stops
// before that frame and says more. Without Large, or longer than its
// buffer, a frame is dropped and counted (Stats.TXOversize), never cut. A header asking for an offload
// the guest did not negotiate drops its frame (Stats.TXBadHdr), one with
// bits no driver may send too (Stats.TXHdrFlags, TXHdrGSOType); whether
// a header fits its frame is left to the caller (gso.Check). An error
// means the device is unusable: close it. It matches ErrViolation when
// the guest broke the rules, its rings' cost budget included (see
// virtq.budget): the error says what it did.
//
// After SEND_RARP (live migration), the first frame ReadTX returns once
// the ring runs is a broadcast RARP from the guest's MAC, made by the
// device (Stats.Announces): the switch learns and floods it as the
// guest's, so the network finds the guest's new port.
//
// ReadTXBatch says the same and what this call dropped.
func (d *Device) ReadTX(bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr) (n int, more bool, err error) {
	r, err := d.ReadTXBatch(bufs, sizes, hdrs)
	return r.N, r.More, err
}

// TXResult is what one read of the TX ring did (ReadTXBatch).
type TXResult struct {
	N     int  // frames read into bufs
	More  bool // the ring may hold more (see ReadTX)
	Drops TXDrops
	// Announce says bufs[0] is the RARP the front-end asked the device to
	// send for the guest (SEND_RARP, after a live migration), not a frame
	// of the guest's ring.
	Announce bool
}

// TXDrops counts the frames one read of the TX ring dropped, by why: the
// Stats counters of the same names, for this call alone.
type TXDrops struct {
	Oversize, Short, BadHdr, HdrFlags, HdrGSOType uint64
}

// ReadTXBatch is ReadTX returning what the call dropped with what it
// read, so a caller counts its drops from the call itself rather than
// from Stats before and after.
func (d *Device) ReadTXBatch(bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr) (r TXResult, err error) {
	q := &d.q[TXQ]
	// A disabled ring is left alone, frames and all, as DPDK's vhost does:
	// QEMU disables rings just before stopping them, and what the guest
	// queued meanwhile is taken after the resume, not lost.
	if !q.started || !q.enabled || q.vq.avail == nil {
		return TXResult{}, nil
	}
	defer recoverFault(&err)
	d.tx = txRules{hdrLen: virtioNetHdrLen(d.features), sendable: guestOffloads(d.features, false)}
	if d.cfg.Offloads {
		d.tx.large = d.cfg.Large
	}
	var st Stats // this call's
	n := 0
	announce := d.announcePending && len(bufs) > 0 && len(bufs[0]) >= rarpLen
	if announce {
		n = d.putAnnounce(bufs, sizes, hdrs)
		st.Announces++
	}
	n, more, call, err := q.vq.readBatchFrom(&d.mem, &d.tx, bufs, sizes, hdrs, &st, n)
	d.stats.add(&st)
	if err == nil && call {
		d.call(q)
	}
	return TXResult{N: n, More: more, Announce: announce, Drops: TXDrops{Oversize: st.TXOversize, Short: st.TXShort, BadHdr: st.TXBadHdr,
		HdrFlags: st.TXHdrFlags, HdrGSOType: st.TXHdrGSOType}}, err
}

// putAnnounce puts the RARP that SEND_RARP asked for in bufs[0], first of
// the frames ReadTX returns.
func (d *Device) putAnnounce(bufs [][]byte, sizes []int, hdrs []gso.VirtioNetHdr) int {
	sizes[0] = putRARP(bufs[0], d.announce)
	if hdrs != nil {
		hdrs[0] = gso.VirtioNetHdr{}
	}
	d.announcePending = false
	return 1
}

// WriteRX writes frames into the guest's RX buffers, each behind its
// header hdrs[i] (all zero when hdrs is nil; num_buffers is the device's
// to fill), and returns how many of them it took: written, or dropped
// because the guest's buffers cannot hold them (Stats.RXOversize). Fewer
// than len(frames) means the guest is out of buffers (or its RX ring is
// not running): keep the rest and try again when KickFD(RXQ) fires. At
// most one call notification per batch.
//
// The header is not checked against what the guest negotiated: pass
// only headers Offloads Takes.
//
// WriteRXBatch says the same and how many of them it dropped.
func (d *Device) WriteRX(frames [][]byte, hdrs []gso.VirtioNetHdr) (n int, err error) {
	r, err := d.WriteRXBatch(frames, hdrs)
	return r.N, err
}

// RXResult is what one write to the RX ring did (WriteRXBatch).
type RXResult struct {
	N        int    // frames taken from the head of frames: written or dropped
	Oversize uint64 // of them, dropped: larger than the guest's buffers can hold
}

// WriteRXBatch is WriteRX returning how many of the frames it took it
// dropped, so a caller counts them from the call itself rather than from
// Stats before and after.
func (d *Device) WriteRXBatch(frames [][]byte, hdrs []gso.VirtioNetHdr) (r RXResult, err error) {
	q := &d.q[RXQ]
	if !q.started || !q.enabled || q.vq.avail == nil {
		return RXResult{}, nil
	}
	defer recoverFault(&err)
	f := d.features
	var st Stats // this call's
	n, call, err := q.vq.writeBatch(&d.mem, virtioNetHdrLen(f), f&(1<<featNetMrgRxbuf) != 0, frames, hdrs, &st)
	d.stats.add(&st)
	if err == nil && call {
		d.call(q)
	}
	return RXResult{N: n, Oversize: st.RXOversize}, err
}

// DrainKick reads queue q's kick eventfd after the poller reported it
// readable, so that it stops being readable until the next kick. An
// error means the kick fd cannot do that (end of file, or a read error
// other than EAGAIN: it would be reported readable again at once, and the
// loop would spin): the device is unusable, close it.
func (d *Device) DrainKick(q int) error {
	fd := d.q[q].kick
	if fd < 0 {
		return nil
	}
	for {
		n, err := unix.Read(fd, d.drain[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return nil // readable no more: someone read it first
		case err != nil:
			return violation("queue %d: reading the kick fd: %v", q, err)
		case n == 0:
			return violation("queue %d: the kick fd reads end of file", q)
		}
		d.stats.Kicks++
		return nil
	}
}

// call tells the guest about new used entries. A full or odd fd is the
// front-end's problem, never a reason to block or stop.
func (d *Device) call(q *queue) {
	if q.call < 0 {
		return
	}
	for {
		_, err := unix.Write(q.call, d.one[:])
		if err == unix.EINTR {
			continue
		}
		d.stats.Calls++
		return
	}
}

// recoverFault turns a fault on guest memory into an error. A front-end
// can shrink a memory file after we mapped it; touching the lost pages
// raises SIGBUS, which the runtime turns into a panic only on goroutines
// that called debug.SetPanicOnFault(true): the engine's loop must.
func recoverFault(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if f, ok := r.(interface{ Addr() uintptr }); ok {
		*err = violation("fault on guest memory at %#x: the front-end shrank a memory file", f.Addr())
		return
	}
	panic(r)
}
