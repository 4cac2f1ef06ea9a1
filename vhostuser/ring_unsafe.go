package vhostuser

import (
	"sync/atomic"
	"unsafe"
)

// All of the package's unsafe code is here: word-sized atomic accesses to
// ring indices that live in guest memory. Every accessor takes the slice
// and an offset, so a bounds check on the slice guards the pointer.
//
// sync/atomic has no 16-bit operations. The ring indices we must order
// (avail idx, used idx) each share an aligned 32-bit word with their
// ring's flags, so they are loaded and stored as that word: the avail word
// is the guest's and we only load it; the used word (flags and idx) is ours
// alone to write. The event fields (used_event, avail_event) are hints
// accessed with plain 16-bit loads and stores, which are single-copy
// atomic when aligned on the platforms we run on, ordered by fence.

// load32 is an acquire load of the little-endian word at b[off:off+4].
func load32(b []byte, off int) uint32 {
	_ = b[off+3]
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[off])))
}

// store32 is a release store of the word at b[off:off+4].
func store32(b []byte, off int, v uint32) {
	_ = b[off+3]
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&b[off])), v)
}

// load16 reads b[off:off+2] with one 16-bit load: the guest may be writing
// it, and a byte-wise read could see half of each value.
func load16(b []byte, off int) uint16 {
	_ = b[off+1]
	return *(*uint16)(unsafe.Pointer(&b[off]))
}

// store16 writes b[off:off+2] with one 16-bit store.
func store16(b []byte, off int, v uint16) {
	_ = b[off+1]
	*(*uint16)(unsafe.Pointer(&b[off])) = v
}

// store64le writes v little-endian at b[off:off+8] with one 8-byte store
// (no ordering: a used entry, published later by store32). The
// platforms we build for are little-endian and store unaligned words.
func store64le(b []byte, off int, v uint64) {
	_ = b[off+7]
	*(*uint64)(unsafe.Pointer(&b[off])) = v
}

// fence is a full memory barrier: an atomic read-modify-write, which Go
// compiles to LOCK XADD on amd64 and LDADDAL on arm64. It orders a store
// of an event field or flag before the re-check load of an index.
//
// The word is on the caller's stack, a line no other thread writes: a
// package-level word was one line for every loop (--workers), each of
// them taking it from the others' cores at every RX and TX batch
// (BenchmarkFenceParallel). Only the ordering matters, not the word.
func fence() {
	var w uint32
	atomic.AddUint32(&w, 0)
}

// alignedTo says whether b's first byte sits at an address that is a
// multiple of a: what the atomic word accesses above need.
func alignedTo(b []byte, a uintptr) bool {
	return len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%a == 0
}

// or32 atomically ORs v into the word at b[off:off+4]: the dirty log's
// bits, which the front-end clears concurrently.
func or32(b []byte, off int, v uint32) {
	_ = b[off+3]
	atomic.OrUint32((*uint32)(unsafe.Pointer(&b[off])), v)
}

// addrOf is where b's first byte lies, to tell which mapping a fault's
// address falls in; 0 for an empty b.
func addrOf(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&b[0]))
}
