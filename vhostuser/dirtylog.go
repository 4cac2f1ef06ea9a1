package vhostuser

// Dirty logging, for live migration (vhost-user.rst, "Migration"). While
// a front-end migrates a guest it copies the guest's memory to the
// destination while the guest runs, and copies again the pages written
// since. Pages the guest writes it learns from the hypervisor; pages we
// write (RX buffers, the used rings) it learns from a log we keep: a
// bitmap in memory it shares with us (SET_LOG_BASE), one bit per 4 KiB
// page of guest-physical memory, set with an atomic OR because the
// front-end clears it concurrently as it copies.
//
// Logging is on while the front-end has set VHOST_F_LOG_ALL and given a
// log. A ring's used ring is logged too when its SET_VRING_ADDR set
// VHOST_VRING_F_LOG, at the guest address that message's log field gives
// for the ring. With logging off, the cost on the write path is one
// branch on a nil pointer (virtq.log) per written segment and per publish.

// logPageSize is the unit of the log: one bit per page of this size.
const logPageSize = 4096

// maxLogSize bounds the log a front-end may give: 4 GiB of bitmap cover
// 128 TiB of guest-physical address space, past any memory table we take
// (eight regions of at most 1 TiB), wherever the guest put them.
const maxLogSize = 4 << 30

// dirtyLog is the log bitmap: size bytes from mem[off]. mem is the whole
// mapping, so the aligned 32-bit word around any byte of the bitmap lies
// in it (the mapping starts and ends on page boundaries).
type dirtyLog struct {
	mem  []byte
	off  uint64
	size uint64
}

// covers says whether the bitmap has a bit for every page below end.
func (l *dirtyLog) covers(end uint64) bool {
	if end == 0 {
		return true
	}
	return (end-1)/logPageSize/8 < l.size
}

// mark sets the bit of every page that [gpa, gpa+n) touches. The ranges
// we mark were checked to lie in guest memory or in the used ring's
// logged range, both covered by the log (Device.applyLog); a bit past the
// bitmap is skipped all the same, never written outside it.
func (l *dirtyLog) mark(gpa, n uint64) {
	if n == 0 {
		return
	}
	for p, last := gpa/logPageSize, (gpa+n-1)/logPageSize; p <= last; p++ {
		l.set(p)
	}
}

// set sets page p's bit: bit p%8 of byte p/8, as the front-end reads it.
// sync/atomic ORs whole words, so the byte's aligned word is ORed with
// the bit moved to the byte's place in it (the host is little-endian).
// The load first keeps a page written again and again (a busy RX buffer)
// from costing a locked instruction each time.
func (l *dirtyLog) set(p uint64) {
	b := p / 8
	if b >= l.size {
		return
	}
	at := l.off + b
	word := at &^ 3
	bit := uint32(1) << ((at&3)*8 + p%8)
	if load32(l.mem, int(word))&bit == 0 {
		or32(l.mem, int(word), bit)
	}
}

// logUsed marks used-ring bytes [off, off+n) when the ring's writes are
// logged.
func (q *virtq) logUsed(off, n int) {
	if q.logUsedRing {
		q.log.mark(q.usedLogAddr+uint64(off), uint64(n))
	}
}

// logPublish marks the k used entries from usedIdx on and the word of the
// used idx, before publish stores the idx.
func (q *virtq) logPublish(k int) {
	if !q.logUsedRing || k == 0 {
		return
	}
	first := int(q.usedIdx & q.mask)
	if n := min(k, q.num-first); n > 0 {
		q.log.mark(q.usedLogAddr+4+8*uint64(first), 8*uint64(n))
		k -= n
	}
	if k > 0 { // the entries wrapped round the ring
		q.log.mark(q.usedLogAddr+4, 8*uint64(k))
	}
	q.log.mark(q.usedLogAddr, 4)
}
