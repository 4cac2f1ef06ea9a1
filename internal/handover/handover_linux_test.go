package handover

import (
	"bytes"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSendManyFds passes more descriptors than one message may carry
// (SCM_MAX_FD) and a payload of several chunks, and checks each arrives
// as the same open file, in order.
func TestSendManyFds(t *testing.T) {
	a, bfd, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := NewConn(bfd)
	defer b.Close()

	const n = 2*MaxFdsPerMessage + 7
	var files []*os.File
	var fds []int
	for i := 0; i < n; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		files = append(files, w)
		fds = append(fds, int(r.Fd()))
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 3*ChunkBytes/16+5)
	errc := make(chan error, 1)
	go func() { errc <- a.Send(KindState, payload, fds) }()
	kind, got, gotFds, err := b.Recv(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	defer CloseFds(gotFds)
	if kind != KindState || !bytes.Equal(got, payload) || len(gotFds) != n {
		t.Fatalf("got kind %q, %d bytes (want %d), %d fds (want %d)", kind, len(got), len(payload), len(gotFds), n)
	}
	for i, fd := range gotFds {
		files[i].Write([]byte{byte(i)})
		var buf [1]byte
		if m, err := unix.Read(fd, buf[:]); err != nil || m != 1 || buf[0] != byte(i) {
			t.Fatalf("fd %d is not the pipe sent as %d (%v)", fd, i, err)
		}
		if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
			t.Fatalf("received fd %d is not close-on-exec", fd)
		}
	}
}

func TestRecvTimesOutAndSeesClose(t *testing.T) {
	a, bfd, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	b := NewConn(bfd)
	defer b.Close()
	if _, _, _, err := b.Recv(50 * time.Millisecond); err != ErrTimeout {
		t.Fatalf("Recv with nothing sent: %v, want ErrTimeout", err)
	}
	a.Close()
	if _, _, _, err := b.Recv(time.Second); err == nil {
		t.Fatal("Recv after the peer closed: no error")
	}
}
