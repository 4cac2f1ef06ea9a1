package metrics

import (
	"net"
	"sync"
	"sync/atomic"
)

// limitListener accepts a connection only while fewer than cap are open.
// Beyond that it does not call accept at all: further connections wait in
// the kernel's listen backlog, holding none of the daemon's file
// descriptors, and are served as open ones close. Accepting and closing
// them at once would spend a descriptor and a wake-up on each one a flood
// brings, and turn a scrape that is merely late into a failed one.
type limitListener struct {
	net.Listener
	slots     chan struct{} // one token per open connection
	done      chan struct{} // closed by Close, to wake an Accept waiting for a slot
	closeOnce sync.Once
	conns     atomic.Int64 // accepted and not closed yet
}

func newLimitListener(ln net.Listener, cap int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, cap), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	l.conns.Add(1)
	return &limitConn{Conn: c, release: func() {
		l.conns.Add(-1)
		<-l.slots
	}}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

// open is how many accepted connections are not closed yet.
func (l *limitListener) open() int { return int(l.conns.Load()) }

// limitConn gives its slot back when closed, once however often Close is
// called (net/http may close a connection more than once).
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
