package vhostuser

// One copy from guest to guest. A frame one guest sends to another is
// read in two parts: its head (the first txRules.split bytes, all the
// switch decides on and secure mode checks) is copied into the switch's
// buffer, where the sender can no longer change it; its rest is left in
// the sender's memory, its place recorded in a txRest, and the sender's
// chains are not returned until the rest has been copied. The rest then
// goes straight into the receiver's RX buffers behind the head
// (Device.WriteRXFrom), or into the switch's buffer (Device.CopyRest)
// when the frame must wait, be flooded or go anywhere else.
//
// No check reads the rest, so a sender that rewrites it while it is
// copied only sends other bytes, as it could have anyway; the head the
// checks saw is the head delivered.

// maxRestSegs is how many pieces of a frame's rest are recorded; a frame
// in more (an odd guest's) is copied whole at once, as without split.
// Linux and DPDK send a frame in one or two descriptors.
const maxRestSegs = 4

// txRest is where a split frame's bytes past its head are: views of our
// mapping of the sender's memory, valid until its chains go back to it
// and while its memory table stays.
type txRest struct {
	seg [maxRestSegs][]byte
	n   int
}

// keep records seg, the frame's bytes from total on, as part of its
// rest, copying into dst the part of it that lies before split (the
// head). It says false, having recorded nothing new, when the rest
// would be in too many pieces or not fit dst, where it must be copied
// if the frame cannot go straight to a guest: the pieces recorded so
// far are then copied into dst, and seg is the caller's to copy.
func (r *txRest) keep(seg []byte, total, split uint64, dst []byte) bool {
	end := total + uint64(len(seg))
	if r.n == maxRestSegs || end > uint64(len(dst)) {
		r.spill(dst, split)
		return false
	}
	if total < split {
		c := copy(dst[total:split], seg)
		seg = seg[c:]
	}
	r.seg[r.n] = seg
	r.n++
	return true
}

// spill copies the rest recorded so far into dst from split on, and
// forgets it.
func (r *txRest) spill(dst []byte, split uint64) {
	at := split
	for _, s := range r.seg[:r.n] {
		at += uint64(copy(dst[at:], s))
	}
	r.n = 0
}

// len is how many bytes the rest holds.
func (r *txRest) len() int {
	n := 0
	for _, s := range r.seg[:r.n] {
		n += len(s)
	}
	return n
}

// copyPieces copies the bytes of the frame head||rest from off on into
// dst and returns how many.
func copyPieces(dst, head []byte, rest *txRest, off int) int {
	n := 0
	if off < len(head) {
		n = copy(dst, head[off:])
		if n == len(dst) {
			return n
		}
		dst, off = dst[n:], 0
	} else {
		off -= len(head)
	}
	for _, p := range rest.seg[:rest.n] {
		if len(dst) == 0 {
			break
		}
		if off >= len(p) {
			off -= len(p)
			continue
		}
		c := copy(dst, p[off:])
		dst, n, off = dst[c:], n+c, 0
	}
	return n
}

// releaseHeld returns the TX chains a split read held, and says whether
// the guest wants a call.
func (q *virtq) releaseHeld() bool {
	if q.held == 0 {
		return false
	}
	old := q.usedIdx
	q.publish(q.held)
	q.held = 0
	return q.needCall(old)
}
