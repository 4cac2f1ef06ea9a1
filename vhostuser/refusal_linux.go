package vhostuser

import "golang.org/x/sys/unix"

// Refuse writes the refusal note (see RefusalRequest) for reason on a
// vhost-user connection the caller is about to close, such as one it
// accepted and will not serve. The write never blocks: a socket too full
// to take the whole note gets what fits, or nothing; the connection is
// being closed either way.
func Refuse(fd int, reason string) {
	_, _ = unix.SendmsgN(fd, appendRefusal(nil, reason), nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
}
