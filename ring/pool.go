// Package ring owns the switch's frame memory: one slab of equal-size
// buffers allocated at start (mapped apart from the garbage-collected
// heap, see mapSlab), handed out by reference, and bounded FIFO queues of
// those references. A pool may also hold a few large buffers in
// a slab of their own, for superframes (64 KiB TCP segments with offloads):
// sizing every buffer for them would cost 32 times the memory.
//
// Nothing here locks per frame. With one event loop, that loop is the only
// owner of a Pool and its Queues: a reference count is a plain int32 and a
// Get a slice pop. Several loops (--workers) share one pool through views
// (Share): each view keeps a cache of free buffers of its own, refilled
// from and returned to a shared depot in batches under a mutex. A buffer's
// reference count becomes atomic when its view passes it to another
// (Cross), so a buffer read by one loop may be sent by another and freed
// by whichever lets go of it last; the buffers that stay with the view
// that took them, most of them, are counted plainly. Frames never move:
// a flood to N ports queues the same reference N times and the buffer
// returns to the pool when the last port has sent it.
package ring

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/vknetd/vknetd/gso"
)

// Ref names one buffer of a Pool. It is an index, not a pointer, so queues
// of references are small and hold nothing the garbage collector must scan.
type Ref int32

// Pool is a fixed set of equal-size frame buffers carved out of one slab,
// and optionally a few large ones carved out of another. References below
// count name small buffers, the ones above name large buffers.
type Pool struct {
	slab  []byte
	size  int
	count int       // small buffers
	meta  []bufMeta // each buffer's references, length and header
	free  []Ref     // stack of free small buffers

	large     []byte
	largeSize int
	freeLarge []Ref // stack of free large buffers

	// depot, in a view made by Share, holds the free buffers no view has
	// cached; free is then the view's cache and freeLarge unused.
	depot *depot
}

// refCount is a buffer's outstanding references, 0 when it is free, and
// whether a view passed it to another since it was taken (Cross): only a
// crossed buffer's count is atomic, and none is in a pool that is not
// shared. crossed is written only while one goroutine can reach the
// buffer. Count and mark side by side: Release, inlined, reads both with
// one bounds check.
type refCount struct {
	n       int32
	crossed bool
}

// bufMeta is what the pool knows of one buffer, on one cache line with
// its neighbour's and no other: a frame that crosses loops brings one
// line of metadata to the other loop's CPU, where parallel arrays of
// counts, lengths and headers brought three, each shared with up to 15
// other buffers that the first loop was still writing.
type bufMeta struct {
	refCount
	len int32            // frame length held in the buffer
	hdr gso.VirtioNetHdr // the frame's offload header; zero for a plain frame
	_   [32 - 8 - 4 - 12]byte
}

// depot is the free buffers of a shared pool that no view caches.
type depot struct {
	mu        sync.Mutex
	free      []Ref
	freeLarge []Ref
	// nfree and nfreeLarge are len(free) and len(freeLarge), for Free and
	// FreeLarge without the lock.
	nfree, nfreeLarge atomic.Int64
}

// A view's cache: it takes cacheBatch buffers from the depot when empty
// and gives cacheBatch back when it holds cacheMax, so a view touches the
// depot's lock once per cacheBatch frames at most, and at most cacheMax
// free buffers sit unseen in each view (ShareReserve).
const (
	cacheBatch = 64
	cacheMax   = 2 * cacheBatch
)

// ShareReserve is how many free buffers the views of a pool shared n ways
// may hold in their caches, where the others' Free does not see them.
func ShareReserve(n int) int { return n * cacheMax }

// Share makes n views of p for n goroutines, one each: every view hands
// out and takes back buffers of the same slabs, which the others may hold,
// send and release. p itself is then used only for Close, Cap, Size and
// the accessors (Buf, Frame, Hdr, Len), and its Free counts the depot. With
// n of 1 Share returns p itself, unchanged: one owner needs no atomics.
func (p *Pool) Share(n int) []*Pool {
	if n <= 1 {
		return []*Pool{p}
	}
	d := &depot{free: p.free, freeLarge: p.freeLarge}
	d.nfree.Store(int64(len(d.free)))
	d.nfreeLarge.Store(int64(len(d.freeLarge)))
	p.free, p.freeLarge, p.depot = nil, nil, d
	views := make([]*Pool, n)
	for i := range views {
		v := *p
		v.free = make([]Ref, 0, cacheMax+1)
		views[i] = &v
	}
	return views
}

// NewPool allocates count buffers of size bytes each in one slab.
func NewPool(count, size int) (*Pool, error) {
	return NewPoolWithLarge(count, size, 0, 0)
}

