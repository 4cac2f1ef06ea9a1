//go:build linux

package secure

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
)

// capture records every frame crossing one interface of a namespace, in
// both directions, through an AF_PACKET socket. It sees a frame as the
// kernel got it from the TAP, before any protocol could drop it, so a
// spoofed frame the switch let through is caught even if the host stack
// would have ignored it.
type capture struct {
	fd   int
	name string

	mu     sync.Mutex
	frames [][]byte
	err    error

	stop chan struct{}
	done chan struct{}
}

// startCapture opens the capture; it records from the moment it returns
// until the test ends.
func startCapture(t *testing.T, ns *testbed.Netns, link string) *capture {
	t.Helper()
	var fd, ifindex int
	err := inNetns(ns.Name, func() error {
		// net.InterfaceByName's netlink socket, like the packet socket,
		// belongs to the namespace of the thread that opens it.
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("socket(AF_PACKET): %w", err)
		}
		// A burst of attack frames must not overflow the queue: a lost
		// frame would be a leak the test could not see.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			unix.Close(fd)
			return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind to %s: %w", link, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("capturing on %s in %s: %v", link, ns.Name, err)
	}
	c := &capture{fd: fd, name: ns.Name + "/" + link, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run(ifindex)
	t.Cleanup(func() {
		close(c.stop)
		<-c.done
		unix.Close(c.fd)
	})
	return c
}

func (c *capture) run(ifindex int) {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		// Frames queued between socket() and bind() may come from lo.
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Ifindex != ifindex {
			continue
		}
		c.mu.Lock()
		c.frames = append(c.frames, append([]byte(nil), buf[:min(n, len(buf))]...))
		c.mu.Unlock()
	}
}

// containing returns the captured frames that contain marker.
func (c *capture) containing(t *testing.T, marker []byte) [][]byte {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		t.Fatalf("capture on %s failed: %v", c.name, c.err)
	}
	var out [][]byte
	for _, f := range c.frames {
		if bytes.Contains(f, marker) {
			out = append(out, f)
		}
	}
	return out
}

// waitFor waits until a frame containing marker has been captured.
func (c *capture) waitFor(t *testing.T, marker []byte, timeout time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; {
		if len(c.containing(t, marker)) > 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// count returns how many frames have been captured.
func (c *capture) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

// inNetns runs fn on an OS thread that has entered the named namespace.
// The thread goes back to the test's namespace afterwards; if it cannot,
// it stays locked and dies with its goroutine rather than run other
// goroutines in the wrong namespace.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(home)
		target, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back from %s: %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
