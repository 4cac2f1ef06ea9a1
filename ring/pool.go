// Package ring owns the switch's frame memory: one slab of equal-size
// buffers allocated at start, handed out by reference, and bounded FIFO
// queues of those references.
//
// Nothing here locks. The engine's event loop is the only owner of a Pool
// and its Queues; that is what makes a reference count a plain int32 and a
// Get a slice pop. Frames never move: a flood to N ports queues the same
// reference N times and the buffer returns to the pool when the last port
// has sent it.
package ring

import "fmt"

// Ref names one buffer of a Pool. It is an index, not a pointer, so queues
// of references are small and hold nothing the garbage collector must scan.
type Ref int32

// Pool is a fixed set of equal-size frame buffers carved out of one slab.
type Pool struct {
	slab []byte
	size int
	lens []int32 // frame length held in each buffer
	refs []int32 // outstanding references; 0 means free
	free []Ref   // stack of free buffers
}

// NewPool allocates count buffers of size bytes each in one slab.
func NewPool(count, size int) (*Pool, error) {
	if count <= 0 || size <= 0 {
		return nil, fmt.Errorf("ring: pool needs a positive buffer count and size, got %d x %d", count, size)
	}
	if count > 1<<30 {
		return nil, fmt.Errorf("ring: pool of %d buffers is larger than a Ref can name", count)
	}
	p := &Pool{
		slab: make([]byte, count*size),
		size: size,
		lens: make([]int32, count),
		refs: make([]int32, count),
		free: make([]Ref, count),
	}
	// Hand out low indices first so a lightly loaded switch touches few pages.
	for i := range p.free {
		p.free[i] = Ref(count - 1 - i)
	}
	return p, nil
}

// Get takes a free buffer with one reference, or reports false when the
// pool is empty (the caller stops reading: back-pressure, not allocation).
func (p *Pool) Get() (Ref, bool) {
	n := len(p.free)
	if n == 0 {
		return -1, false
	}
	r := p.free[n-1]
	p.free = p.free[:n-1]
	p.refs[r] = 1
	p.lens[r] = 0
	return r, true
}

// Buf is the whole buffer behind r, for reading a frame into.
func (p *Pool) Buf(r Ref) []byte {
	off := int(r) * p.size
	return p.slab[off : off+p.size : off+p.size]
}

// Frame is the frame held in r: its buffer cut to the length set by SetLen.
func (p *Pool) Frame(r Ref) []byte {
	off := int(r) * p.size
	return p.slab[off : off+int(p.lens[r]) : off+p.size]
}

// SetLen records how many bytes of r's buffer hold the frame.
func (p *Pool) SetLen(r Ref, n int) { p.lens[r] = int32(n) }

// Len is the frame length recorded for r.
func (p *Pool) Len(r Ref) int { return int(p.lens[r]) }

// Hold adds a reference to r: one per extra queue the frame goes into.
func (p *Pool) Hold(r Ref) { p.refs[r]++ }

// Release drops one reference; the last one returns the buffer to the pool.
func (p *Pool) Release(r Ref) {
	p.refs[r]--
	switch {
	case p.refs[r] == 0:
		p.free = append(p.free, r) // never grows: capacity is the buffer count
	case p.refs[r] < 0:
		panic(fmt.Sprintf("ring: buffer %d released more often than held", r))
	}
}

// Free is the number of buffers not in use.
func (p *Pool) Free() int { return len(p.free) }

// Cap is the number of buffers in the pool.
func (p *Pool) Cap() int { return len(p.refs) }

// Size is the size of every buffer.
func (p *Pool) Size() int { return p.size }
