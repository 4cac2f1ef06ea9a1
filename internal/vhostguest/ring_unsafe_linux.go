package vhostguest

import (
	"sync/atomic"
	"unsafe"
)

// Ring index accesses, the guest's half: the avail word (flags, idx) is
// ours to store, the used word is the device's and we load it.

func load32(b []byte, off int) uint32 {
	_ = b[off+3]
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[off])))
}

func store32(b []byte, off int, v uint32) {
	_ = b[off+3]
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&b[off])), v)
}

func load16(b []byte, off int) uint16 {
	_ = b[off+1]
	return *(*uint16)(unsafe.Pointer(&b[off]))
}

func store16(b []byte, off int, v uint16) {
	_ = b[off+1]
	*(*uint16)(unsafe.Pointer(&b[off])) = v
}

var fenceWord uint32

func fence() { atomic.AddUint32(&fenceWord, 0) }
