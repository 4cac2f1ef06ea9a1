package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/mmsg"
)

// loadConfig is one measurement point.
type loadConfig struct {
	transport string // seqpacket, stream, dgram, dgram-connected or vde
	path      string // the switch's socket (vde: its control directory)
	direct    bool   // no switch: socketpairs of the transport's type
	size      int    // frame length in bytes, without FCS
	pairs     int
	batch     int
	warmup    time.Duration
	duration  time.Duration
	pid       int // the switch's process, for its CPU time; 0: none
}

func loadMain(args []string) error {
	var c loadConfig
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.StringVar(&c.transport, "transport", "seqpacket", "seqpacket, stream, dgram (sendto, as QEMU), dgram-connected (connect, as vfkit) or vde (VDE v3: -path is vde_switch's control directory)")
	fs.StringVar(&c.path, "path", "", "the switch's socket path")
	fs.BoolVar(&c.direct, "direct", false, "no switch: each pair is a socketpair of the transport's type (the transport's limit)")
	fs.IntVar(&c.size, "size", 64, "frame length in bytes (no FCS), at least 60")
	fs.IntVar(&c.pairs, "pairs", 2, "sender/receiver pairs")
	fs.IntVar(&c.batch, "batch", 32, "frames per sendmmsg (and per stream write)")
	fs.DurationVar(&c.warmup, "warmup", 500*time.Millisecond, "load before measuring")
	fs.DurationVar(&c.duration, "duration", 3*time.Second, "measuring time")
	fs.IntVar(&c.pid, "pid", 0, "the switch's pid: report its CPU time (cores) over the measuring time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.size < 60 || c.size > 65000 {
		return fmt.Errorf("-size %d: want 60..65000", c.size)
	}
	if !c.direct && c.path == "" {
		return errors.New("-path is required without -direct")
	}
	r, err := runLoad(c)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s size=%d: received %.0f frames/s (sent %.0f), switch CPU %.2f, generator CPU %.2f\n",
		c.transport, c.size, r.fps, r.sentFps, r.switchCPU, r.genCPU)
	fmt.Printf("%.0f,%.0f,%.3f,%.3f\n", r.fps, r.sentFps, r.switchCPU, r.genCPU)
	return nil
}

type loadResult struct {
	fps, sentFps      float64
	switchCPU, genCPU float64 // cores busy over the measuring time; -1: unknown
}

// endpoint is one client connection: fd carries frames; held keeps other
// descriptors (VDE's control connection) open as long as it lives.
type endpoint struct {
	fd     int
	held   []int
	stream bool
	mac    [6]byte
	// to is the switch's path, named on every datagram, for a client
	// that does not connect its socket (QEMU's -netdev dgram); "" otherwise.
	to string
}

func (e *endpoint) close() {
	unix.Close(e.fd)
	for _, fd := range e.held {
		unix.Close(fd)
	}
}

