package main

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestSdNotify: the state reaches a $NOTIFY_SOCKET listener, as systemd
// runs one, by path and in the abstract namespace ("@"); without the
// variable nothing is sent and nothing fails.
func TestSdNotify(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@vknetd-test-notify-" + time.Now().Format("150405.000000000")} {
		addr := name
		if name[0] == '@' {
			addr = "\x00" + name[1:]
		}
		l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", name)
		if err := sdNotify("MAINPID=4242"); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		l.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 256)
		n, err := l.Read(buf)
		l.Close()
		if err != nil || string(buf[:n]) != "MAINPID=4242" {
			t.Fatalf("%s: listener got %q, %v", name, buf[:n], err)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("MAINPID=1"); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
}
