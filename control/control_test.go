package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/engine"
)

// fakeEngine answers like the switch would, from fixed data.
type fakeEngine struct {
	stats    engine.Stats
	macs     []engine.MACEntry
	bindings []engine.Binding
	err      error

	mu        sync.Mutex
	attachErr error
	attached  []attachCall
	frames    [][]byte // written to a monitor's fd, which is then closed
}

type attachCall struct {
	mirror bool
	name   string
}

// The socket orders a test's writes before the server's reads, but the
// race detector cannot see that: the fields are read under mu.
func (f *fakeEngine) Stats() (engine.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats, f.err
}

func (f *fakeEngine) MACs() ([]engine.MACEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.macs, f.err
}

func (f *fakeEngine) Bindings() ([]engine.Binding, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bindings, f.err
}

func (f *fakeEngine) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}
func (f *fakeEngine) AttachMonitor(fd int, mirror bool, name string) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.attachErr != nil {
		return 0, f.attachErr
	}
	f.attached = append(f.attached, attachCall{mirror, name})
	go func() {
		for _, fr := range f.frames {
			for {
				_, err := unix.Write(fd, fr)
				if err == unix.EAGAIN { // the fd is non-blocking, as the engine wants it
					time.Sleep(time.Millisecond)
					continue
				}
				break
			}
		}
		unix.Close(fd)
	}()
	return 99, nil
}

func (f *fakeEngine) calls() []attachCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]attachCall(nil), f.attached...)
}

func sampleStats() engine.Stats {
	return engine.Stats{
		Ports: []engine.PortStats{
			{ID: 0, Kind: "tap", Name: "tap0", PID: -1, UID: -1, RxFrames: 10, RxBytes: 1000, TxFrames: 20, TxBytes: 2000, MACs: 1,
				Drops: []engine.DropCount{{Reason: "tap-proto-denied", Count: 2}}},
			{ID: 1, Kind: "seqpacket", Name: "pid 100 uid 1000", PID: 100, UID: 1000, RxFrames: 5, RxBytes: 500, TxFrames: 7, TxBytes: 700, MACs: 2,
				Drops: []engine.DropCount{{Reason: "tx-queue-full", Count: 3}, {Reason: "ipv4-src-outside", Count: 1}}, Queued: 4, Unlearned: 6},
			{ID: 2, Kind: "dgram", Name: "/run/vm.sock", PID: -1, UID: -1, RxFrames: 1, RxBytes: 60, TxFrames: 2, TxBytes: 120},
			{ID: 3, Kind: "monitor", Name: "pid 7 uid 0 all", PID: 7, UID: 0, TxFrames: 1000, TxBytes: 100000,
				Drops: []engine.DropCount{{Reason: "tx-queue-full", Count: 50}}},
		},
		Departed: engine.PortStats{Kind: "departed", PID: -1, UID: -1, RxFrames: 100, RxBytes: 10000, TxFrames: 200, TxBytes: 20000,
			Drops: []engine.DropCount{{Reason: "tx-queue-full", Count: 10}}},
		MACs: 3, Clients: 2, Accepted: 9, MACMoves: 2, PoolFree: 90, PoolCap: 128,
	}
}

func TestSummarize(t *testing.T) {
	got := Summarize(sampleStats())
	want := Stats{
		Clients: 2, ClientsByKind: map[string]int{"seqpacket": 1, "stream": 0, "dgram": 1, "vhost-user": 0}, Monitors: 1, Accepted: 9,
		MACs: 3, MACMoves: 2, Buffers: 128, BuffersFree: 90, Queued: 4,
		Traffic: Sides{
			TAP:     Traffic{RxFrames: 10, RxBytes: 1000, TxFrames: 20, TxBytes: 2000},
			Clients: Traffic{RxFrames: 106, RxBytes: 10560, TxFrames: 209, TxBytes: 20820},
		},
		// The monitor's 50 queue drops are its own, not the network's.
		Drops:     map[string]uint64{"tap-proto-denied": 2, "tx-queue-full": 13, "ipv4-src-outside": 1},
		Unlearned: 6,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Summarize:\n got %+v\nwant %+v", got, want)
	}
}

