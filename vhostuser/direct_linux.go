package vhostuser

// SplitTX makes ReadTX copy at most head bytes of a frame whose header
// asks nothing into its buffer, and leave the rest in the guest's memory
// for CopyRest or WriteRXFrom (direct.go); head 0 turns it off. A frame
// in one descriptor (the chain Linux and DPDK send) is split only when
// longer than over: shorter, it is copied whole, as without SplitTX.
// With it on, the chains a read takes go back to the guest only at
// ReleaseTX (or the next read), so the caller must be done with the
// frames' rests by then. head must be below every buffer's length.
func (d *Device) SplitTX(head, over int) { d.split, d.splitOver = head, max(head, over) }

// Split says frame i of the last ReadTX has bytes past the head left in
// the guest's memory: its buffer holds only the head, though its size is
// the whole frame's.
func (s *Queues) Split(i int) bool { return s.dev.split > 0 && i < len(s.isSplit) && s.isSplit[i] }

// CopyRest copies the rest of split frame i of the last ReadTX into buf,
// the frame's buffer, after its head. An error means the front-end
// shrank the memory the rest was in: close the device.
func (s *Queues) CopyRest(i int, buf []byte) (err error) {
	defer recoverFault(&err)
	r := &s.rests[i]
	r.spill(buf, uint64(s.dev.split))
	s.stats.RestCopies++
	return nil
}

// ReleaseTX gives the guest back the chains of a split read (SplitTX),
// with at most one call per ring; the frames' rests are gone from then
// on.
func (s *Queues) ReleaseTX() {
	d := s.dev
	for k := range max(d.pairs, 1) {
		q := &d.q[2*k+1]
		if s.own&(1<<k) != 0 && q.vq.held > 0 && q.vq.releaseHeld() {
			s.call(q)
		}
	}
}

// WriteRXFrom writes split frame i of src's last ReadTX straight into
// the guest's RX buffers: head (of our buffer: what was checked) and
// then its rest from src's memory, behind a header that asks nothing,
// with one copy of the rest. size is the whole frame's length. The used
// entries are published by FlushRX or the next WriteRX, not here: a
// batch of frames costs one publish and at most one call per ring.
//
// r.N is 1 when the frame was taken (r.Oversize 1 if the guest's buffers
// can never hold it, and it was dropped), 0 when the guest has no room
// for it now: nothing of it is then published, and the frame must wait
// in a queue of the caller's, src's chains with it; the guest was asked
// to kick when it posts buffers, as WriteRX does. err is this device's
// violation (close it), srcErr a fault on src's memory (close src).
func (d *Device) WriteRXFrom(src *Device, i int, head []byte) (r RXResult, err, srcErr error) {
	return d.Queues.WriteRXFrom(&src.Queues, i, head)
}

// WriteRXFrom is Device.WriteRXFrom for the pairs s serves, from split
// frame i of src's last read. A frame whose flow goes to a pair s does
// not serve is taken and dropped (r.Stray).
func (s *Queues) WriteRXFrom(src *Queues, i int, head []byte) (r RXResult, err, srcErr error) {
	d := s.dev
	ring := 0
	if d.pairs > 1 {
		var ok bool
		if ring, ok = d.rxRing(head); !ok {
			return RXResult{}, nil, nil
		}
	} else if !d.q[0].running() {
		return RXResult{}, nil, nil
	}
	if s.own&(1<<(ring/2)) == 0 {
		return RXResult{N: 1, Stray: 1}, nil, nil
	}
	q := &d.q[ring]
	defer recoverFaultOf(&err, &srcErr, &src.dev.mem, &q.vq)
	f := d.features
	hdrLen, mrg := virtioNetHdrLen(f), f&(1<<featNetMrgRxbuf) != 0
	// Counted straight into the Stats: a Stats of the call's own would be
	// 17 words cleared on the stack for every frame.
	frames, oversize := s.stats.RXFrames, s.stats.RXOversize
	s.rxOpen |= 1 << ring
	s.head[0] = head
	n, err := q.vq.writeRunFrom(&s.runs[ring/2], &d.mem, hdrLen, mrg, s.head[:], &src.rests[i], &s.stats)
	s.head[0] = nil
	s.stats.DirectFrames += s.stats.RXFrames - frames
	return RXResult{N: n, Oversize: s.stats.RXOversize - oversize}, err, nil
}

// rxRing is the RX ring a frame beginning with head goes to (WriteRXBatch's
// choice); false when none runs.
func (d *Device) rxRing(head []byte) (int, bool) {
	rings, nr := d.runningRX()
	switch nr {
	case 0:
		return 0, false
	case 1:
		return int(rings[0]), true
	}
	return int(rings[flowHash(head)%uint32(nr)]), true
}

// FlushRX publishes what WriteRXFrom wrote, with at most one call per
// ring.
func (s *Queues) FlushRX() {
	d := s.dev
	for open := s.rxOpen; open != 0; open &= open - 1 {
		ring := 0
		for open&(1<<ring) == 0 {
			ring++
		}
		if d.q[ring].vq.endRun(&s.runs[ring/2]) {
			s.call(&d.q[ring])
		}
		s.runs[ring/2] = rxBatch{}
	}
	s.rxOpen = 0
}

// recoverFaultOf is recoverFault for a copy between two guests' memory
// into q: a fault on src's is srcErr, any other err. q forgets src's rest,
// which the next frame written must not take for its own.
func recoverFaultOf(err, srcErr *error, src *memory, q *virtq) {
	r := recover()
	if r == nil {
		return
	}
	q.rest, q.restLen = nil, 0
	f, ok := r.(interface{ Addr() uintptr })
	if !ok {
		panic(r)
	}
	v := violation("fault on guest memory at %#x: the front-end shrank a memory file", f.Addr())
	if src.holds(f.Addr()) {
		*srcErr = v
		return
	}
	*err = v
}

// holds says whether address a lies in our mapping of m.
func (m *memory) holds(a uintptr) bool {
	for i := 0; i < m.n; i++ {
		if mem := m.r[i].mem; len(mem) > 0 && a-addrOf(mem) < uintptr(len(mem)) {
			return true
		}
	}
	return false
}