// NewPoolWithLarge allocates count buffers of size bytes in one slab and
// largeCount buffers of largeSize bytes in another (none if largeCount is
// 0). Get hands out the first kind, GetLarge the second.
func NewPoolWithLarge(count, size, largeCount, largeSize int) (*Pool, error) {
	if count <= 0 || size <= 0 {
		return nil, fmt.Errorf("ring: pool needs a positive buffer count and size, got %d x %d", count, size)
	}
	if largeCount < 0 || (largeCount > 0 && largeSize < size) {
		return nil, fmt.Errorf("ring: large buffers must be at least as big as the others, got %d x %d", largeCount, largeSize)
	}
	if count+largeCount > 1<<30 {
		return nil, fmt.Errorf("ring: pool of %d buffers is larger than a Ref can name", count+largeCount)
	}
	all := count + largeCount
	slab, err := mapSlab(count * size)
	if err != nil {
		return nil, err
	}
	large, err := mapSlab(largeCount * largeSize)
	if err != nil {
		unmapSlab(slab)
		return nil, err
	}
	p := &Pool{
		slab:      slab,
		size:      size,
		count:     count,
		meta:      make([]bufMeta, all),
		free:      make([]Ref, count),
		large:     large,
		largeSize: largeSize,
		freeLarge: make([]Ref, largeCount),
	}
	// Hand out low indices first so a lightly loaded switch touches few pages.
	for i := range p.free {
		p.free[i] = Ref(count - 1 - i)
	}
	for i := range p.freeLarge {
		p.freeLarge[i] = Ref(all - 1 - i)
	}
	return p, nil
}

// Close returns the slabs to the system. Neither the pool nor any buffer
// it handed out may be used after: the engine closes its pool when its
// loop has ended.
func (p *Pool) Close() {
	if p.slab == nil {
		return
	}
	unmapSlab(p.slab)
	unmapSlab(p.large)
	p.slab, p.large = nil, nil
}

// Get takes a free buffer with one reference, or reports false when the
// pool is empty (the caller stops reading: back-pressure, not allocation).
func (p *Pool) Get() (Ref, bool) {
	n := len(p.free)
	if n == 0 {
		if p.depot == nil || !p.refill() {
			return -1, false
		}
		n = len(p.free)
	}
	r := p.free[n-1]
	p.free = p.free[:n-1]
	p.take(r)
	return r, true
}

// GetLarge takes a free large buffer with one reference, or reports false
// when none is free (or the pool has none).
func (p *Pool) GetLarge() (Ref, bool) {
	if p.depot != nil {
		return p.getLargeShared()
	}
	n := len(p.freeLarge)
	if n == 0 {
		return -1, false
	}
	r := p.freeLarge[n-1]
	p.freeLarge = p.freeLarge[:n-1]
	p.take(r)
	return r, true
}

// take gives r, free, its one reference. A free buffer is the caller's
// alone: whoever freed it, with an atomic decrement or under the depot's
// lock, happened before, so the count is set plainly, and so is the mark,
// only when set (a write to a line the other views read).
func (p *Pool) take(r Ref) {
	p.meta[r] = bufMeta{refCount: refCount{n: 1}}
}

// refill moves a batch of free buffers from the depot into the view's
// cache, and reports whether it got any.
func (p *Pool) refill() bool {
	d := p.depot
	d.mu.Lock()
	k := min(cacheBatch, len(d.free))
	p.free = append(p.free, d.free[len(d.free)-k:]...)
	d.free = d.free[:len(d.free)-k]
	d.nfree.Store(int64(len(d.free)))
	d.mu.Unlock()
	return k > 0
}

// spill gives a batch of the view's cached free buffers back to the depot.
func (p *Pool) spill() {
	d := p.depot
	k := len(p.free) - cacheBatch
	d.mu.Lock()
	d.free = append(d.free, p.free[len(p.free)-k:]...)
	d.nfree.Store(int64(len(d.free)))
	d.mu.Unlock()
	p.free = p.free[:len(p.free)-k]
}

func (p *Pool) getLargeShared() (Ref, bool) {
	d := p.depot
	d.mu.Lock()
	n := len(d.freeLarge)
	if n == 0 {
		d.mu.Unlock()
		return -1, false
	}
	r := d.freeLarge[n-1]
	d.freeLarge = d.freeLarge[:n-1]
	d.nfreeLarge.Store(int64(n - 1))
	d.mu.Unlock()
	p.take(r)
	return r, true
}

// IsLarge reports whether r names a large buffer.
func (p *Pool) IsLarge(r Ref) bool { return int(r) >= p.count }

