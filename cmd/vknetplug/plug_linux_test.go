package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/internal/hang"
	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/vhostuser"
)

// fakeVhostDaemon listens where a daemon's --vhost-user socket would be
// and sets up a device for each guest that connects, offering offloads or
// not; it goes no further than the guest's Start.
type fakeVhostDaemon struct {
	path    string
	mu      sync.Mutex
	devices []*vhostuser.Device
}

func newFakeVhostDaemon(t *testing.T, offloads bool) *fakeVhostDaemon {
	f := &fakeVhostDaemon{path: filepath.Join(testbed.ShortTempDir(t), "vhost")}
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(ln, &unix.SockaddrUnix{Name: f.path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 4); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Shutdown(ln, unix.SHUT_RDWR) // ends Accept
		unix.Close(ln)
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, d := range f.devices {
			d.Close()
		}
	})
	go func() {
		for {
			fd, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
			if err != nil {
				return
			}
			d, err := vhostuser.NewDevice(fd, vhostuser.Config{Offloads: offloads})
			if err != nil {
				unix.Close(fd)
				return
			}
			for !d.Ready() {
				pfd := []unix.PollFd{{Fd: int32(d.SocketFD()), Events: unix.POLLIN}}
				if n, _ := unix.Poll(pfd, 2000); n <= 0 {
					break
				}
				if _, err := d.HandleSocket(); err != nil {
					break
				}
			}
			f.mu.Lock() // after the device's last use here: the test reads it next
			f.devices = append(f.devices, d)
			f.mu.Unlock()
		}
	}()
	return f
}

// TestPlugVhostOffloads runs plug in a namespace of its own against a
// fake daemon: with a switch offering offloads the guest takes them all
// and the TAP carries headers; without, neither does, as before.
func TestPlugVhostOffloads(t *testing.T) {
	defer hang.Guard(t, hang.Switch)()
	for _, offloads := range []bool{true, false} {
		f := newFakeVhostDaemon(t, offloads)
		ns := testbed.NewNetns(t)
		o, err := parseArgs([]string{"-v", "--vhost-user", f.path, "-t", "vkoff0", "198.18.0.2/16"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		outR, outW := io.Pipe()
		var stderr bytes.Buffer
		sigs := make(chan os.Signal, 1)
		perr := make(chan error, 1)
		go func() {
			perr <- ns.Do(func() error { return plug(o, outW, &stderr, sigs) })
			outW.Close()
		}()
		line, err := bufio.NewReader(outR).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "vkoff0" {
			sigs <- syscall.SIGTERM
			t.Fatalf("offloads %v: plug printed %q (%v), want the TAP's name; its error: %v", offloads, line, err, <-perr)
		}
		go io.Copy(io.Discard, outR)
		show, _ := ns.LinkShow("vkoff0")
		sigs <- syscall.SIGTERM
		select {
		case err := <-perr:
			if err != nil {
				t.Fatalf("offloads %v: plug: %v", offloads, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("offloads %v: plug did not stop on SIGTERM", offloads)
		}
		var n int
		var got gso.Offloads
		for deadline := time.Now().Add(5 * time.Second); n == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			f.mu.Lock()
			if n = len(f.devices); n > 0 {
				got = f.devices[0].Offloads()
			}
			f.mu.Unlock()
		}
		want := gso.Offloads(0)
		if offloads {
			want = gso.OffloadCsum | gso.OffloadTSO4 | gso.OffloadTSO6
		}
		if n != 1 || got != want {
			t.Fatalf("offloads %v: %d connections, the guest takes %v; want 1, %v", offloads, n, got, want)
		}
		if !strings.Contains(stderr.String(), "offloads "+map[bool]string{true: "true", false: "false"}[offloads]) {
			t.Fatalf("offloads %v: plug -v said:\n%s", offloads, stderr.String())
		}
		t.Logf("offloads %v: %s", offloads, strings.TrimSpace(stderr.String()))
		if show == "" {
			t.Fatalf("offloads %v: no TAP vkoff0 in the namespace while plugged", offloads)
		}
	}
}
