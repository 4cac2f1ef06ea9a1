package engine

import "golang.org/x/sys/unix"

// peerCred reports the connecting user (LOCAL_PEERCRED carries no pid).
func peerCred(fd int) (pid, uid int32) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1, -1
	}
	return -1, int32(cred.Uid)
}
