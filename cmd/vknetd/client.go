package main

import (
	"bufio"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/framefmt"
)

// runClient is -c: join the switch as an ordinary client and print one
// decoded line per frame. Like the original it sees only what the switch
// floods to it (broadcast, multicast, unknown unicast).
func runClient(o *options, stdout io.Writer) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: o.socket}); err != nil {
		return fmt.Errorf("connecting to %s (-p): %w; is vknetd running, and are you in its group?", o.socket, err)
	}
	out := bufio.NewWriter(stdout)
	dec := framefmt.NewDecoder()
	buf := make([]byte, 65536)
	line := make([]byte, 0, 512)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading from %s: %w", o.socket, err)
		}
		if n == 0 {
			out.Flush()
			return fmt.Errorf("vknetd closed the connection on %s", o.socket)
		}
		line = dec.Line(line[:0], time.Now(), buf[:n])
		line = append(line, '\n')
		out.Write(line)
		out.Flush()
	}
}
