//go:build linux

package mmsg

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSendRecvBatchOverSeqpacket(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	out := NewBatch(4)
	msgs := [][]byte{[]byte("one"), bytes.Repeat([]byte{7}, 1500), {}, []byte("four")}
	for i, m := range msgs {
		out.Set(i, m)
	}
	n, err := Send(fds[0], out, len(msgs), 0)
	if err != nil || n != 4 {
		t.Fatalf("Send = %d, %v", n, err)
	}
	in := NewBatch(8)
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 100)
		in.Set(i, bufs[i])
	}
	n, err = Recv(fds[1], in, 8, unix.MSG_DONTWAIT)
	if err != nil || n != 4 {
		t.Fatalf("Recv = %d, %v", n, err)
	}
	if in.Len(0) != 3 || string(bufs[0][:3]) != "one" || in.Truncated(0) {
		t.Fatalf("message 0: len %d %q", in.Len(0), bufs[0][:3])
	}
	if !in.Truncated(1) || in.Len(1) != 100 {
		t.Fatalf("message 1 (1500 bytes into 100): truncated=%v len=%d", in.Truncated(1), in.Len(1))
	}
	if in.Len(2) != 0 || in.Len(3) != 4 {
		t.Fatalf("lengths %d %d", in.Len(2), in.Len(3))
	}
	if _, err := Recv(fds[1], in, 8, unix.MSG_DONTWAIT); err != unix.EAGAIN {
		t.Fatalf("empty socket: %v, want EAGAIN", err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		Send(fds[0], out, 4, 0)
		Recv(fds[1], in, 8, unix.MSG_DONTWAIT)
	})
	if allocs != 0 {
		t.Fatalf("a send/recv round allocates %.1f", allocs)
	}
}

func TestNamesOnUnboundDatagrams(t *testing.T) {
	dir := t.TempDir()
	srvPath, cliPath := dir+"/srv", dir+"/cli"
	srv, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	cli, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	defer unix.Close(srv)
	defer unix.Close(cli)
	if err := unix.Bind(srv, &unix.SockaddrUnix{Name: srvPath}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(cli, &unix.SockaddrUnix{Name: cliPath}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendto(cli, []byte("hello"), 0, &unix.SockaddrUnix{Name: srvPath}); err != nil {
		t.Fatal(err)
	}
	in := NewBatch(2)
	var names [2]unix.RawSockaddrUnix
	buf := make([]byte, 64)
	in.Set(0, buf)
	in.SetName(0, &names[0])
	n, err := Recv(srv, in, 1, unix.MSG_DONTWAIT)
	if err != nil || n != 1 {
		t.Fatalf("Recv = %d, %v", n, err)
	}
	got := names[0].Path[:in.NameLen(0)-2]
	var p []byte
	for _, c := range got {
		if c == 0 {
			break
		}
		p = append(p, byte(c))
	}
	if string(p) != cliPath {
		t.Fatalf("sender %q, want %q", p, cliPath)
	}
	// Reply to the recorded name.
	out := NewBatch(1)
	out.Set(0, []byte("back"))
	out.SetName(0, &names[0])
	out.SetNameLen(0, in.NameLen(0))
	if n, err := Send(srv, out, 1, unix.MSG_DONTWAIT); err != nil || n != 1 {
		t.Fatalf("Send to name = %d, %v", n, err)
	}
	rb := make([]byte, 16)
	if n, _, err := unix.Recvfrom(cli, rb, unix.MSG_DONTWAIT); err != nil || string(rb[:n]) != "back" {
		t.Fatalf("client got %q, %v", rb[:n], err)
	}
}