func TestPortFrom(t *testing.T) {
	p := PortFrom(sampleStats().Ports[1])
	want := Port{ID: 1, Kind: "seqpacket", Name: "pid 100 uid 1000", PID: 100, UID: 1000, MACs: 2, RxFrames: 5, RxBytes: 500,
		TxFrames: 7, TxBytes: 700, Drops: map[string]uint64{"tx-queue-full": 3, "ipv4-src-outside": 1}, Unlearned: 6, Queued: 4}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("PortFrom:\n got %+v\nwant %+v", p, want)
	}
	b, _ := json.Marshal(PortFrom(engine.PortStats{PID: -1, UID: -1}))
	// Stable names, and drops always an object so consumers need no null check.
	const wantJSON = `{"id":0,"kind":"","name":"","pid":-1,"uid":-1,"macs":0,"rx_frames":0,"rx_bytes":0,"tx_frames":0,"tx_bytes":0,"drops":{},"unlearned":0,"queued":0}`
	if string(b) != wantJSON {
		t.Fatalf("JSON field names changed:\n got %s\nwant %s", b, wantJSON)
	}
}

func TestMACsFrom(t *testing.T) {
	entries := []engine.MACEntry{
		{MAC: [6]byte{2, 0, 0, 0, 0, 5}, Port: 1, PortName: "pid 100 uid 1000", Kind: "seqpacket", Age: 12*time.Second + 345678*time.Microsecond},
		{MAC: [6]byte{0xe2, 0x8a, 0xb, 0x3d, 0x17, 0x6e}, Port: 0, PortName: "tap0", Kind: "tap"},
		{MAC: [6]byte{2, 0, 0, 0, 0, 9}, Port: 42, Kind: ""},
	}
	got := MACsFrom(entries, sampleStats().Ports)
	want := []MAC{
		{MAC: "02:00:00:00:00:05", Port: 1, Kind: "seqpacket", Name: "pid 100 uid 1000", PID: 100, AgeSecs: 12.346},
		{MAC: "e2:8a:0b:3d:17:6e", Port: 0, Kind: "tap", Name: "tap0", PID: -1},
		{MAC: "02:00:00:00:00:09", Port: 42, PID: -1, PortGone: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("MACsFrom:\n got %+v\nwant %+v", got, want)
	}
}

func TestEncodeListSplitsLongListings(t *testing.T) {
	items := make([]MAC, 20000)
	for i := range items {
		items[i] = MAC{MAC: fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16, byte(i>>8), byte(i)), Port: uint32(i), Kind: "seqpacket", Name: "pid 1 uid 1", PID: 1}
	}
	msgs, err := encodeList(items, func(r *Reply, c []MAC) { r.MACs = c })
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 2 {
		t.Fatalf("20000 MACs went into %d message(s); want them split", len(msgs))
	}
	var back []MAC
	for i, m := range msgs {
		if len(m) > maxReplyBytes+1024 {
			t.Errorf("message %d is %d bytes, over the %d bound", i, len(m), maxReplyBytes)
		}
		var r Reply
		if err := json.Unmarshal(m, &r); err != nil {
			t.Fatal(err)
		}
		if r.V != Version || !r.OK || r.More != (i < len(msgs)-1) {
			t.Fatalf("message %d of %d: v=%d ok=%v more=%v", i, len(msgs), r.V, r.OK, r.More)
		}
		back = append(back, r.MACs...)
	}
	if !reflect.DeepEqual(back, items) {
		t.Fatal("the chunks do not add up to the list")
	}
	msgs, err = encodeList([]MAC(nil), func(r *Reply, c []MAC) { r.MACs = c })
	if err != nil || len(msgs) != 1 || string(msgs[0]) != `{"v":1,"ok":true}` {
		t.Fatalf("empty list: %q %v", msgs, err)
	}
}

func TestAllowed(t *testing.T) {
	const gid = 4242
	for _, c := range []struct {
		name string
		c    cred
		want bool
	}{
		{"root", cred{uid: 0, known: true, groups: []uint32{0}}, true},
		{"primary group", cred{uid: 1000, known: true, groups: []uint32{gid}}, true},
		{"supplementary group", cred{uid: 1000, known: true, groups: []uint32{1000, 27, gid}}, true},
		{"not a member", cred{uid: 1000, known: true, groups: []uint32{1000, 27}}, false},
		{"no groups", cred{uid: 65534, known: true}, false},
		{"platform cannot tell", cred{uid: -1}, true},
	} {
		if got := allowed(c.c, gid); got != c.want {
			t.Errorf("%s: allowed = %v, want %v", c.name, got, c.want)
		}
	}
}

