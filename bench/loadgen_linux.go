package bench

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/mmsg"
)

// Client is one load-generator connection to the switch.
type Client struct {
	fd    int
	batch *mmsg.Batch
	bufs  [][]byte
}

// Dial connects a SEQPACKET client with large buffers, as a busy VM would.
func Dial(path string, batch int) (*Client, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect %s: %w", path, err)
	}
	return newClient(fd, batch), nil
}

func newClient(fd, batch int) *Client {
	for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
		// Root only; ordinary users get the defaults, which only lowers the numbers.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 4<<20)
	}
	c := &Client{fd: fd, batch: mmsg.NewBatch(batch), bufs: make([][]byte, batch)}
	for i := range c.bufs {
		c.bufs[i] = make([]byte, 65536)
	}
	return c
}

// Close ends the connection.
func (c *Client) Close() error { return unix.Close(c.fd) }

// Send sends frame n times in batches, blocking while the switch pushes back.
func (c *Client) Send(frame []byte, n int) error {
	for i := 0; i < c.batch.Cap(); i++ {
		c.batch.Set(i, frame)
	}
	for n > 0 {
		k := n
		if k > c.batch.Cap() {
			k = c.batch.Cap()
		}
		sent, err := mmsg.Send(c.fd, c.batch, k, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		n -= sent
	}
	return nil
}

// Receive counts frames until want have arrived or none arrived for idle.
// progress, when set, hears the running count after every batch.
func (c *Client) Receive(want int, idle time.Duration) (int, error) {
	return c.ReceiveProgress(want, idle, nil)
}

// ReceiveProgress is Receive reporting the running count after every batch.
func (c *Client) ReceiveProgress(want int, idle time.Duration, progress func(int)) (int, error) {
	tv := unix.NsecToTimeval(int64(idle))
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, err
	}
	for i, b := range c.bufs {
		c.batch.Set(i, b)
	}
	got := 0
	for got < want {
		n, err := mmsg.Recv(c.fd, c.batch, c.batch.Cap(), unix.MSG_WAITFORONE)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return got, nil
		case err != nil:
			return got, err
		}
		got += n
		if progress != nil {
			progress(got)
		}
	}
	return got, nil
}

// Window limits how far a sender runs ahead of its receiver, like a
// transport's window: the benchmark then measures the switch's rate, not
// how many frames an overloaded 2-core machine drops.
type Window struct {
	mu       sync.Mutex
	cond     *sync.Cond
	received int
	size     int
}

// NewWindow allows size frames in flight.
func NewWindow(size int) *Window {
	w := &Window{size: size}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// Received records the receiver's running count.
func (w *Window) Received(n int) {
	w.mu.Lock()
	w.received = n
	w.mu.Unlock()
	w.cond.Signal()
}

// Wait blocks until sent-received leaves room for a batch, or gives up
// after timeout (the switch dropped frames and they will never arrive).
func (w *Window) Wait(sent, batch int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	w.mu.Lock()
	for sent-w.received+batch > w.size && time.Now().Before(deadline) {
		w.mu.Unlock()
		time.Sleep(20 * time.Microsecond)
		w.mu.Lock()
	}
	w.mu.Unlock()
}

// SendWindowed sends frame n times, never more than the window ahead of
// the receiver.
func (c *Client) SendWindowed(frame []byte, n int, w *Window) error {
	sent := 0
	for sent < n {
		k := n - sent
		if k > c.batch.Cap() {
			k = c.batch.Cap()
		}
		w.Wait(sent, k, 100*time.Millisecond)
		if err := c.Send(frame, k); err != nil {
			return err
		}
		sent += k
	}
	return nil
}