func runLoad(c loadConfig) (loadResult, error) {
	tmp, err := os.MkdirTemp("", "peerbench")
	if err != nil {
		return loadResult{}, err
	}
	defer os.RemoveAll(tmp)

	var senders, receivers []*endpoint
	defer func() {
		for _, e := range append(senders, receivers...) {
			e.close()
		}
	}()
	for i := 0; i < c.pairs; i++ {
		var tx, rx *endpoint
		if c.direct {
			tx, rx, err = socketpair(c.transport)
		} else {
			if tx, err = dial(c.transport, c.path, filepath.Join(tmp, fmt.Sprintf("t%d", i))); err == nil {
				rx, err = dial(c.transport, c.path, filepath.Join(tmp, fmt.Sprintf("r%d", i)))
			}
		}
		if err != nil {
			return loadResult{}, err
		}
		tx.mac = [6]byte{0x02, 0x70, 0x62, 0, byte(i), 0x0a}
		rx.mac = [6]byte{0x02, 0x70, 0x62, 0, byte(i), 0x0b}
		senders = append(senders, tx)
		receivers = append(receivers, rx)
	}
	for _, e := range append(append([]*endpoint{}, receivers...), senders...) {
		if err := unix.SetNonblock(e.fd, true); err != nil {
			return loadResult{}, err
		}
	}
	if !c.direct {
		// Every client introduces itself with a broadcast, so the switch
		// learns where each MAC lives before the load starts; then the
		// floods are drained.
		for i, e := range append(append([]*endpoint{}, receivers...), senders...) {
			hello := udpFrame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, e.mac, [4]byte{198, 18, 1, byte(10 + i)}, [4]byte{198, 19, 255, 255}, 60)
			if err := writeFrame(e, hello); err != nil {
				return loadResult{}, fmt.Errorf("hello: %w", err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		for _, e := range append(append([]*endpoint{}, receivers...), senders...) {
			drain(e)
		}
	}

	var stop atomic.Bool
	var sent, received atomic.Int64
	errs := make(chan error, 2*c.pairs)
	var wg sync.WaitGroup
	for i := range senders {
		frame := udpFrame(receivers[i].mac, senders[i].mac, [4]byte{198, 18, 1, byte(10 + i)}, [4]byte{198, 18, 1, byte(20 + i)}, c.size)
		wg.Add(2)
		go func(e *endpoint) {
			defer wg.Done()
			if err := receive(e, c, &stop, &received); err != nil {
				errs <- err
			}
		}(receivers[i])
		go func(e *endpoint) {
			defer wg.Done()
			if err := send(e, frame, c.batch, &stop, &sent); err != nil {
				errs <- err
			}
		}(senders[i])
	}

	time.Sleep(c.warmup)
	rx0, tx0, sw0, gen0, t0 := received.Load(), sent.Load(), procCPU(c.pid), selfCPU(), time.Now()
	time.Sleep(c.duration)
	rx1, tx1, sw1, gen1, t1 := received.Load(), sent.Load(), procCPU(c.pid), selfCPU(), time.Now()
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		return loadResult{}, err
	}
	secs := t1.Sub(t0).Seconds()
	r := loadResult{
		fps:       float64(rx1-rx0) / secs,
		sentFps:   float64(tx1-tx0) / secs,
		switchCPU: -1,
		genCPU:    (gen1 - gen0) / secs,
	}
	if sw0 >= 0 && sw1 >= 0 {
		r.switchCPU = (sw1 - sw0) / secs
	}
	return r, nil
}

// bufSize is what each client asks for on both directions: a busy VM's
// socket, large enough for a batch of 9000-byte frames.
const bufSize = 4 << 20

func setBuffers(fd int) {
	for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
		// The FORCE options need CAP_NET_ADMIN; others get what the limits allow.
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], bufSize) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], bufSize)
		}
	}
}

func sockType(transport string) (int, error) {
	switch transport {
	case "seqpacket":
		return unix.SOCK_SEQPACKET, nil
	case "stream":
		return unix.SOCK_STREAM, nil
	case "dgram", "dgram-connected", "vde":
		return unix.SOCK_DGRAM, nil
	}
	return 0, fmt.Errorf("unknown transport %q", transport)
}

func socketpair(transport string) (*endpoint, *endpoint, error) {
	typ, err := sockType(transport)
	if err != nil {
		return nil, nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	setBuffers(fds[0])
	setBuffers(fds[1])
	stream := typ == unix.SOCK_STREAM
	return &endpoint{fd: fds[0], stream: stream}, &endpoint{fd: fds[1], stream: stream}, nil
}

// dial connects one client: seqpacket and stream connect to path; dgram
// binds its own path (own) and sends each datagram to path without
// connecting, as QEMU's -netdev dgram does; dgram-connected binds and
// connects to path, as vfkit does (the switch then answers through its
// listener, naming the client on every datagram); vde speaks VDE's
// version 3 handshake to vde_switch.
func dial(transport, path, own string) (*endpoint, error) {
	if transport == "vde" {
		return dialVDE(path, own)
	}
	typ, err := sockType(transport)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	setBuffers(fd)
	if typ == unix.SOCK_DGRAM {
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: own}); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("bind %s: %w", own, err)
		}
	}
	if transport == "dgram" {
		if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
			unix.Close(fd)
			return nil, fmt.Errorf("%s: path too long for a unix socket address", path)
		}
		return &endpoint{fd: fd, to: path}, nil
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect %s: %w", path, err)
	}
	return &endpoint{fd: fd, stream: typ == unix.SOCK_STREAM}, nil
}