// serve starts a server for fe on a fresh socket and returns its path.
func serve(t *testing.T, fe Engine, gid int) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "vknet.ctl")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(ln, ServerConfig{Engine: fe, GID: gid, Group: "testgroup"})
	t.Cleanup(func() { s.Close() })
	return path
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientServerListings(t *testing.T) {
	fe := &fakeEngine{stats: sampleStats(),
		macs:     []engine.MACEntry{{MAC: [6]byte{2, 0, 0, 0, 0, 5}, Port: 1, PortName: "pid 100 uid 1000", Kind: "seqpacket", Age: 3 * time.Second}},
		bindings: []engine.Binding{{IP: netip.MustParseAddr("198.18.0.5"), MAC: [6]byte{2, 0, 0, 0, 0, 5}, Port: 1, Source: "range", ExpiresIn: 299999999 * time.Microsecond}}}
	c := dial(t, serve(t, fe, os.Getgid()))

	ports, err := c.Ports()
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 4 || !reflect.DeepEqual(ports[1], PortFrom(fe.stats.Ports[1])) {
		t.Fatalf("ports: %+v", ports)
	}
	// Several requests on one connection.
	macs, err := c.MACs()
	if err != nil || len(macs) != 1 || macs[0].MAC != "02:00:00:00:00:05" || macs[0].PID != 100 || macs[0].AgeSecs != 3 {
		t.Fatalf("macs: %+v %v", macs, err)
	}
	bs, err := c.Bindings()
	if err != nil || !reflect.DeepEqual(bs, []Binding{{IP: "198.18.0.5", MAC: "02:00:00:00:00:05", Port: 1, Source: "range", ExpiresSecs: 300}}) {
		t.Fatalf("bindings: %+v %v", bs, err)
	}
	st, err := c.Stats()
	if err != nil || !reflect.DeepEqual(st, Summarize(fe.stats)) {
		t.Fatalf("stats: %+v %v", st, err)
	}
}

func TestClientServerLongListing(t *testing.T) {
	fe := &fakeEngine{}
	for i := 0; i < 16384; i++ {
		fe.macs = append(fe.macs, engine.MACEntry{MAC: [6]byte{2, 0, 0, 0, byte(i >> 8), byte(i)}, Port: uint32(i % 1000), Kind: "seqpacket", PortName: "pid 12345 uid 12345"})
	}
	c := dial(t, serve(t, fe, os.Getgid()))
	macs, err := c.MACs()
	if err != nil {
		t.Fatal(err)
	}
	if len(macs) != len(fe.macs) || macs[16383].MAC != "02:00:00:00:3f:ff" {
		t.Fatalf("got %d MACs, want %d in order", len(macs), len(fe.macs))
	}
}

func TestServerErrors(t *testing.T) {
	fe := &fakeEngine{}
	path := serve(t, fe, os.Getgid())

	c := dial(t, path)
	err := c.do(Request{Cmd: "frobnicate"}, func(*Reply) {})
	var de *DaemonError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), `unknown command "frobnicate"`) || !strings.Contains(err.Error(), path) {
		t.Fatalf("unknown command: %v", err)
	}

	fe.setErr(engine.ErrStopped)
	c = dial(t, path)
	if _, err := c.Stats(); !errors.As(err, &de) || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("stopped engine: %v", err)
	}

	// Another version: the raw exchange, as an old or new client would see it.
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != `{"v":1,"ok":true,"hello":"vknetd"}` {
		t.Fatalf("hello: %q %v", buf[:n], err)
	}
	conn.Write([]byte(`{"v":2,"cmd":"ports"}`))
	n, _ = conn.Read(buf)
	var r Reply
	if err := json.Unmarshal(buf[:n], &r); err != nil || r.OK || !strings.Contains(r.Error, "version 2") || !strings.Contains(r.Error, "speaks 1") {
		t.Fatalf("version mismatch reply: %q", buf[:n])
	}
	if n, err := conn.Read(buf); err != io.EOF {
		t.Fatalf("after a refused request the server should close; read %d %v", n, err)
	}
}

