package control

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveWith is serve with the timeouts given, returning the server too.
func serveWith(t *testing.T, idle, write time.Duration) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vknet.ctl")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(ln, ServerConfig{Engine: &fakeEngine{stats: sampleStats()}, GID: os.Getgid(), Group: "testgroup",
		IdleTimeout: idle, WriteTimeout: write})
	t.Cleanup(func() { s.Close() })
	return s, path
}

// rawHello connects without the client library and reads the hello, or
// the refusal that comes instead.
func rawHello(t *testing.T, path string) (*net.UnixConn, Reply) {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no hello: %v", err)
	}
	var r Reply
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		t.Fatalf("hello %q: %v", buf[:n], err)
	}
	return c, r
}

func (s *Server) served() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conn)
}

// closedWithin reads and drops what c still holds until the server's
// close shows as EOF, or timeout passes.
func closedWithin(c net.Conn, timeout time.Duration) error {
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func TestConnectionsBeyondCapAreRefused(t *testing.T) {
	s, path := serveWith(t, time.Minute, time.Minute)
	held := make([]*net.UnixConn, MaxConns)
	for i := range held {
		c, r := rawHello(t, path)
		if !r.OK {
			t.Fatalf("connection %d of %d refused: %s", i+1, MaxConns, r.Error)
		}
		held[i] = c
	}
	c, r := rawHello(t, path)
	if r.OK || !strings.Contains(r.Error, "serving 32 control connections already") {
		t.Fatalf("connection %d: %+v, want a refusal that says why", MaxConns+1, r)
	}
	if err := closedWithin(c, 3*time.Second); err != nil {
		t.Fatalf("the refused connection was not closed: %v", err)
	}
	if n := s.served(); n != MaxConns {
		t.Fatalf("serving %d, want %d", n, MaxConns)
	}

	held[0].Close()
	deadline := time.Now().Add(3 * time.Second)
	for s.served() == MaxConns && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if _, r := rawHello(t, path); !r.OK {
		t.Fatalf("after one closed, a new connection: %+v", r)
	}
}

func TestIdleConnectionIsClosed(t *testing.T) {
	s, path := serveWith(t, 200*time.Millisecond, time.Minute)
	c, r := rawHello(t, path)
	if !r.OK {
		t.Fatalf("hello: %+v", r)
	}
	start := time.Now()
	if err := closedWithin(c, 3*time.Second); err != nil {
		t.Fatalf("a connection silent after its hello: %v; the idle timeout is 200ms", err)
	}
	t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))
	deadline := time.Now().Add(3 * time.Second)
	for s.served() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still serving %d connections", s.served())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A client that asks and asks but never reads fills its receive queue;
// the server's next reply then waits, and must not wait for ever.
func TestClientThatDoesNotReadIsClosed(t *testing.T) {
	s, path := serveWith(t, time.Minute, 200*time.Millisecond)
	c, r := rawHello(t, path)
	if !r.OK {
		t.Fatalf("hello: %+v", r)
	}
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	req := []byte(`{"v":1,"cmd":"ports"}`)
	sent := 0
	for ; sent < 100000; sent++ {
		if _, err := c.Write(req); err != nil {
			break // our queue is full too, or the server closed
		}
	}
	if sent == 100000 {
		t.Fatal("100000 requests went out unread: the server's replies never blocked")
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.served() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d unread requests the server still serves %d connections; its write timeout is 200ms", sent, s.served())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := closedWithin(c, 3*time.Second); err != nil {
		t.Fatalf("the connection was not closed: %v", err)
	}
}

// Each reply gets its own write deadline: a client that pauses longer
// than the write timeout between requests is still answered.
func TestPauseBetweenRequestsIsNotAWriteTimeout(t *testing.T) {
	_, path := serveWith(t, time.Minute, 100*time.Millisecond)
	c := dial(t, path)
	time.Sleep(300 * time.Millisecond)
	if _, err := c.Ports(); err != nil {
		t.Fatalf("ports after a pause: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := c.Stats(); err != nil {
		t.Fatalf("stats after another pause: %v", err)
	}
}