// Buf is the whole buffer behind r, for reading a frame into.
func (p *Pool) Buf(r Ref) []byte {
	if int(r) < p.count {
		off := int(r) * p.size
		return p.slab[off : off+p.size : off+p.size]
	}
	off := (int(r) - p.count) * p.largeSize
	return p.large[off : off+p.largeSize : off+p.largeSize]
}

// Frame is the frame held in r: its buffer cut to the length set by SetLen.
func (p *Pool) Frame(r Ref) []byte {
	return p.Buf(r)[:p.meta[r].len]
}

// Hdr is the offload header of the frame in r, zero for a plain frame;
// the frame's reader sets it, and whoever cuts or finishes the frame
// updates it in place.
func (p *Pool) Hdr(r Ref) *gso.VirtioNetHdr { return &p.meta[r].hdr }

// SetLen records how many bytes of r's buffer hold the frame.
func (p *Pool) SetLen(r Ref, n int) { p.meta[r].len = int32(n) }

// Len is the frame length recorded for r.
func (p *Pool) Len(r Ref) int { return int(p.meta[r].len) }

// Cross says r, reachable by this view's goroutine alone so far, is about
// to be passed to another view's: from now until it is free again every
// view counts its references atomically. The caller passes it after Cross
// through something that orders the two (an atomic store the other side
// loads), so the other side sees the mark.
func (p *Pool) Cross(r Ref) {
	if p.depot != nil && !p.meta[r].refCount.crossed {
		p.meta[r].refCount.crossed = true
	}
}

// Sole: the caller holds r's one reference, and no other view may take
// one (r has not crossed): it may give r to another view's goroutine
// without Cross, as a whole, keeping nothing.
func (p *Pool) Sole(r Ref) bool {
	c := &p.meta[r].refCount
	return !c.crossed && c.n == 1
}

// atomicRefs: r's references are counted atomically (Cross).
func (p *Pool) atomicRefs(r Ref) bool { return p.meta[r].refCount.crossed }

// Hold adds a reference to r: one per extra queue the frame goes into.
func (p *Pool) Hold(r Ref) {
	if p.atomicRefs(r) {
		atomic.AddInt32(&p.meta[r].refCount.n, 1)
		return
	}
	p.meta[r].refCount.n++
}

// Release drops one reference; the last one returns the buffer to the pool.
func (p *Pool) Release(r Ref) {
	// Small enough to inline: a buffer that another queue still holds,
	// the most common case, costs a decrement.
	if c := &p.meta[r].refCount; !c.crossed && c.n > 1 {
		c.n--
	} else {
		p.release(r)
	}
}

// release drops r's last reference, or one of a crossed buffer's: the
// view that lets go of the last one frees the buffer, a small one into its
// own cache.
func (p *Pool) release(r Ref) {
	var n int32
	if p.atomicRefs(r) {
		n = atomic.AddInt32(&p.meta[r].refCount.n, -1)
	} else {
		p.meta[r].refCount.n--
		n = p.meta[r].refCount.n
	}
	switch {
	case n == 0 && int(r) < p.count:
		p.free = append(p.free, r) // never grows: capacity is the buffer count
		if p.depot != nil && len(p.free) >= cacheMax {
			p.spill()
		}
	case n == 0 && p.depot != nil:
		d := p.depot
		d.mu.Lock()
		d.freeLarge = append(d.freeLarge, r)
		d.nfreeLarge.Store(int64(len(d.freeLarge)))
		d.mu.Unlock()
	case n == 0:
		p.freeLarge = append(p.freeLarge, r)
	case n < 0:
		panic(fmt.Sprintf("ring: buffer %d released more often than held", r))
	}
}

// Free is the number of small buffers not in use: in a view, those of
// the depot and its own cache (ShareReserve: the other views' caches are
// not counted).
func (p *Pool) Free() int {
	if p.depot != nil {
		return int(p.depot.nfree.Load()) + len(p.free)
	}
	return len(p.free)
}

// Cached is how many free buffers a view of a shared pool holds in its
// own cache (0 for an unshared pool: they are all in Free).
func (p *Pool) Cached() int {
	if p.depot == nil {
		return 0
	}
	return len(p.free)
}

// Cap is the number of small buffers in the pool.
func (p *Pool) Cap() int { return p.count }

// Size is the size of every small buffer.
func (p *Pool) Size() int { return p.size }

// FreeLarge is the number of large buffers not in use.
func (p *Pool) FreeLarge() int {
	if p.depot != nil {
		return int(p.depot.nfreeLarge.Load())
	}
	return len(p.freeLarge)
}

// CapLarge is the number of large buffers in the pool.
func (p *Pool) CapLarge() int { return len(p.meta) - p.count }

// LargeSize is the size of every large buffer.
func (p *Pool) LargeSize() int { return p.largeSize }
