package mactable

// deleteAt removes the entry in slot i by backward shift: each later entry
// of the probe run that may live at the hole (its home is not after the
// hole) moves into it, until the run ends at an empty slot. Lookups then
// never pass a deleted slot, so no tombstones accumulate. Called with the
// shard locked; the odd sequence makes overlapping readers retry.
func (t *Table) deleteAt(sh *shard, i uint64) {
	sh.seq.Add(1)
	hole := i
	for j := t.next(i); ; j = t.next(j) {
		k := t.slots[j].key.Load()
		if k == 0 {
			break
		}
		home := t.home(k & macMask)
		if (j-home)&t.slotMask >= (j-hole)&t.slotMask {
			t.slots[hole].val.Store(t.slots[j].val.Load())
			t.slots[hole].key.Store(k)
			hole = j
		}
	}
	t.slots[hole].key.Store(0)
	sh.seq.Add(1)
	sh.count--
}

// sweep deletes every entry whose value word drop accepts and returns how
// many it deleted. After a deletion at slot i the scan looks at i again:
// backward shift fills holes only from later in the same run, so an entry
// not yet examined moves to i or beyond and is never skipped. An entry of
// a run that wraps past the shard's end may move from its start to its
// end and be examined twice; drop is idempotent, so that is harmless.
func (t *Table) sweep(drop func(v uint64) bool) int {
	t.sweeps.Add(1)
	removed := 0
	size := t.slotMask + 1
	for si := range t.shards {
		sh := &t.shards[si]
		sh.mu.Lock()
		if sh.count == 0 {
			sh.mu.Unlock()
			continue
		}
		i := uint64(si) << t.slotBits
		for n := uint64(0); n < size; {
			s := &t.slots[i]
			if k := s.key.Load(); k != 0 {
				if v := s.val.Load(); drop(v) {
					t.deleteAt(sh, i)
					t.give(valPort(v))
					t.count.Add(-1)
					removed++
					continue // slot i now holds the next entry of the run, or nothing
				}
			}
			i = t.next(i)
			n++
		}
		sh.mu.Unlock()
	}
	return removed
}

// RemovePort removes every entry of port (its client disconnected) and
// returns how many it removed.
func (t *Table) RemovePort(port uint32) int {
	if int(port) >= len(t.ports) || t.ports[port].Load() == 0 {
		return 0
	}
	return t.sweep(func(v uint64) bool { return valPort(v) == port })
}

// Expire removes the entries that have aged out at now and returns how
// many. The engine calls it about once a second; Learn also calls it when
// a full table or port could use the room.
func (t *Table) Expire(now int64) int {
	if t.count.Load() == 0 {
		return 0
	}
	nowTick := now >> t.tickShift
	return t.sweep(func(v uint64) bool { return t.aged(v, nowTick) })
}

// Flush removes every entry and returns how many.
func (t *Table) Flush() int {
	removed := 0
	for si := range t.shards {
		sh := &t.shards[si]
		sh.mu.Lock()
		if sh.count > 0 {
			sh.seq.Add(1)
			base := uint64(si) << t.slotBits
			for i := base; i <= base|t.slotMask; i++ {
				s := &t.slots[i]
				if s.key.Load() != 0 {
					t.give(valPort(s.val.Load()))
					t.count.Add(-1)
					s.key.Store(0)
					removed++
				}
			}
			sh.count = 0
			sh.seq.Add(1)
		}
		sh.mu.Unlock()
	}
	return removed
}
