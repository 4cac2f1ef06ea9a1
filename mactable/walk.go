package mactable

import (
	"runtime"
	"time"
)

// Entry is one live entry as Walk reports it.
type Entry struct {
	MAC  uint64
	Port uint32
	Age  time.Duration // since last seen, in steps of Granularity
}

// Walk calls fn for every entry live at now. Each shard is copied as one
// consistent snapshot (the shards are not frozen together) and fn runs
// with no lock held, so fn may be slow or call the table. Walk is safe
// concurrently with writers; it retries a shard a few times while
// deletions move its entries and then takes the shard's writer lock for
// the copy, so a busy writer cannot starve it.
func (t *Table) Walk(now int64, fn func(Entry)) {
	nowTick := now >> t.tickShift
	buf := make([]Entry, 0, t.shardMax)
	for si := range t.shards {
		buf = t.snapshot(buf[:0], si, nowTick)
		for _, e := range buf {
			fn(e)
		}
	}
}

func (t *Table) snapshot(buf []Entry, si int, nowTick int64) []Entry {
	sh := &t.shards[si]
	for range 4 {
		seq := sh.seq.Load()
		if seq&1 != 0 {
			runtime.Gosched()
			continue
		}
		out := t.collect(buf, si, nowTick)
		if sh.seq.Load() == seq {
			return out
		}
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return t.collect(buf, si, nowTick)
}

func (t *Table) collect(buf []Entry, si int, nowTick int64) []Entry {
	buf = buf[:0]
	base := uint64(si) << t.slotBits
	for i := base; i <= base|t.slotMask; i++ {
		s := &t.slots[i]
		k := s.key.Load()
		if k == 0 {
			continue
		}
		v := s.val.Load()
		d := sinceTicks(nowTick, v)
		if d > t.maxAge {
			continue
		}
		buf = append(buf, Entry{MAC: k & macMask, Port: valPort(v), Age: time.Duration(max(d, 0)) << t.tickShift})
	}
	return buf
}