// VDE version 3 (libvdeplug's vde_open against vde_switch): the client
// binds a datagram socket, connects a stream socket to DIR/ctl and sends
// a request naming its datagram socket; the switch answers with the
// address of the port's datagram socket, which the client connects to.
// Frames are then plain datagrams; closing the control connection
// frees the port.
const (
	vdeMagic   = 0xfeedface
	vdeVersion = 3
	sunLen     = 110 // sizeof(struct sockaddr_un)
)

func dialVDE(dir, own string) (*endpoint, error) {
	data, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	setBuffers(data)
	ep := &endpoint{fd: data}
	fail := func(err error) (*endpoint, error) {
		ep.close()
		return nil, err
	}
	if err := unix.Bind(data, &unix.SockaddrUnix{Name: own}); err != nil {
		return fail(fmt.Errorf("bind %s: %w", own, err))
	}
	ctl, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	ep.held = append(ep.held, ctl)
	if err := unix.Connect(ctl, &unix.SockaddrUnix{Name: dir + "/ctl"}); err != nil {
		return fail(fmt.Errorf("connect %s/ctl: %w", dir, err))
	}
	descr := []byte("peerbench")
	// struct request_v3 (packed): magic, version, type (REQ_NEW_CONTROL:
	// any free port), sockaddr_un of our datagram socket, description.
	req := make([]byte, 12+sunLen, 12+sunLen+len(descr))
	binary.NativeEndian.PutUint32(req[0:], vdeMagic)
	binary.NativeEndian.PutUint32(req[4:], vdeVersion)
	binary.NativeEndian.PutUint32(req[8:], 0)
	putSockaddrUnix(req[12:12+sunLen], own)
	req = append(req, descr...)
	if _, err := unix.Write(ctl, req); err != nil {
		return fail(fmt.Errorf("vde request: %w", err))
	}
	reply := make([]byte, sunLen)
	n, err := unix.Read(ctl, reply)
	if err != nil || n < 3 {
		return fail(fmt.Errorf("vde reply: %d bytes, %v", n, err))
	}
	port := sockaddrUnixPath(reply[:n])
	if err := unix.Connect(data, &unix.SockaddrUnix{Name: port}); err != nil {
		return fail(fmt.Errorf("connect vde port %s: %w", port, err))
	}
	return ep, nil
}

func putSockaddrUnix(b []byte, path string) {
	binary.NativeEndian.PutUint16(b, unix.AF_UNIX)
	copy(b[2:len(b)-1], path)
}

func sockaddrUnixPath(b []byte) string {
	p := b[2:]
	if i := strings.IndexByte(string(p), 0); i >= 0 {
		p = p[:i]
	}
	return string(p)
}

// writeFrame sends one frame, blocking (before the load starts).
func writeFrame(e *endpoint, frame []byte) error {
	if e.stream {
		frame = append(binary.BigEndian.AppendUint32(nil, uint32(len(frame))), frame...)
	}
	if e.to != "" {
		return unix.Sendto(e.fd, frame, 0, &unix.SockaddrUnix{Name: e.to})
	}
	_, err := unix.Write(e.fd, frame)
	return err
}

// drain reads whatever is queued (the socket is non-blocking).
func drain(e *endpoint) {
	buf := make([]byte, 65536)
	for {
		if _, err := unix.Read(e.fd, buf); err != nil && err != unix.EINTR {
			return
		}
	}
}

// wait polls fd for events, at most 50 ms so that stop is seen.
func wait(fd int, events int16) {
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: events}}, 50)
}

