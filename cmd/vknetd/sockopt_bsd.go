//go:build dragonfly || freebsd

package main

import "golang.org/x/sys/unix"

// setRcvbuf sizes a socket's receive buffer, within kern.ipc.maxsockbuf.
func setRcvbuf(fd, bytes int) {
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, bytes)
}
