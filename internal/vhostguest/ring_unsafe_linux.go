package vhostguest

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
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

// fence is a full memory barrier, on a word of the caller's stack: a
// package-level word was one cache line for every guest of a process
// (the tests' and benchmarks' guests, each on its own goroutine), taken
// from one core by the other at every batch.
func fence() {
	var w uint32
	atomic.AddUint32(&w, 0)
}

// setIov points v at b, which must not be empty.
func setIov(v *unix.Iovec, b []byte) {
	v.Base = &b[0]
	v.SetLen(len(b))
}

// readv and writev on a non-blocking fd: raw, as nothing here sleeps in
// the kernel, and with the iovecs the caller keeps (no allocation).
func readv(fd int, iov []unix.Iovec) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall(unix.SYS_READV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	return int(n), errno
}

func writev(fd int, iov []unix.Iovec) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	return int(n), errno
}
