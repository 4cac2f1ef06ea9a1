//go:build linux

package mmsg

import (
	"bytes"
	"os"
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

func passcredPair(t *testing.T) (send, recv int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	if err := unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	return fds[0], fds[1]
}

func TestCredentialsPerMessage(t *testing.T) {
	send, recv := passcredPair(t)
	for _, m := range []string{"a", "bb"} {
		if err := unix.Sendmsg(send, []byte(m), nil, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	in := NewBatch(4).WithCredentials()
	buf := make([][]byte, 4)
	for round := 0; round < 2; round++ { // the second round reuses the control buffers
		for i := range buf {
			buf[i] = make([]byte, 16)
			in.Set(i, buf[i])
		}
		n, err := Recv(recv, in, 4, unix.MSG_DONTWAIT)
		if round == 1 {
			if err != unix.EAGAIN {
				t.Fatalf("nothing left, got %d, %v", n, err)
			}
			unix.Sendmsg(send, []byte("c"), nil, nil, 0)
			n, err = Recv(recv, in, 4, unix.MSG_DONTWAIT)
		}
		if err != nil || n < 1 {
			t.Fatalf("Recv = %d, %v", n, err)
		}
		for i := 0; i < n; i++ {
			pid, uid, ok := in.Credentials(i)
			if !ok || pid != int32(unix.Getpid()) || uid != uint32(unix.Getuid()) {
				t.Fatalf("round %d message %d: credentials %d %d %v, want pid %d uid %d", round, i, pid, uid, ok, unix.Getpid(), unix.Getuid())
			}
		}
	}
	plain := NewBatch(1)
	plain.Set(0, make([]byte, 16))
	unix.Sendmsg(send, []byte("d"), nil, nil, 0)
	if n, err := Recv(recv, plain, 1, unix.MSG_DONTWAIT); err != nil || n != 1 {
		t.Fatalf("Recv = %d, %v", n, err)
	}
	if _, _, ok := plain.Credentials(0); ok {
		t.Fatal("a batch without control buffers reported credentials")
	}
}

// A sender that attaches file descriptors cannot make the receiver hold
// them: the control buffer has room for the credentials only.
func TestCredentialsBatchInstallsNoPassedFds(t *testing.T) {
	send, recv := passcredPair(t)
	f, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(f)
	before := openFds(t)
	if err := unix.Sendmsg(send, []byte("x"), unix.UnixRights(f, f, f), nil, 0); err != nil {
		t.Fatal(err)
	}
	in := NewBatch(1).WithCredentials()
	in.Set(0, make([]byte, 16))
	if n, err := Recv(recv, in, 1, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC); err != nil || n != 1 {
		t.Fatalf("Recv = %d, %v", n, err)
	}
	if _, _, ok := in.Credentials(0); !ok {
		t.Fatal("no credentials")
	}
	if after := openFds(t); after != before {
		t.Fatalf("the receiver holds %d file descriptors after the message, %d before: passed fds were installed", after, before)
	}
}

func openFds(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
