package metrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

const scrapeRequest = "GET " + Path + " HTTP/1.1\r\nHost: vknetd\r\n\r\n"

// serveLimited serves a fake switch on a loopback port with lim.
func serveLimited(t *testing.T, lim Limits) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := ServeLimited(ln, &fakeSource{stats: stats(1)}, nil, lim)
	t.Cleanup(func() { s.Close() })
	return s
}

func dial(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitOpen(t *testing.T, s *Server, want int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for s.ln.open() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", s.ln.open(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// answered reads one response on c within timeout.
func answered(c net.Conn, timeout time.Duration) (*http.Response, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// closedWithin says whether the server closes c within timeout. It may
// say why first, with a 400 (net/http does for a request cut short).
func closedWithin(c net.Conn, timeout time.Duration) error {
	c.SetReadDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errors.New("still open")
	}
	if len(b) > 0 && !bytes.HasPrefix(b, []byte("HTTP/1.1 400 ")) {
		return fmt.Errorf("closed, but after sending %q", b)
	}
	return nil // EOF or reset: closed
}

func TestConnectionsBeyondCapWaitInBacklog(t *testing.T) {
	s := serveLimited(t, Limits{MaxConns: 2, ReadHeader: time.Minute, Read: time.Minute, Write: time.Minute, Idle: time.Minute})
	idle := []net.Conn{dial(t, s), dial(t, s)}
	waitOpen(t, s, 2)

	// The kernel completes the third connection into the backlog, but the
	// server does not take it while two are open.
	late := dial(t, s)
	if _, err := late.Write([]byte(scrapeRequest)); err != nil {
		t.Fatal(err)
	}
	if resp, err := answered(late, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a connection beyond the cap of 2 was answered (%v, %v), want it left waiting", resp, err)
	}
	if n := s.ln.open(); n != 2 {
		t.Fatalf("%d connections open, cap is 2", n)
	}

	idle[0].Close()
	resp, err := answered(late, 3*time.Second)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the waiting scrape after a slot freed: %v, %v", resp, err)
	}
}

func TestSlowAndIdleConnectionsAreClosed(t *testing.T) {
	const timeout = 200 * time.Millisecond
	lim := Limits{MaxConns: 4, ReadHeader: timeout, Read: time.Minute, Write: time.Minute, Idle: timeout}
	for _, c := range []struct {
		name string
		act  func(t *testing.T, c net.Conn)
	}{
		{"silent after connecting", func(*testing.T, net.Conn) {}},
		{"slowloris header", func(t *testing.T, c net.Conn) {
			// A byte of header every 20 ms: never complete, never
			// silent for long.
			if _, err := c.Write([]byte("GET " + Path + " HTTP/1.1\r\nX-Slow: ")); err != nil {
				t.Fatal(err)
			}
			go func() {
				for {
					time.Sleep(20 * time.Millisecond)
					if _, err := c.Write([]byte("z")); err != nil {
						return
					}
				}
			}()
		}},
		{"idle after a scrape (keep-alive)", func(t *testing.T, c net.Conn) {
			if _, err := c.Write([]byte(scrapeRequest)); err != nil {
				t.Fatal(err)
			}
			if resp, err := answered(c, 3*time.Second); err != nil || resp.StatusCode != 200 || resp.Close {
				t.Fatalf("scrape: %v, %v; want 200 kept alive", resp, err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := serveLimited(t, lim)
			conn := dial(t, s)
			start := time.Now()
			c.act(t, conn)
			if err := closedWithin(conn, 3*time.Second); err != nil {
				t.Fatalf("connection %s: %v 3s later; the timeout is %v", c.name, err, timeout)
			}
			t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))
			waitOpen(t, s, 0)
		})
	}
}

func TestDefaultLimitsBoundEveryPhase(t *testing.T) {
	l := DefaultLimits
	if l.MaxConns < 1 || l.MaxConns > MaxConns || MaxFds < 1+l.MaxConns {
		t.Fatalf("MaxConns %d, MaxFds %d: the fd budget would not cover the connections", l.MaxConns, MaxFds)
	}
	// Zero would mean no timeout at all in net/http.
	for name, d := range map[string]time.Duration{"ReadHeader": l.ReadHeader, "Read": l.Read, "Write": l.Write, "Idle": l.Idle} {
		if d <= 0 || d > time.Minute {
			t.Errorf("%s timeout %v, want a bound of at most a minute", name, d)
		}
	}
}

func TestCloseWakesAcceptWaitingForSlot(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := ServeLimited(ln, &fakeSource{stats: stats(1)}, nil, Limits{MaxConns: 1, ReadHeader: time.Minute, Read: time.Minute, Write: time.Minute, Idle: time.Minute})
	dial(t, s)
	waitOpen(t, s, 1)
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung with the only slot taken")
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Fatal("still listening after Close")
	}
}
