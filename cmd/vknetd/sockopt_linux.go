package main

import "golang.org/x/sys/unix"

// setRcvbuf sizes a socket's receive buffer; as root past net.core.rmem_max.
func setRcvbuf(fd, bytes int) {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bytes); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, bytes)
	}
}
