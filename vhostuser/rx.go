package vhostuser

import "github.com/vknetd/vknetd/gso"

// frameFit says how a frame went into an RX ring.
type frameFit uint8

const (
	fitDone   frameFit = iota // written; its chains are in the used ring
	fitNoBufs                 // the guest has not posted enough buffers: wait for its kick
	fitNoRoom                 // the used entries of this call fill the ring: publish, then retry
	fitTooBig                 // the guest's buffers can never hold it: drop
)

// writeBatch writes frames into an RX ring, each after a virtio-net
// header (hdrs[i], or all zero when hdrs is nil), and returns how many frames it took: written, or dropped
// (counted) because the guest's buffers cannot hold them. Fewer than
// len(frames) means the guest is out of buffers; kicks were allowed at
// the avail idx last seen and the ring re-checked, so the guest's next
// post will kick. call says the guest wants to be told about the used
// entries.
//
// With MRG_RXBUF the guest may have posted buffers, too few for the next
// frame: then avail_event must be the guest's avail idx, not lastAvail
// (the first of those buffers), which the guest has crossed already and
// would never kick for again.
//
// With mrg (MRG_RXBUF) a frame fills as many chains as it needs and its
// header's num_buffers says how many; without, it needs one chain big
// enough for all of it.
func (q *virtq) writeBatch(m *memory, hdrLen int, mrg bool, frames [][]byte, hdrs []gso.VirtioNetHdr, st *Stats) (n int, call bool, err error) {
	old := q.usedIdx
	taken := 0
	rechecks := 0 // kick requests since the last frame went in
	for n < len(frames) {
		var hdr gso.VirtioNetHdr
		if hdrs != nil {
			hdr = hdrs[n]
		}
		k, fit, err := q.writeFrame(m, hdrLen, mrg, frames[n], &hdr, taken)
		if err != nil {
			return n, false, err
		}
		switch fit {
		case fitDone:
			taken += k
			q.lastAvail += uint16(k)
			st.RXFrames++
			st.RXBytes += uint64(len(frames[n]))
			n++
			rechecks = 0
			if q.kicksAllowed {
				q.stopKicks()
			}
			continue
		case fitTooBig:
			st.RXOversize++
			n++
			continue
		case fitNoRoom:
			q.publish(taken)
			taken = 0
			continue
		}
		// fitNoBufs: ask for a kick on the guest's next post, then look once
		// more, so buffers posted before the guest saw the request are not
		// left waiting. Done when that look found nothing new since the
		// request. Without EVENT_IDX the cleared flag asks for every post.
		// An honest guest posts at most num entries we have not taken, so
		// the idx moves at most num times; a guest rewriting it to keep us
		// here only loses its own kick.
		at := q.availIdx()
		if q.kicksAllowed && (!q.eventIdx || q.kickAt == at) || rechecks > q.num {
			break
		}
		q.allowKicks(at)
		rechecks++
	}
	if taken > 0 {
		q.publish(taken)
	}
	return n, q.needCall(old), nil
}

// writeFrame writes one frame behind its header h into the chains at
// avail entries lastAvail, lastAvail+1..., filling used entries from taken
// on, and returns how many chains it used. Nothing is committed: the
// caller advances lastAvail. h's NumBuffers is ours to set, not the
// caller's.
func (q *virtq) writeFrame(m *memory, hdrLen int, mrg bool, frame []byte, h *gso.VirtioNetHdr, taken int) (int, frameFit, error) {
	avail, err := q.pending()
	if err != nil {
		return 0, 0, err
	}
	hdr := [gso.HdrSizeMrgRxbuf]byte{10: 1} // a plain frame's: num_buffers 1 unless patched below
	if h.Flags|uint8(h.GSOType) != 0 || h.HdrLen|h.GSOSize|h.CsumStart|h.CsumOffset != 0 {
		h.NumBuffers = 1
		h.Encode(hdr[:], gso.HdrSizeMrgRxbuf)
	}
	need := hdrLen + len(frame)
	var nb [2][]byte // where num_buffers' two bytes went
	pos, chains := 0, 0
	for pos < need {
		if chains == avail {
			if chains == q.num {
				return 0, fitTooBig, nil
			}
			return 0, fitNoBufs, nil
		}
		if taken+chains == q.num {
			if taken == 0 {
				return 0, fitTooBig, nil
			}
			return 0, fitNoRoom, nil
		}
		head, err := q.head(chains)
		if err != nil {
			return 0, 0, err
		}
		wrote, err := q.fillChain(m, head, hdr[:hdrLen], frame, pos, &nb)
		if err != nil {
			return 0, 0, err
		}
		if !mrg && wrote < need {
			return 0, fitTooBig, nil
		}
		q.putUsed(taken+chains, head, uint32(wrote))
		chains++
		pos += wrote
	}
	if hdrLen == 12 && chains > 1 && nb[0] != nil && nb[1] != nil {
		nb[0][0] = byte(chains)
		nb[1][0] = byte(chains >> 8)
	}
	return chains, fitDone, nil
}

// fillChain writes the stream hdr||frame from byte pos on into the chain at
// head, checking each descriptor it uses, and returns how many bytes went
// in. It records in nb where bytes 10 and 11 of the stream (num_buffers)
// landed, so the caller can patch them once it knows the chain count.
func (q *virtq) fillChain(m *memory, head uint16, hdr, frame []byte, pos int, nb *[2][]byte) (int, error) {
	need := len(hdr) + len(frame)
	wrote := 0
	i := head
	for count := 1; ; count++ {
		d := q.readDesc(i)
		if d.flags&^descFKnown != 0 {
			return 0, violation("queue %d: descriptor %d has flags %#x: indirect or unknown", q.index, i, d.flags)
		}
		if d.flags&descFWrite == 0 {
			return 0, violation("queue %d: descriptor %d in an RX chain is not device-writable", q.index, i)
		}
		if !m.mapped(d.addr, uint64(d.len)) {
			return 0, violation("queue %d: descriptor %d points outside guest memory: %#x+%#x", q.index, i, d.addr, d.len)
		}
		addr, room := d.addr, uint64(d.len)
		for room > 0 && pos < need {
			var src []byte
			if pos < len(hdr) {
				src = hdr[pos:]
			} else {
				src = frame[pos-len(hdr):]
			}
			if uint64(len(src)) > room {
				src = src[:room]
			}
			if pos < len(hdr) {
				for b := 10; b < 12 && b < len(hdr); b++ {
					if pos <= b && b < pos+len(src) {
						nb[b-10] = m.slice(addr+uint64(b-pos), 1)
					}
				}
			}
			m.copyTo(addr, src)
			addr += uint64(len(src))
			room -= uint64(len(src))
			pos += len(src)
			wrote += len(src)
		}
		if pos == need || d.flags&descFNext == 0 {
			break
		}
		if int(d.next) >= q.num {
			return 0, violation("queue %d: descriptor %d chains to %d, queue size %d", q.index, i, d.next, q.num)
		}
		if count >= q.num {
			return 0, violation("queue %d: chain from descriptor %d is longer than the queue (%d): a loop", q.index, head, q.num)
		}
		i = d.next
	}
	return wrote, nil
}
