//go:build !linux

package main

import (
	"errors"
	"io"
	"os"
)

// plug needs Linux: TAP creation by netlink, recvmmsg/sendmmsg, epoll,
// and eventfds and memfd for vhost-user.
func plug(*options, io.Writer, io.Writer, <-chan os.Signal) error {
	return errors.New("vknetplug runs on Linux only; on the BSDs connect a TAP to the switch with socat (see vknetd(8))")
}
