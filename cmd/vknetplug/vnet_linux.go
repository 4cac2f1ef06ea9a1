package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// writeVnetFrame writes one frame behind its virtio_net_hdr to a TAP with
// IFF_VNET_HDR: one writev, so the TAP sees them as one frame. Each frame
// has its own header here (a superframe, a partial checksum, nothing),
// where tap.WriteVnetFrames puts one header before all.
func writeVnetFrame(fd int, hdr, frame []byte) error {
	var iov [2]unix.Iovec
	n := 1
	iov[0].Base = &hdr[0]
	iov[0].SetLen(len(hdr))
	if len(frame) > 0 { // the TAP refuses it: let it say so
		iov[1].Base = &frame[0]
		iov[1].SetLen(len(frame))
		n = 2
	}
	_, _, errno := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
	if errno != 0 {
		return errno
	}
	return nil
}
