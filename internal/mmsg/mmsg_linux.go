// Package mmsg batches datagram and seqpacket I/O with recvmmsg(2) and
// sendmmsg(2), which x/sys/unix does not wrap. One call moves up to a
// batch of messages, saving a syscall entry and exit per frame.
package mmsg

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hdr is struct mmsghdr. Go pads it as C does on every Linux architecture.
type hdr struct {
	msg unix.Msghdr
	len uint32
}

// Batch is a reusable array of message headers, one buffer each. Buffers
// are referenced, not copied: they must stay alive and unmoved until the
// call returns (Go's heap does not move objects).
type Batch struct {
	hdrs []hdr
	iovs []unix.Iovec
	// ctl holds each message's control buffer (ctlSize bytes each) when
	// the batch was made WithCredentials; nil otherwise.
	ctl     []byte
	ctlSize int
}

// NewBatch allocates headers for up to n messages.
func NewBatch(n int) *Batch {
	b := &Batch{hdrs: make([]hdr, n), iovs: make([]unix.Iovec, n)}
	for i := range b.hdrs {
		b.hdrs[i].msg.Iov = &b.iovs[i]
		b.hdrs[i].msg.SetIovlen(1)
	}
	return b
}

// credSpace is room for exactly one SCM_CREDENTIALS message. Exactly: a
// sender may attach SCM_RIGHTS, and the kernel installs into the receiver
// as many of those file descriptors as the rest of the buffer holds. With
// no room left it installs none (it closes them and sets MSG_CTRUNC), so
// a client cannot make the receiver hold its file descriptors.
var credSpace = unix.CmsgSpace(unix.SizeofUcred)

// WithCredentials gives every message of b a control buffer for the
// sender's SCM_CREDENTIALS, which the receiving socket must have asked for
// with SO_PASSCRED. The buffers are allocated here, once.
func (b *Batch) WithCredentials() *Batch {
	b.ctlSize = credSpace
	b.ctl = make([]byte, len(b.hdrs)*credSpace)
	for i := range b.hdrs {
		b.hdrs[i].msg.Control = &b.ctl[i*credSpace]
		b.hdrs[i].msg.SetControllen(credSpace)
	}
	return b
}

// Credentials returns the sender's pid and uid that the kernel attached
// to message i after Recv, and false when it attached none.
func (b *Batch) Credentials(i int) (pid int32, uid uint32, ok bool) {
	m := &b.hdrs[i].msg
	if b.ctl == nil || uint64(m.Controllen) < uint64(unix.CmsgLen(unix.SizeofUcred)) {
		return 0, 0, false
	}
	buf := b.ctl[i*b.ctlSize : (i+1)*b.ctlSize]
	h := (*unix.Cmsghdr)(unsafe.Pointer(&buf[0]))
	if h.Level != unix.SOL_SOCKET || h.Type != unix.SCM_CREDENTIALS || uint64(h.Len) < uint64(unix.CmsgLen(unix.SizeofUcred)) {
		return 0, 0, false
	}
	c := (*unix.Ucred)(unsafe.Pointer(&buf[unix.CmsgLen(0)]))
	return c.Pid, c.Uid, true
}

// SetName makes message i carry a socket address: the destination for
// Send, or where Recv stores the sender's address (unconnected datagram
// sockets). name must stay alive until the call returns.
func (b *Batch) SetName(i int, name *unix.RawSockaddrUnix) {
	b.hdrs[i].msg.Name = (*byte)(unsafe.Pointer(name))
	b.hdrs[i].msg.Namelen = uint32(unsafe.Sizeof(*name))
}

// SetNameLen sets the address length of message i for Send (a unix
// address is only as long as its path).
func (b *Batch) SetNameLen(i int, n int) { b.hdrs[i].msg.Namelen = uint32(n) }

// NameLen is the length of the sender address Recv stored for message i.
func (b *Batch) NameLen(i int) int { return int(b.hdrs[i].msg.Namelen) }

// Cap is the most messages one call moves.
func (b *Batch) Cap() int { return len(b.hdrs) }

// Set points message i at buf: the bytes to send, or the space to receive into.
func (b *Batch) Set(i int, buf []byte) {
	if len(buf) == 0 {
		b.iovs[i].Base = nil
	} else {
		b.iovs[i].Base = &buf[0]
	}
	b.iovs[i].SetLen(len(buf))
	b.hdrs[i].msg.Flags = 0
	if b.ctl != nil {
		// Recv shrinks it to what the kernel wrote.
		b.hdrs[i].msg.SetControllen(b.ctlSize)
	}
}

// Len is the byte count of message i after Recv.
func (b *Batch) Len(i int) int { return int(b.hdrs[i].len) }

// Truncated reports that message i did not fit its buffer.
func (b *Batch) Truncated(i int) bool { return b.hdrs[i].msg.Flags&unix.MSG_TRUNC != 0 }

// Recv receives up to n messages into the buffers set with Set.
func Recv(fd int, b *Batch, n int, flags int) (int, error) {
	return call(unix.SYS_RECVMMSG, fd, b.hdrs[:n], flags)
}

// Send sends messages 0..n-1 as set with Set; it returns how many went.
func Send(fd int, b *Batch, n int, flags int) (int, error) {
	return call(unix.SYS_SENDMMSG, fd, b.hdrs[:n], flags|unix.MSG_NOSIGNAL)
}

func call(trap uintptr, fd int, hdrs []hdr, flags int) (int, error) {
	if len(hdrs) == 0 {
		return 0, nil
	}
	var n uintptr
	var errno unix.Errno
	if flags&unix.MSG_DONTWAIT != 0 {
		// Cannot block, so the scheduler need not hear about it.
		n, _, errno = unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), uintptr(flags), 0, 0)
	} else {
		n, _, errno = unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), uintptr(flags), 0, 0)
	}
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
