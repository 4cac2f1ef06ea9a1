package vhostuser

// chainWalker walks one descriptor chain and yields its buffers as views
// of our mapping of guest memory. It is the only code that reads
// descriptors, so every rule a chain must keep is checked here, once, for
// TX and RX alike: the walk's budget (virtq.budget), the direction flag,
// no indirect or unknown flags, addresses inside guest memory, at most
// maxEmptyDescs zero-length descriptors, next inside the table and no
// chain longer than the queue (a loop).
//
// Each descriptor's address is translated once, when it is read; the
// region that answered is tried first for the next one, as consecutive
// buffers of a guest nearly always lie in the same region. A descriptor
// that runs across adjacent regions comes out as one segment per region.
// Zero-length descriptors are paid for and checked, never yielded.
//
// The walker knows nothing of virtio-net headers: a header is the first
// bytes of the chain, read (TX) or written (RX) by the caller like any
// others. A caller may stop at any segment; what it did not walk it did
// not pay for.
type chainWalker struct {
	q      *virtq
	m      *memory
	r      *region // the region of the last translation: tried first
	budget *int    // descriptors the walk may still read
	write  uint16  // descFWrite for an RX chain, 0 for TX
	gpa    uint64  // guest address of the segment yielded last
	head   uint16
	cur    uint16 // the descriptor read last
	next   uint16 // its next field
	linked bool   // it had NEXT: the chain goes on
	reads  int    // descriptors read
	empty  int    // of them, zero-length

	// The part of descriptor cur past the end of its first region, not
	// yielded yet (checked mapped when cur was read).
	restAddr, restLen uint64
}

// start begins a walk of the chain at head, paying each descriptor read
// from *budget. write says the chain is an RX buffer (device-writable).
// The fields are set one by one, in place: a walker built as a value and
// copied made the copy's wide loads wait on the narrow stores just made
// (a store-forwarding stall, 7 ns a frame).
func (w *chainWalker) start(q *virtq, m *memory, head uint16, write bool, budget *int) {
	w.q, w.m, w.r, w.budget = q, m, &m.r[m.last], budget
	w.head, w.next, w.linked = head, head, true
	w.reads, w.empty, w.restLen = 0, 0, 0
	w.write = 0
	if write {
		w.write = descFWrite
	}
}

// more says the chain holds bytes past the segments yielded so far, or
// may: the current descriptor is not done, or another follows it.
func (w *chainWalker) more() bool { return w.restLen > 0 || w.linked }

// segment returns the chain's next bytes, at most one descriptor's in one
// region; ok is false at the end of the chain. An error is a violation
// naming the descriptor and what is wrong with it; the walk is then over.
func (w *chainWalker) segment() (seg []byte, ok bool, err error) {
	if w.restLen > 0 {
		return w.rest(), true, nil
	}
	q := w.q
	for {
		if !w.linked {
			return nil, false, nil
		}
		if w.reads > 0 && (int(w.next) >= q.num || w.reads >= q.num) {
			return nil, false, q.badNext(w.head, w.cur, w.next)
		}
		if *w.budget <= 0 {
			return nil, false, q.overBudget(w.head)
		}
		*w.budget--
		q.walked++
		w.reads++
		w.cur = w.next
		d := q.readDesc(w.cur)
		if d.flags&^descFKnown != 0 || d.flags&descFWrite != w.write {
			return nil, false, w.bad(d)
		}
		w.linked = d.flags&descFNext != 0
		w.next = d.next
		if d.len == 0 {
			if w.empty++; w.empty > maxEmptyDescs {
				return nil, false, q.tooManyEmpty(w.head)
			}
			continue
		}
		// The region of the last descriptor first: the common case by far.
		w.gpa = d.addr
		if seg, ok := w.r.within(d.addr, uint64(d.len)); ok {
			return seg, true, nil
		}
		if seg = w.translate(d.addr, uint64(d.len)); seg == nil {
			return nil, false, w.bad(d)
		}
		return seg, true, nil
	}
}

// translate returns the view of the n bytes at guest address gpa (n > 0)
// when they are not all in w.r: in the region that holds gpa, or their
// part there when they run on into the next one, the rest then checked
// mapped and kept for rest. Nil when a byte is not guest memory.
func (w *chainWalker) translate(gpa, n uint64) []byte {
	r := w.m.find(gpa)
	if r == nil {
		return nil
	}
	w.r = r
	off := gpa - r.guest
	if n <= r.size-off {
		return r.mem[off : off+n]
	}
	// Across a region boundary: rare (hugepage-backed guests split at
	// region ends), so its rest is looked up again when yielded.
	s := r.mem[off:]
	if !w.m.mapped(gpa+uint64(len(s)), n-uint64(len(s))) {
		return nil
	}
	w.restAddr, w.restLen = gpa+uint64(len(s)), n-uint64(len(s))
	return s
}

// rest yields the next region's part of a descriptor across regions.
func (w *chainWalker) rest() []byte {
	s := w.m.slice(w.restAddr, w.restLen) // mapped: checked by translate
	w.gpa = w.restAddr
	w.restAddr += uint64(len(s))
	w.restLen -= uint64(len(s))
	return s
}

// The violations of a walk are built out of line (noinline), so that
// segment, run for every descriptor, stays small.

// overBudget: the chain at head takes the walk past the queue size in
// descriptors, which distinct chains in flight never do.
//
//go:noinline
func (q *virtq) overBudget(head uint16) error {
	return violation("queue %d: chain from descriptor %d takes the descriptors walked since the last used-ring update past %d, the queue size: chains in flight share descriptors",
		q.index, head, q.num)
}

// bad says what is wrong with descriptor d, the one read last (a check
// of the walk failed; the message is built only then).
//
//go:noinline
func (w *chainWalker) bad(d descriptor) error {
	q, i := w.q, w.cur
	switch {
	case d.flags&^descFKnown != 0:
		return violation("queue %d: descriptor %d has flags %#x: indirect or unknown", q.index, i, d.flags)
	case d.flags&descFWrite != w.write && w.write == 0:
		return violation("queue %d: descriptor %d in a TX chain is device-writable", q.index, i)
	case d.flags&descFWrite != w.write:
		return violation("queue %d: descriptor %d in an RX chain is not device-writable", q.index, i)
	}
	return violation("queue %d: descriptor %d points outside guest memory: %#x+%#x", q.index, i, d.addr, d.len)
}

//go:noinline
func (q *virtq) tooManyEmpty(head uint16) error {
	return violation("queue %d: chain from descriptor %d holds more than %d zero-length descriptors", q.index, head, maxEmptyDescs)
}

// badNext: descriptor i of the chain at head links to next, past the
// table, or the chain is longer than the queue.
//
//go:noinline
func (q *virtq) badNext(head, i, next uint16) error {
	if int(next) >= q.num {
		return violation("queue %d: descriptor %d chains to %d, queue size %d", q.index, i, next, q.num)
	}
	return violation("queue %d: chain from descriptor %d is longer than the queue (%d): a loop", q.index, head, q.num)
}
