package testbed

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen returns a SEQPACKET listener in a temporary directory and its path.
func listen(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// accept serves one connection with handle on its own goroutine.
func accept(t *testing.T, l *net.UnixListener, handle func(*net.UnixConn)) {
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		handle(c)
	}()
}

func echo(c *net.UnixConn) {
	buf := make([]byte, 1<<16)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func TestSeqpacketRoundTrip(t *testing.T) {
	l, path := listen(t)
	accept(t, l, echo)
	c := DialSeqpacket(t, path)

	a1, a2 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	frames := [][]byte{
		ARPRequest(MAC(1), a1, a2),
		IPv4UDP(MAC(1), MAC(2), a1, a2, 1, 2, make([]byte, 1472)),
		EthernetFrame(MAC(2), MAC(1), 0x88b5, nil),
		IPv4UDP(MAC(1), MAC(2), a1, a2, 1, 2, bytes.Repeat([]byte{0xab}, 9000)),
	}
	// All sent before any is read: message boundaries must survive queueing.
	for _, f := range frames {
		c.Send(t, f)
	}
	for i, want := range frames {
		got := c.Expect(t, 2*time.Second)
		if !bytes.Equal(got, want) {
			t.Errorf("frame %d: got %d bytes, want %d bytes", i, len(got), len(want))
		}
	}
	c.ExpectNone(t, 50*time.Millisecond)
	if n := c.Drain(20 * time.Millisecond); n != 0 {
		t.Errorf("Drain discarded %d frames from a silent socket", n)
	}
	for range 3 {
		c.Send(t, frames[0])
	}
	if n := c.Drain(200 * time.Millisecond); n != 3 {
		t.Errorf("Drain discarded %d frames, want 3", n)
	}
}

func TestSeqpacketRecvTimeoutAndEOF(t *testing.T) {
	l, path := listen(t)
	hangup := make(chan struct{})
	accept(t, l, func(*net.UnixConn) { <-hangup })
	c := DialSeqpacket(t, path)

	if _, err := c.Recv(30 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Recv on a silent socket: %v, want a deadline error", err)
	}
	msg := mustFail(t, func(tb testing.TB) { c.Expect(tb, 30*time.Millisecond) })
	if !strings.Contains(msg, path) {
		t.Errorf("Expect's failure does not name the socket: %s", msg)
	}
	close(hangup)
	if _, err := c.Recv(2 * time.Second); err != io.EOF {
		t.Errorf("Recv after the server closed: %v, want io.EOF", err)
	}
	mustFail(t, func(tb testing.TB) { c.ExpectNone(tb, time.Second) })
}

func TestSeqpacketExpectNoneFailsOnAFrame(t *testing.T) {
	l, path := listen(t)
	accept(t, l, echo)
	c := DialSeqpacket(t, path)
	c.Send(t, ICMPEcho(MAC(1), MAC(2), netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), 1, 1, nil))
	msg := mustFail(t, func(tb testing.TB) { c.ExpectNone(tb, 2*time.Second) })
	// The failure shows the frame decoded, so a test's log says what leaked.
	if !strings.Contains(msg, "198.18.0.1 > 198.18.0.2 ICMP echo-request id 1 seq 1") {
		t.Errorf("ExpectNone's failure does not decode the frame: %s", msg)
	}
}

func TestDialSeqpacketWaitsForTheSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "late")
	go func() {
		time.Sleep(200 * time.Millisecond)
		l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			return
		}
		t.Cleanup(func() { l.Close() })
		c, err := l.AcceptUnix()
		if err == nil {
			echo(c)
		}
	}()
	c := DialSeqpacket(t, path)
	c.Send(t, EthernetFrame(Broadcast, MAC(1), 0x88b5, []byte("late")))
	if got := c.Expect(t, 2*time.Second); !bytes.HasSuffix(got, []byte("late")) {
		t.Errorf("got % x", got)
	}
}

func TestDialSeqpacketRefusesAStreamSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stream")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// A socket of the wrong type is a configuration error to report, not to wait out.
	msg := mustFail(t, func(tb testing.TB) { DialSeqpacket(tb, path) })
	if !strings.Contains(msg, "protocol wrong type") || !strings.Contains(msg, path) {
		t.Errorf("DialSeqpacket's failure does not say the socket at %s has the wrong type: %s", path, msg)
	}
}
