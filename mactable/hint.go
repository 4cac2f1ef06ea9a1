package mactable

// A Hint remembers which slot held a MAC when LookupHint or LearnHint
// last found it, so that the next call for the same MAC reads that slot
// again instead of hashing the MAC and probing: the frames of one port
// mostly come from one source and go to one destination. Nothing in it
// is trusted: the slot must still hold the MAC, read inside the shard's
// sequence window as a probe's is, or the call does what Lookup or Learn
// does (and remembers anew). Keys are unique in the table, so the slot
// holding the MAC is the entry a probe would find, and the answer is the
// one Lookup or Learn gives.
//
// The zero Hint remembers nothing. A Hint is for one goroutine at a time;
// the table may be shared as ever.
type Hint struct {
	t   *Table
	s   *slot
	sh  *shard
	key uint64 // liveBit | MAC: what s held
}

// LookupHint is Lookup, trying h's slot first.
func (t *Table) LookupHint(mac uint64, now int64, h *Hint) (port uint32, ok bool) {
	mac &= macMask
	if h.key == liveBit|mac && h.t == t {
		sh, s := h.sh, h.s
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
	port, ok = t.Lookup(mac, now)
	if ok {
		t.remember(h, mac)
	}
	return port, ok
}

// LearnHint is Learn, trying h's slot first: the MAC live there on port
// is refreshed as Learn's lock-free path would (refreshSlot), anything
// else is Learn's.
func (t *Table) LearnHint(mac uint64, port uint32, now int64, h *Hint) Result {
	mac &= macMask
	if h.key == liveBit|mac && h.t == t {
		seq := h.sh.seq.Load()
		if seq&1 == 0 && h.s.key.Load() == h.key && t.refreshSlot(h.s, h.sh, seq, port, now>>t.tickShift) {
			return Refreshed
		}
	}
	r := t.Learn(mac, port, now)
	switch r {
	case Refreshed, Learned, Moved:
		t.remember(h, mac)
	}
	return r
}

// remember points h at the slot holding mac (a unicast MAC found or
// learned just now), or empties it when a writer moved the entry away
// meanwhile: the hint is checked before each use, so this probe needs
// no sequence window.
func (t *Table) remember(h *Hint, mac uint64) {
	want := liveBit | mac
	idx := t.home(mac)
	i := idx
	for n := uint64(0); n <= t.slotMask; n++ {
		s := &t.slots[i]
		switch s.key.Load() {
		case want:
			*h = Hint{t: t, s: s, sh: t.shardOf(idx), key: want}
			return
		case 0:
			*h = Hint{}
			return
		}
		i = t.next(i)
	}
	*h = Hint{}
}