func TestDialErrorsNameThePathAndFix(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.ctl")
	_, err := Dial(missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "is vknetd running") {
		t.Fatalf("missing socket: %v", err)
	}
	// A SEQPACKET socket that is not a control socket (the clients' -p
	// socket): it says nothing first, and Dial must send nothing.
	path := filepath.Join(dir, "vknet")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := c.Read(buf)
		got <- n
	}()
	defer func(d time.Duration) { helloTimeout = d }(helloTimeout)
	helloTimeout = 200 * time.Millisecond
	_, err = Dial(path)
	if err == nil || !strings.Contains(err.Error(), "not vknetd's control socket") || !strings.Contains(err.Error(), path) {
		t.Fatalf("clients' socket: %v", err)
	}
	if n := <-got; n != 0 {
		t.Fatalf("Dial sent %d bytes to a socket that never said hello; want none", n)
	}
}

func TestMonitorHandsTheConnectionToTheEngine(t *testing.T) {
	frames := [][]byte{make([]byte, 60), make([]byte, 1514), make([]byte, 9018)}
	for i, f := range frames {
		copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, byte(i), 0x88, 0xb5})
	}
	fe := &fakeEngine{frames: frames}
	c := dial(t, serve(t, fe, os.Getgid()))
	conn, err := c.Monitor(true)
	if err != nil {
		t.Fatal(err)
	}
	var lines strings.Builder
	capture, err := NewCapture(&lines, "", "-w")
	if err != nil {
		t.Fatal(err)
	}
	n, err := Watch(conn, capture, 0)
	capture.Close()
	if n != 3 || err != io.EOF {
		t.Fatalf("Watch: %d frames, %v; want 3 and EOF", n, err)
	}
	if got := strings.Count(lines.String(), "\n"); got != 3 || !strings.Contains(lines.String(), "02:00:00:00:00:02 > ff:ff:ff:ff:ff:ff") {
		t.Fatalf("lines:\n%s", lines.String())
	}
	calls := fe.calls()
	if len(calls) != 1 || !calls[0].mirror || !strings.Contains(calls[0].name, fmt.Sprintf("pid %d uid %d all", os.Getpid(), os.Getuid())) {
		t.Fatalf("AttachMonitor calls: %+v", calls)
	}
}

func TestMonitorRefusedByEngine(t *testing.T) {
	fe := &fakeEngine{attachErr: errors.New("too many monitors (16)")}
	c := dial(t, serve(t, fe, os.Getgid()))
	conn, err := c.Monitor(false)
	if err != nil {
		t.Fatal(err)
	}
	capture, _ := NewCapture(io.Discard, "", "-w")
	if n, err := Watch(conn, capture, 0); n != 0 || err != io.EOF {
		t.Fatalf("Watch on a refused monitor: %d %v; want 0 frames and EOF", n, err)
	}
}

func TestServerCloseEndsIdleConnections(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vknet.ctl")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(ln, ServerConfig{Engine: &fakeEngine{}, GID: os.Getgid()})
	c, err := Dial(path) // connected, never sends a request
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited on an idle connection")
	}
	if _, err := c.Ports(); err == nil {
		t.Fatal("a closed server still answered")
	}
}

// FuzzRequest: whatever a client sends, the server's reading of it does
// not panic, accepts only the version it speaks, and every accepted
// listing is answered with messages that decode as replies of that
// version and fit the client's receive buffer.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{`{"v":1,"cmd":"ports"}`, `{"v":1,"cmd":"macs"}`, `{"v":1,"cmd":"stats"}`,
		`{"v":1,"cmd":"bindings"}`, `{"v":1,"cmd":"monitor","all":true}`, `{"v":2,"cmd":"ports"}`,
		`{"v":1,"cmd":"reboot"}`, `{"v":1}`, `null`, `[]`, `{"v":1e400}`, ``} {
		f.Add([]byte(s))
	}
	srv := &Server{cfg: ServerConfig{Engine: &fakeEngine{stats: sampleStats()}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseRequest(b)
		if err != nil {
			return
		}
		if req.V != Version {
			t.Fatalf("accepted version %d", req.V)
		}
		if req.Cmd == CmdMonitor {
			return // hands the connection over; tested with a real socket
		}
		msgs, err := srv.answer(req)
		if err != nil {
			return // an unknown command, answered with an error message
		}
		for _, m := range msgs {
			var r Reply
			if err := json.Unmarshal(m, &r); err != nil || r.V != Version || !r.OK {
				t.Fatalf("reply %q: %v", m, err)
			}
			if len(m) > maxReadBytes {
				t.Fatalf("reply of %d bytes", len(m))
			}
		}
	})
}
