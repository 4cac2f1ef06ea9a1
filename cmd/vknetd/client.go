package main

import (
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/vknetd/vknetd/control"
)

// runClient is -c: join the switch as an ordinary client and print one
// decoded line per frame, and with -w also write them as pcap. Like the
// original it sees only what the switch floods to it (broadcast,
// multicast, unknown unicast). SIGINT and SIGTERM stop it cleanly, so a
// pcap file ends with the last frame received.
func runClient(o *options, stdout io.Writer) error {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: o.socket, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("connecting to %s (-p): %w; is vknetd running, and are you in its group?", o.socket, err)
	}
	defer conn.Close()
	capture, err := control.NewCapture(stdout, o.write, "-w")
	if err != nil {
		return err
	}
	stop := control.CloseOnSignal(conn)
	defer stop.Release()
	_, werr := control.Watch(conn, capture, 0)
	cerr := capture.Close()
	switch {
	case stop.Stopped():
		return cerr
	case errors.Is(werr, io.EOF):
		return errors.Join(fmt.Errorf("vknetd closed the connection on %s", o.socket), cerr)
	case werr != nil:
		return errors.Join(fmt.Errorf("reading from %s: %w", o.socket, werr), cerr)
	}
	return cerr
}
