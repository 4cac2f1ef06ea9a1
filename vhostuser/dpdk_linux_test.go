package vhostuser

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDPDKGuest runs DPDK's testpmd as the front-end and guest (virtio-user
// over our socket, io forwarding, a first burst sent at start) against a
// device that echoes every TX frame back into the RX ring, so frames loop
// between the two for a few seconds. It needs root, dpdk-testpmd and 2 MiB
// hugepages mounted on /dev/hugepages, so it runs only when
// VHOSTUSER_DPDK=1; testpmd busy-polls a core and is killed by timeout.
func TestDPDKGuest(t *testing.T) {
	if os.Getenv("VHOSTUSER_DPDK") != "1" {
		t.Skip("set VHOSTUSER_DPDK=1 (root, dpdk-testpmd, hugepages on /dev/hugepages)")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "vhost.sock")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(lfd, 1)

	const seconds = 6
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "timeout", "-s", "INT", "-k", "5", strconv.Itoa(seconds+4), "dpdk-testpmd",
		"-l", "0,1", "--main-lcore", "1", "--no-pci", "--single-file-segments", "--file-prefix", "vhostuser-test",
		"--vdev", "net_virtio_user0,path="+path+",mac=02:00:00:00:00:01,queue_size=256",
		"--", "--forward-mode=io", "--tx-first", "--stats-period", "2", "--nb-cores=1")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Wait()
		t.Logf("testpmd:\n%s", out.String())
	}()

	pfd := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(pfd, 10000); n != 1 {
		t.Fatal("testpmd did not connect")
	}
	sock, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDevice(sock, Config{Note: func(s string) { t.Log(s) }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	got, sizes := bufs(32, 2048)
	var queue [][]byte // frames read from TX and not yet written to RX
	var echoed, dropped uint64
	deadline := time.Now().Add(seconds * time.Second)
	ready := false
	for time.Now().Before(deadline) {
		pfds := []unix.PollFd{{Fd: int32(d.SocketFD()), Events: unix.POLLIN}}
		for q := range 2 {
			if fd := d.KickFD(q); fd >= 0 {
				pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
			}
		}
		if _, err := unix.Poll(pfds, 100); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		if pfds[0].Revents != 0 {
			ch, err := d.HandleSocket()
			if err != nil {
				t.Fatalf("HandleSocket: %v", err)
			}
			if ch != 0 && d.Ready() && !ready {
				ready = true
				t.Logf("device ready, features %#x", d.features)
			}
		}
		d.DrainKick(TXQ)
		d.DrainKick(RXQ)
		for {
			n, more, err := d.ReadTX(got, sizes, nil)
			if err != nil {
				t.Fatalf("ReadTX: %v", err)
			}
			for i := range n {
				if len(queue) < 256 {
					queue = append(queue, append([]byte(nil), got[i][:sizes[i]]...))
				} else {
					dropped++
				}
			}
			if len(queue) > 0 {
				w, err := d.WriteRX(queue, nil)
				if err != nil {
					t.Fatalf("WriteRX: %v", err)
				}
				echoed += uint64(w)
				queue = queue[:copy(queue, queue[w:])]
			}
			if !more {
				break
			}
		}
	}
	st := d.Stats()
	t.Logf("echoed %d frames in %ds (%.0f frames/s), queue drops %d, stats %+v", echoed, seconds, float64(echoed)/seconds, dropped, st)
	if echoed == 0 {
		t.Fatal("no frame looped through testpmd")
	}
}
