//go:build linux

package integration

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
	"golang.org/x/sys/unix"
)

const tagBurst uint32 = 0x200

// burstReader counts the burst frames one client receives, checking they
// arrive complete and in order, on its own goroutine.
type burstReader struct {
	got  atomic.Uint32 // burst frames received in order
	err  atomic.Pointer[error]
	done chan struct{}
}

func readBurst(c *rawClient, stop <-chan struct{}) *burstReader {
	r := &burstReader{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		fail := func(err error) { r.err.Store(&err) }
		for {
			select {
			case <-stop:
				return
			default:
			}
			f, err := c.recv(50 * time.Millisecond)
			if errors.Is(err, errTimeout) {
				continue
			}
			if err != nil || f == nil {
				fail(fmt.Errorf("read: %d bytes, err=%v (daemon closed the connection?)", len(f), err))
				return
			}
			tag, seq, ok := marker(f)
			if !ok || tag != tagBurst {
				continue
			}
			if want := r.got.Load(); seq != want {
				fail(fmt.Errorf("received burst frame %d where %d was due: frames lost or reordered", seq, want))
				return
			}
			r.got.Add(1)
		}
	}()
	return r
}

func (r *burstReader) failure() error {
	if p := r.err.Load(); p != nil {
		return *p
	}
	return nil
}

func TestStuckClientDoesNotStopTheOthers(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{Args: []string{"-U"}})
	stuck := d.connect(testMAC(9)) // connects and never reads
	a, b := d.connect(testMAC(1)), d.connect(testMAC(2))

	stop := make(chan struct{})
	r := readBurst(b, stop)
	defer func() { close(stop); <-r.done }()

	// The sender keeps at most window frames ahead of the receiver, so b's
	// own transmit queue (256) never overflows: every loss would be the
	// switch's fault. The stuck client gets the same flood and falls behind
	// at once.
	const total, window = 20000, 128
	for sent := 0; sent < total; {
		for end := min(sent+window, total); sent < end; sent++ {
			a.send(rawFrame(testbed.Broadcast, a.mac, tagBurst, uint32(sent)))
		}
		ok := waitFor(5*time.Second, func() bool {
			return r.got.Load() >= uint32(sent) || r.failure() != nil
		})
		if err := r.failure(); err != nil {
			t.Fatalf("receiver after %d frames sent: %v", sent, err)
		}
		if !ok {
			t.Fatalf("receiver got %d of the %d frames sent so far within 5s: the stuck client stalls the switch", r.got.Load(), sent)
		}
	}
	if got := r.got.Load(); got != total {
		t.Fatalf("receiver got %d frames, want %d", got, total)
	}

	s := d.Counters(t)
	ps := s.Port(t, stuck.port)
	if got := ps.Uint(t, "drop_tx-queue-full"); got == 0 {
		t.Errorf("stuck client's port %d counts no tx-queue-full drops after a %d-frame burst: %v", stuck.port, total, ps)
	} else {
		t.Logf("the stuck client lost %d of %d frames (tx-queue-full); the reader lost none", got, total)
	}
	pb := s.Port(t, b.port)
	for k, v := range pb {
		if len(k) > 5 && k[:5] == "drop_" {
			t.Errorf("receiving client's port %d dropped frames: %s=%s", b.port, k, v)
		}
	}
	if got := pb.Uint(t, "tx_frames"); got < total {
		t.Errorf("receiving client's port %d tx_frames = %d, want at least %d", b.port, got, total)
	}
	if got := s.Port(t, a.port).Uint(t, "rx_frames"); got != total {
		t.Errorf("sending client's port %d rx_frames = %d, want %d", a.port, got, total)
	}
	// The stuck client is still a client: it was slowed, not thrown out.
	if errors.Is(stuck.peekClosed(), errPeerGone) {
		t.Errorf("the daemon closed the stuck client's connection")
	}
}

var errPeerGone = errors.New("peer closed the connection")

// peekClosed reports errPeerGone when the daemon has hung up on c.
func (c *rawClient) peekClosed() error {
	rc, err := c.Conn().SyscallConn()
	if err != nil {
		return err
	}
	var hup bool
	if err := rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, _ := unix.Poll(pfd, 0)
		hup = n > 0 && pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP) != 0
	}); err != nil {
		return err
	}
	if hup {
		return errPeerGone
	}
	return nil
}
