package mactable

// A Hint remembers which slot held a MAC when LookupHint or LearnHint
// last found it, so that the next call for the same MAC reads that slot
// again instead of hashing the MAC and probing: the frames of one port
// mostly come from one source and go to one destination. Nothing in it
// is trusted: the slot must still hold the MAC, read inside the shard's
// sequence window as a probe's is, or the call does what Lookup or Learn
// does. Keys are unique in the table, so the slot holding the MAC is the
// entry a probe would find, and the answer is the one Lookup or Learn
// gives. A hint takes the slot a probe found only for a MAC asked for
// twice in a row, so that a port whose frames go to many MACs (the TAP's,
// a router's) pays a compare and a store a frame, not a new hint.
//
// The zero Hint remembers nothing. A Hint is for one goroutine at a time;
// the table may be shared as ever.
type Hint struct {
	t    *Table
	at   uint64 // the slot
	key  uint64 // liveBit | MAC: what the slot held
	miss uint64 // liveBit | MAC: asked for last, not remembered
}

// LookupHint is Lookup, trying h's slot first: read there, a hit costs
// one call.
func (t *Table) LookupHint(mac uint64, now int64, h *Hint) (port uint32, ok bool) {
	mac &= macMask
	if h.key == liveBit|mac && h.t == t {
		sh, s := t.shardOf(h.at), &t.slots[h.at]
		seq := sh.seq.Load()
		if seq&1 == 0 && s.key.Load() == h.key {
			v := s.val.Load()
			if sh.seq.Load() == seq {
				if t.aged(v, now>>t.tickShift) {
					return 0, false
				}
				return valPort(v), true
			}
		}
	}
	return t.lookup(mac, now, h)
}

// LearnHint is Learn, trying h's slot first: the MAC live there on port
// is refreshed as Learn's lock-free path would (refreshSlot), anything
// else is Learn's.
func (t *Table) LearnHint(mac uint64, port uint32, now int64, h *Hint) Result {
	if t.RefreshHint(mac, port, now, h) {
		return Refreshed
	}
	return t.learn(mac, port, now, h)
}

// RefreshHint is LearnHint's hit alone: when h's slot holds mac, live on
// port, it refreshes it as Learn would and reports true (Learn's
// Refreshed); otherwise it changes nothing and reports false, for a
// caller that must look before it learns (secure mode: a MAC live on
// another port is not taken over by a frame).
func (t *Table) RefreshHint(mac uint64, port uint32, now int64, h *Hint) bool {
	mac &= macMask
	if h.key != liveBit|mac || h.t != t {
		return false
	}
	sh, s := t.shardOf(h.at), &t.slots[h.at]
	seq := sh.seq.Load()
	return seq&1 == 0 && s.key.Load() == h.key && t.refreshSlot(s, sh, seq, port, now>>t.tickShift)
}

// point makes h remember slot at for mac, if mac was the MAC h missed
// last too; otherwise it notes mac as that.
func (t *Table) point(h *Hint, mac, at uint64) {
	want := liveBit | mac
	if h.miss != want {
		h.miss = want
		return
	}
	*h = Hint{t: t, at: at, key: want}
}

// remember points h at the slot holding mac (a unicast MAC learned just
// now), as point does, unless a writer moved the entry away meanwhile:
// the hint is checked before each use, so this probe needs no sequence
// window.
func (t *Table) remember(h *Hint, mac uint64) {
	want := liveBit | mac
	i := t.home(mac)
	for n := uint64(0); n <= t.slotMask; n++ {
		switch t.slots[i].key.Load() {
		case want:
			t.point(h, mac, i)
			return
		case 0:
			return
		}
		i = t.next(i)
	}
}
