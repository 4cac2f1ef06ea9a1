//go:build dragonfly || freebsd

package engine

import "golang.org/x/sys/unix"

// The BSDs have neither SCM_CREDENTIALS on every datagram nor openat2:
// there a datagram client is reached by its path, as named, and the
// checks of dgram_owner_linux.go are not made (see vknetd(8)).

func enableSenderCredentials(int) error { return nil }

func openClientSocket(string, int32) (fd int, dev, ino uint64, err error) { return -1, 0, 0, nil }

func clientAddr(d *dgramState) *unix.SockaddrUnix { return &unix.SockaddrUnix{Name: d.key} }

// setViaAddr: the BSD sendTo addresses the client by its key.
func setViaAddr(*dgramState) error { return nil }

func samePathSocket(*dgramState) bool { return true }
