package vhostguest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDPDKBackend checks this guest against a back-end we did not write:
// DPDK testpmd's vhost PMD (io forwarding, so what we send on TX comes
// back on RX). It needs root, dpdk-testpmd and 2 MiB hugepages mounted on
// /dev/hugepages, so it runs only when VHOSTUSER_DPDK=1; testpmd
// busy-polls a core and is killed by timeout.
func TestDPDKBackend(t *testing.T) {
	if os.Getenv("VHOSTUSER_DPDK") != "1" {
		t.Skip("set VHOSTUSER_DPDK=1 (root, dpdk-testpmd, hugepages on /dev/hugepages)")
	}
	path := filepath.Join(t.TempDir(), "vhost.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "timeout", "-s", "INT", "-k", "5", "15", "dpdk-testpmd",
		"-l", "0,1", "--main-lcore", "1", "--no-pci", "--single-file-segments", "--file-prefix", "vhostguest-test",
		"--vdev", "net_vhost0,iface="+path+",queues=1",
		"--", "--forward-mode=io", "--stats-period", "5", "--nb-cores=1")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("testpmd:\n%s", out.String())
		}
	}()

	var sock int
	for i := 0; ; i++ {
		var err error
		if sock, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			t.Fatal(err)
		}
		if err = unix.Connect(sock, &unix.SockaddrUnix{Name: path}); err == nil {
			break
		}
		unix.Close(sock)
		if i == 100 {
			t.Fatalf("connecting to testpmd: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	g, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.Attach(sock)
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("features %#x, header %d", g.Features(), g.HeaderLen())

	const n = 32
	sent, received := 0, 0
	want := make([][]byte, n)
	for i := range want {
		want[i] = make([]byte, 64+i*40)
		for j := range want[i] {
			want[i][j] = byte(i + j)
		}
		copy(want[i], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1})
	}
	got := make([][]byte, n)
	for i := range got {
		got[i] = make([]byte, 2048)
	}
	sizes := make([]int, n)
	g.PostRX(256)
	deadline := time.Now().Add(5 * time.Second)
	for rounds := 0; rounds < 100 && time.Now().Before(deadline); {
		if g.TXInFlight() == 0 {
			sent += g.Send(want, nil)
			rounds++
		}
		k := g.Receive(got, sizes, nil)
		for i := 0; i < k; i++ {
			w := want[(received+i)%n]
			if !bytes.Equal(got[i][:sizes[i]], w) {
				t.Fatalf("frame %d came back as %d bytes, want %d", received+i, sizes[i], len(w))
			}
		}
		received += k
		g.PostRX(k)
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	for k := g.Receive(got, sizes, nil); k > 0; k = g.Receive(got, sizes, nil) {
		received += k
		g.PostRX(k)
	}
	t.Logf("sent %d, received %d", sent, received)
	if received == 0 || received != sent {
		t.Fatalf("sent %d, received %d", sent, received)
	}
	if _, err := g.Stop(); err != nil {
		t.Fatal(err)
	}
}
