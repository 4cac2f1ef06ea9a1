package main

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDialDgramAsQEMUAndAsVfkit: a "dgram" client binds its own path and
// sends to the switch's without connecting (QEMU's -netdev dgram), a
// "dgram-connected" one connects (vfkit): the switch answers them on
// different paths, so the load must say which one it drives.
func TestDialDgramAsQEMUAndAsVfkit(t *testing.T) {
	dir := t.TempDir()
	sw := filepath.Join(dir, "switch")
	ls, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ls)
	if err := unix.Bind(ls, &unix.SockaddrUnix{Name: sw}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		transport string
		connected bool
	}{{"dgram", false}, {"dgram-connected", true}} {
		own := filepath.Join(dir, c.transport)
		e, err := dial(c.transport, sw, own)
		if err != nil {
			t.Fatalf("%s: %v", c.transport, err)
		}
		defer e.close()
		_, err = unix.Getpeername(e.fd)
		if connected := err == nil; connected != c.connected {
			t.Errorf("%s: connected %v, want %v (getpeername: %v)", c.transport, connected, c.connected, err)
		}
		if got := e.to != ""; got == c.connected {
			t.Errorf("%s: carries the switch's address on each datagram: %v", c.transport, got)
		}
		if err := writeFrame(e, []byte("frame")); err != nil {
			t.Fatalf("%s: writeFrame: %v", c.transport, err)
		}
		buf := make([]byte, 64)
		n, from, err := unix.Recvfrom(ls, buf, 0)
		if err != nil {
			t.Fatalf("%s: recvfrom: %v", c.transport, err)
		}
		if a, ok := from.(*unix.SockaddrUnix); !ok || a.Name != own || string(buf[:n]) != "frame" {
			t.Errorf("%s: got %q from %v, want %q from %s", c.transport, buf[:n], from, "frame", own)
		}
	}
}
