package tap

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// A SEQPACKET socketpair keeps message boundaries like a TAP fd: one frame
// per read and per write.
func framePair(t *testing.T) (ours, theirs int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestReadFramesDrainsUntilEmpty(t *testing.T) {
	ours, theirs := framePair(t)
	for i := 0; i < 3; i++ {
		if _, err := unix.Write(theirs, bytes.Repeat([]byte{byte(i)}, 60+i)); err != nil {
			t.Fatal(err)
		}
	}
	bufs := [][]byte{make([]byte, 2048), make([]byte, 2048), make([]byte, 2048), make([]byte, 2048)}
	sizes := make([]int, len(bufs))
	n, err := ReadFrames(ours, bufs, sizes)
	if err != nil || n != 3 {
		t.Fatalf("ReadFrames = %d, %v; want the 3 waiting frames", n, err)
	}
	for i := 0; i < n; i++ {
		if sizes[i] != 60+i || bufs[i][0] != byte(i) {
			t.Fatalf("frame %d: %d bytes starting %d", i, sizes[i], bufs[i][0])
		}
	}
	// A batch smaller than what waits takes only what fits.
	unix.Write(theirs, []byte("a"))
	unix.Write(theirs, []byte("b"))
	if n, err := ReadFrames(ours, bufs[:1], sizes); n != 1 || err != nil {
		t.Fatalf("ReadFrames into one buffer = %d, %v", n, err)
	}
}

func TestWriteFramesStopsWhenPushedBack(t *testing.T) {
	ours, theirs := framePair(t)
	unix.SetsockoptInt(ours, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	frame := make([]byte, 1500)
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = frame
	}
	refused := make([]bool, len(frames))
	done, err := WriteFrames(ours, frames, refused)
	if err != nil || done == 0 || done == len(frames) {
		t.Fatalf("WriteFrames into a small buffer = %d, %v; want some written, then a stop", done, err)
	}
	// Nothing more fits: EAGAIN with nothing done.
	if n, err := WriteFrames(ours, frames[done:], refused); n != 0 || err != unix.EAGAIN {
		t.Fatalf("WriteFrames on a full socket = %d, %v; want 0, EAGAIN", n, err)
	}
	got := 0
	buf := make([]byte, 2048)
	for {
		if _, err := unix.Read(theirs, buf); err != nil {
			break
		}
		got++
	}
	if got != done {
		t.Fatalf("%d frames arrived, WriteFrames said %d", got, done)
	}
}

// With virtio_net_hdrs each frame goes out behind its own in one writev,
// and writing allocates nothing.
func TestWriteVnetFramesPrefixesTheHeader(t *testing.T) {
	ours, theirs := framePair(t)
	hdrs := [][]byte{{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {11, 12, 13, 14, 15, 16, 17, 18, 19, 20}}
	frames := [][]byte{bytes.Repeat([]byte{0xaa}, 60), bytes.Repeat([]byte{0xbb}, 100)}
	refused := make([]bool, len(frames))
	if n, err := WriteVnetFrames(ours, hdrs, frames, refused); n != 2 || err != nil {
		t.Fatalf("WriteVnetFrames = %d, %v", n, err)
	}
	buf := make([]byte, 2048)
	for i, f := range frames {
		n, err := unix.Read(theirs, buf)
		if err != nil || !bytes.Equal(buf[:n], append(append([]byte(nil), hdrs[i]...), f...)) {
			t.Fatalf("message %d: %d bytes, err %v: not its header then the frame", i, n, err)
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		WriteVnetFrames(ours, hdrs, frames, refused)
		unix.Read(theirs, buf)
		unix.Read(theirs, buf)
	})
	if allocs != 0 {
		t.Fatalf("%.0f allocations per write of two frames", allocs)
	}
}
