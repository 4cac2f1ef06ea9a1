package tap

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// TAP I/O, batch-first. A TAP fd is a character device, not a socket: it
// has no recvmmsg or sendmmsg (ENOTSOCK), it hands over one frame per
// read, and it takes one frame per write (writev would glue frames into
// one). So a batch is a loop of non-blocking calls until the kernel has
// nothing more to give or take.

// ReadFrames reads frames from the non-blocking TAP fd into bufs, one per
// read, until the device has none left (EAGAIN) or bufs run out, and puts
// each frame's length in sizes. It returns how many bufs hold frames; a
// non-nil error means the device is gone.
func ReadFrames(fd int, bufs [][]byte, sizes []int) (int, error) {
	for i := range bufs {
		n, err := unix.Read(fd, bufs[i])
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return i, nil
		case err != nil:
			return i, err
		}
		sizes[i] = n
	}
	return len(bufs), nil
}

// ReadVnetFrame reads one frame from a non-blocking TAP opened with
// IFF_VNET_HDR: its virtio_net_hdr into hdr, the frame into buf and, when
// it is longer (a superframe of up to 64 KiB), on into over. It returns
// the bytes read, header included; unix.EAGAIN when the device has none.
func ReadVnetFrame(fd int, hdr, buf, over []byte) (int, error) {
	var iov [3]unix.Iovec
	iov[0].Base, iov[1].Base, iov[2].Base = &hdr[0], &buf[0], &over[0]
	iov[0].SetLen(len(hdr))
	iov[1].SetLen(len(buf))
	iov[2].SetLen(len(over))
	n, _, errno := unix.RawSyscall(unix.SYS_READV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// WriteFrames writes frames to the non-blocking TAP fd, one per write, in
// order, until the device pushes back (EAGAIN) or all are written. It
// returns how many of the head frames are done with: written, or refused
// by the device one by one (EIO while it is down, EMSGSIZE, EINVAL: that
// frame cannot go, the next may), which it marks in refused. It returns
// unix.EAGAIN when it could do nothing at all, and an error after which
// the fd is unusable (EBADF and the like).
func WriteFrames(fd int, frames [][]byte, refused []bool) (int, error) {
	return WriteVnetFrames(fd, nil, frames, refused)
}

// WriteVnetFrames is WriteFrames for a TAP opened with IFF_VNET_HDR:
// hdrs[i], frame i's virtio_net_hdr, goes before it in the same writev. A
// superframe's header asks the kernel to cut it (TSO) or finish its
// checksum. nil hdrs writes the frames bare, as WriteFrames.
func WriteVnetFrames(fd int, hdrs [][]byte, frames [][]byte, refused []bool) (int, error) {
	done := 0
	for done < len(frames) {
		var hdr []byte
		if hdrs != nil {
			hdr = hdrs[done]
		}
		err := writeFrame(fd, hdr, frames[done])
		switch {
		case err == nil:
			refused[done] = false
		case err == unix.EAGAIN:
			if done == 0 {
				return 0, unix.EAGAIN
			}
			return done, nil
		case err == unix.EINTR:
			continue
		case err == unix.EBADF || err == unix.EFAULT:
			return done, err
		default:
			refused[done] = true
		}
		done++
	}
	return done, nil
}

// writeFrame writes one frame, behind hdr when there is one.
func writeFrame(fd int, hdr, frame []byte) error {
	if len(hdr) == 0 {
		_, err := unix.Write(fd, frame)
		return err
	}
	var iov [2]unix.Iovec
	n := 1
	iov[0].Base = &hdr[0]
	iov[0].SetLen(len(hdr))
	if len(frame) > 0 { // the TAP refuses a bare header: let it say so
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
