package main

import (
	"net"
	"os"
)

// sdNotify sends state to systemd's $NOTIFY_SOCKET (sd_notify(3)): one
// datagram on a unix socket, "@" meaning the abstract namespace. Without
// the variable (no systemd, or a unit without NotifyAccess=) it does
// nothing.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
