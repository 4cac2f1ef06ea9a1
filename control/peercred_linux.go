package control

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerCred reads the connecting process's credentials as the kernel
// recorded them at connect: SO_PEERCRED for pid, uid and primary gid, and
// SO_PEERGROUPS (Linux 4.13) for the supplementary groups, which is what
// the socket file's mode was checked against.
func peerCred(fd int) (cred, error) {
	uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return cred{}, err
	}
	c := cred{pid: uc.Pid, uid: int64(uc.Uid), known: true, groups: []uint32{uc.Gid}}
	groups, err := peerGroups(fd)
	if errors.Is(err, unix.ENOPROTOOPT) {
		c.groupsUnknown = true
		return c, nil
	}
	if err != nil {
		return cred{}, err
	}
	c.groups = append(c.groups, groups...)
	return c, nil
}

// peerGroups is getsockopt(SO_PEERGROUPS); x/sys/unix has no wrapper that
// keeps the binary gid array intact (GetsockoptString stops at a NUL).
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 32)
	for {
		n := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case errno == unix.ERANGE && int(n/4) > len(buf):
			// The kernel wrote back the size it needs.
			buf = make([]uint32, n/4)
		case errno != 0:
			return nil, errno
		default:
			return buf[:n/4], nil
		}
	}
}