func send(e *endpoint, frame []byte, batch int, stop *atomic.Bool, sent *atomic.Int64) error {
	if e.stream {
		return sendStream(e, frame, batch, stop, sent)
	}
	b := mmsg.NewBatch(batch)
	to := unix.RawSockaddrUnix{Family: unix.AF_UNIX} // the batch's address, dial checked its length
	for i := 0; i < len(e.to); i++ {
		to.Path[i] = int8(e.to[i])
	}
	for i := 0; i < batch; i++ {
		b.Set(i, frame)
		if e.to != "" {
			b.SetName(i, &to)
			b.SetNameLen(i, 2+len(e.to)+1)
		}
	}
	for !stop.Load() {
		n, err := mmsg.Send(e.fd, b, batch, unix.MSG_DONTWAIT)
		switch {
		case (err == unix.EAGAIN || err == unix.ENOBUFS) && e.to != "":
			// An unconnected datagram socket cannot wait for room in the
			// switch's queue (poll says writable at once): a short sleep,
			// so that the sender does not spin on the CPUs the switch and
			// the receivers need.
			time.Sleep(50 * time.Microsecond)
		case err == unix.EAGAIN || err == unix.ENOBUFS:
			wait(e.fd, unix.POLLOUT)
		case err == unix.EINTR:
		case err != nil:
			return fmt.Errorf("send: %w", err)
		default:
			sent.Add(int64(n))
		}
	}
	return nil
}

// sendStream writes batch length-prefixed frames per write(2).
func sendStream(e *endpoint, frame []byte, batch int, stop *atomic.Bool, sent *atomic.Int64) error {
	var buf []byte
	for i := 0; i < batch; i++ {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(frame)))
		buf = append(buf, frame...)
	}
	per := len(frame) + 4
	off, bytes := 0, 0
	for !stop.Load() {
		n, err := unix.Write(e.fd, buf[off:])
		switch {
		case err == unix.EAGAIN:
			wait(e.fd, unix.POLLOUT)
			continue
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("write: %w", err)
		}
		off = (off + n) % len(buf)
		bytes += n
		sent.Add(int64(bytes / per))
		bytes %= per
	}
	return nil
}

func receive(e *endpoint, c loadConfig, stop *atomic.Bool, received *atomic.Int64) error {
	if e.stream {
		return receiveStream(e, c.size, stop, received)
	}
	b := mmsg.NewBatch(64)
	bufs := make([][]byte, b.Cap())
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
		b.Set(i, bufs[i])
	}
	for !stop.Load() {
		n, err := mmsg.Recv(e.fd, b, b.Cap(), unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN:
			wait(e.fd, unix.POLLIN)
			continue
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("receive: %w", err)
		}
		got := 0
		for i := 0; i < n; i++ {
			// Only the frames meant for this receiver count: a switch
			// that floods them is not credited twice.
			if b.Len(i) == c.size && [6]byte(bufs[i][:6]) == e.mac {
				got++
			}
			b.Set(i, bufs[i])
		}
		received.Add(int64(got))
	}
	return nil
}

// receiveStream counts complete length-prefixed frames of the expected size.
func receiveStream(e *endpoint, size int, stop *atomic.Bool, received *atomic.Int64) error {
	buf := make([]byte, 1<<20)
	var hdr [4]byte
	hn, rem, frameLen := 0, 0, 0
	for !stop.Load() {
		n, err := unix.Read(e.fd, buf)
		switch {
		case err == unix.EAGAIN:
			wait(e.fd, unix.POLLIN)
			continue
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case n == 0:
			return errors.New("read: the switch closed the connection")
		}
		got := 0
		for p := buf[:n]; len(p) > 0; {
			if rem == 0 {
				k := copy(hdr[hn:], p)
				hn += k
				p = p[k:]
				if hn < 4 {
					break
				}
				hn = 0
				frameLen = int(binary.BigEndian.Uint32(hdr[:]))
				rem = frameLen
				if rem == 0 {
					continue
				}
			}
			k := min(rem, len(p))
			p = p[k:]
			rem -= k
			if rem == 0 && frameLen == size {
				got++
			}
		}
		received.Add(int64(got))
	}
	return nil
}

// procCPU is the CPU time (seconds) pid has used, or -1.
func procCPU(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the parenthesised command name: state is field 3,
	// utime and stime are fields 14 and 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

func selfCPU() float64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
