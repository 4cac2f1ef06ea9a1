package engine

import (
	"errors"

	"golang.org/x/sys/unix"
)

// errPeerClosed: the client hung up.
var errPeerClosed = errors.New("peer closed")

func closeFd(fd int) { unix.Close(fd) }

func setSndbuf(fd, bytes int) {
	// SO_SNDBUFFORCE lets root go past net.core.wmem_max; fall back quietly
	// for an unprivileged daemon.
	if err := setsockoptForceSndbuf(fd, bytes); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, bytes)
	}
}
