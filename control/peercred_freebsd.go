package control

import "golang.org/x/sys/unix"

// peerCred reads LOCAL_PEERCRED: the peer's uid and groups at connect
// (FreeBSD records no pid there).
func peerCred(fd int) (cred, error) {
	xc, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return cred{}, err
	}
	c := cred{pid: -1, uid: int64(xc.Uid), known: true}
	n := int(xc.Ngroups)
	if n > len(xc.Groups) {
		n = len(xc.Groups)
	}
	c.groups = append(c.groups, xc.Groups[:n]...)
	return c, nil
}
