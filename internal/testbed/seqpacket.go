package testbed

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/framefmt"
	"golang.org/x/sys/unix"
)

// DialTimeout is how long DialSeqpacket keeps retrying while the socket does not
// exist yet or refuses connections (a daemon still starting).
const DialTimeout = 5 * time.Second

// SendTimeout bounds Send: a switch that stops reading fails the test instead of
// hanging it.
const SendTimeout = 5 * time.Second

// maxFrame is the receive buffer: well above any MTU the switch accepts, so that a
// frame is never cut short without Recv noticing.
const maxFrame = 1 << 16

// SeqpacketClient is a raw client of the switch socket: SOCK_SEQPACKET, one Ethernet
// frame per message, no header, as a vkernel speaks it. A unix socket path is not
// scoped by network namespace, so the test process connects from where it runs.
type SeqpacketClient struct {
	conn *net.UnixConn
	path string
	buf  []byte
}

// DialSeqpacket connects to the SEQPACKET socket at path, retrying for DialTimeout
// while the path is missing or refuses connections. The client is closed at cleanup.
func DialSeqpacket(t testing.TB, path string) *SeqpacketClient {
	t.Helper()
	c, err := dialSeqpacket(path)
	if err != nil {
		t.Fatalf("connecting to the switch socket %s: %v", path, err)
	}
	t.Cleanup(c.Close)
	return c
}

func dialSeqpacket(path string) (*SeqpacketClient, error) {
	addr := &net.UnixAddr{Name: path, Net: "unixpacket"}
	deadline := time.Now().Add(DialTimeout)
	for {
		conn, err := net.DialUnix("unixpacket", nil, addr)
		if err == nil {
			return &SeqpacketClient{conn: conn, path: path, buf: make([]byte, maxFrame)}, nil
		}
		retry := errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
		if !retry || time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Conn returns the underlying connection, e.g. to set buffer sizes.
func (c *SeqpacketClient) Conn() *net.UnixConn { return c.conn }

// TrySend sends one frame as one message, waiting at most SendTimeout for room in
// the socket buffer.
func (c *SeqpacketClient) TrySend(frame []byte) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(SendTimeout)); err != nil {
		return err
	}
	n, err := c.conn.Write(frame)
	if err == nil && n != len(frame) {
		err = fmt.Errorf("sent %d of %d bytes", n, len(frame))
	}
	return err
}

// Send sends one frame as one message and fails the test if that does not succeed
// within SendTimeout.
func (c *SeqpacketClient) Send(t testing.TB, frame []byte) {
	t.Helper()
	if err := c.TrySend(frame); err != nil {
		t.Fatalf("sending to %s (%s): %v", c.path, framefmt.Line(nil, time.Now(), frame), err)
	}
}

// Recv returns the next frame, waiting at most timeout. When none arrives in time the
// error wraps os.ErrDeadlineExceeded; when the switch closed the connection it is
// io.EOF. The frame is a fresh copy that the caller may keep.
func (c *SeqpacketClient) Recv(timeout time.Duration) ([]byte, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	n, _, flags, _, err := c.conn.ReadMsgUnix(c.buf, nil)
	if errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	if err != nil {
		return nil, err
	}
	if flags&unix.MSG_TRUNC != 0 {
		return nil, fmt.Errorf("frame from %s larger than %d bytes", c.path, len(c.buf))
	}
	if n == 0 {
		// The switch never sends an empty message: a zero read is the peer closing.
		return nil, io.EOF
	}
	return append([]byte(nil), c.buf[:n]...), nil
}

// Expect returns the next frame, failing the test if none arrives within timeout.
func (c *SeqpacketClient) Expect(t testing.TB, timeout time.Duration) []byte {
	t.Helper()
	f, err := c.Recv(timeout)
	if err != nil {
		t.Fatalf("expecting a frame on %s within %v: %v", c.path, timeout, err)
	}
	return f
}

// ExpectNone fails the test if a frame arrives, or the connection ends, within the
// given time; the failure message decodes the frame.
func (c *SeqpacketClient) ExpectNone(t testing.TB, within time.Duration) {
	t.Helper()
	f, err := c.Recv(within)
	switch {
	case err == nil:
		t.Errorf("unexpected frame on %s: %s", c.path, framefmt.Line(nil, time.Now(), f))
	case !errors.Is(err, os.ErrDeadlineExceeded):
		t.Errorf("expecting silence on %s: %v", c.path, err)
	}
}

// Drain discards frames until none arrives for quiet, and returns how many it
// discarded (for traffic a test does not care about, e.g. before a precise check).
func (c *SeqpacketClient) Drain(quiet time.Duration) int {
	n := 0
	for {
		if _, err := c.Recv(quiet); err != nil {
			return n
		}
		n++
	}
}

// Close closes the connection; the switch sees the client leave. It may be called
// more than once.
func (c *SeqpacketClient) Close() { c.conn.Close() }
