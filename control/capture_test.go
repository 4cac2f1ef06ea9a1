package control

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/framefmt"
)

func testFrames() [][]byte {
	var out [][]byte
	for i, n := range []int{60, 342, 1514} {
		f := make([]byte, n)
		copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, byte(i + 1), 0x88, 0xb5})
		for j := 14; j < n; j++ {
			f[j] = byte(j)
		}
		out = append(out, f)
	}
	return out
}

func readPcap(t *testing.T, r io.Reader) (frames [][]byte, stamps []time.Time) {
	t.Helper()
	pr, err := pcapgo.NewReader(r)
	if err != nil {
		t.Fatalf("pcap header: %v", err)
	}
	if pr.LinkType() != layers.LinkTypeEthernet || pr.Snaplen() != Snaplen {
		t.Fatalf("pcap link type %v snaplen %d, want Ethernet and %d", pr.LinkType(), pr.Snaplen(), Snaplen)
	}
	for {
		data, ci, err := pr.ReadPacketData()
		if err == io.EOF {
			return frames, stamps
		}
		if err != nil {
			t.Fatalf("pcap record %d: %v", len(frames), err)
		}
		if ci.Length != len(data) {
			t.Fatalf("record %d: length %d, captured %d", len(frames), ci.Length, len(data))
		}
		frames = append(frames, data)
		stamps = append(stamps, ci.Timestamp)
	}
}

func TestCapturePcapAndLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.pcap")
	var lines bytes.Buffer
	c, err := NewCapture(&lines, path, "-w")
	if err != nil {
		t.Fatal(err)
	}
	// The header is on disk before the first frame, so a reader that opens
	// the file early sees an empty capture.
	if f, err := os.Open(path); err != nil {
		t.Fatal(err)
	} else {
		got, _ := readPcap(t, f)
		f.Close()
		if len(got) != 0 {
			t.Fatalf("%d frames before any was written", len(got))
		}
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	frames := testFrames()
	for i, f := range frames {
		if err := c.Frame(ts.Add(time.Duration(i)*time.Millisecond), f); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Mode().Perm() != 0o600 {
		t.Errorf("pcap file mode %v, want 0600 (it holds other people's traffic)", fi.Mode().Perm())
	}
	got, stamps := readPcap(t, f)
	if len(got) != len(frames) {
		t.Fatalf("pcap holds %d frames, want %d", len(got), len(frames))
	}
	for i := range frames {
		if !bytes.Equal(got[i], frames[i]) {
			t.Errorf("frame %d differs", i)
		}
		if want := ts.Add(time.Duration(i) * time.Millisecond); !stamps[i].Equal(want) {
			t.Errorf("frame %d stamped %v, want %v (nanoseconds kept)", i, stamps[i], want)
		}
	}
	var want []byte
	for i, fr := range frames {
		want = framefmt.Line(want, ts.Add(time.Duration(i)*time.Millisecond), fr)
		want = append(want, '\n')
	}
	if lines.String() != string(want) {
		t.Fatalf("lines:\n%s\nwant:\n%s", lines.String(), want)
	}
}

func TestCapturePcapToStdoutPrintsNoLines(t *testing.T) {
	var out bytes.Buffer
	c, err := NewCapture(&out, "-", "-w")
	if err != nil {
		t.Fatal(err)
	}
	frames := testFrames()
	for _, f := range frames {
		c.Frame(time.Now(), f)
	}
	c.Close()
	got, _ := readPcap(t, &out) // a line would have broken the pcap
	if len(got) != len(frames) {
		t.Fatalf("stdout pcap holds %d frames, want %d", len(got), len(frames))
	}
}

func TestCaptureTruncatesAtSnaplen(t *testing.T) {
	var out bytes.Buffer
	c, _ := NewCapture(&out, "-", "-w")
	big := make([]byte, 65535+18)
	c.Frame(time.Now(), big)
	c.Close()
	pr, err := pcapgo.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	data, ci, err := pr.ReadPacketData()
	if err != nil || len(data) != Snaplen || ci.Length != len(big) {
		t.Fatalf("captured %d of %d (%v); want %d of %d", len(data), ci.Length, err, Snaplen, len(big))
	}
}

func TestCaptureUnwritableFileNamesFlagAndPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "dir.pcap")
	_, err := NewCapture(nil, path, "-w")
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "-w") {
		t.Fatalf("got %v, want an error naming %s and -w", err, path)
	}
}

// socketpair returns a net.Conn and the raw fd of its SEQPACKET peer.
func socketpair(t *testing.T) (net.Conn, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "watch")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); unix.Close(fds[1]) })
	return conn, fds[1]
}

func TestWatchStopsAtCount(t *testing.T) {
	conn, peer := socketpair(t)
	for _, f := range testFrames() {
		unix.Write(peer, f)
	}
	var out bytes.Buffer
	c, _ := NewCapture(&out, "-", "-w")
	n, err := Watch(conn, c, 2)
	if n != 2 || err != nil {
		t.Fatalf("Watch(count 2): %d %v", n, err)
	}
	// Count reached means flushed: everything is readable without Close.
	got, _ := readPcap(t, bytes.NewReader(out.Bytes()))
	if len(got) != 2 {
		t.Fatalf("pcap after Watch returned holds %d frames, want 2", len(got))
	}
}

func TestWatchFlushesWhenTheStreamPauses(t *testing.T) {
	conn, peer := socketpair(t)
	r, w := io.Pipe()
	c, _ := NewCapture(w, "", "-w")
	done := make(chan struct{})
	go func() { Watch(conn, c, 0); close(done) }()
	unix.Write(peer, testFrames()[0])
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 512)
		n, _ := r.Read(buf)
		got <- string(buf[:n])
	}()
	select {
	case line := <-got:
		if !strings.Contains(line, "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff") {
			t.Fatalf("line %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a lone frame's line was still buffered 5s later")
	}
	conn.Close()
	<-done
}

func TestCloseOnSignalEndsWatch(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		conn, _ := socketpair(t)
		c, _ := NewCapture(io.Discard, "", "-w")
		stop := CloseOnSignal(conn)
		done := make(chan error, 1)
		go func() { _, err := Watch(conn, c, 0); done <- err }()
		if stop.Stopped() {
			t.Fatalf("%v: Stopped before any signal", sig)
		}
		syscall.Kill(os.Getpid(), sig)
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("%v: Watch on a closed connection returned nil", sig)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%v: Watch still running 5s after the signal", sig)
		}
		if !stop.Stopped() {
			t.Fatalf("%v: Watch ended but Stopped is false", sig)
		}
		stop.Release()
	}
}

func TestSignalStopWithoutSignal(t *testing.T) {
	conn, peer := socketpair(t)
	unix.Write(peer, testFrames()[0])
	c, _ := NewCapture(io.Discard, "", "-w")
	stop := CloseOnSignal(conn)
	if n, err := Watch(conn, c, 1); n != 1 || err != nil {
		t.Fatalf("Watch(count 1): %d %v", n, err)
	}
	stop.Release()
	if stop.Stopped() {
		t.Fatal("Stopped without a signal")
	}
	// The connection is the caller's again: Release must not close it.
	unix.Write(peer, testFrames()[0])
	if n, err := Watch(conn, c, 1); n != 1 || err != nil {
		t.Fatalf("Watch after Release: %d %v", n, err)
	}
}
