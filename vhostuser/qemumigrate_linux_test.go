package vhostuser

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestQEMUMigration migrates a firmware guest (iPXE, as in
// TestQEMUFirmwareGuest) from one QEMU process to another, each on a
// device of its own served here: QEMU must accept our device for
// migration (it refuses one without LOG_SHMFD), the source's device must
// log while the migration runs and be stopped at its end, and the
// destination's must announce the guest (SEND_RARP: iPXE takes no
// GUEST_ANNOUNCE). The devices are connected to nothing: no frame leaves
// the test. Real guests through the switch are the integration tests'.
func TestQEMUMigration(t *testing.T) {
	needFirmwareQEMU(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	src := startSide(t, ctx, dir, "src")
	if !src.wait(ctx, func(s *sideState) bool { return s.ready }) {
		t.Fatalf("source device never ready: %v", src.state())
	}
	dst := startSide(t, ctx, dir, "dst", "-incoming", "unix:"+filepath.Join(dir, "migration"))
	time.Sleep(500 * time.Millisecond) // the destination listening for the migration

	qmp, err := dialQMP(filepath.Join(dir, "src.qmp"))
	if err != nil {
		t.Fatal(err)
	}
	defer qmp.Close()
	if _, err := qmp.do("migrate", map[string]any{"uri": "unix:" + filepath.Join(dir, "migration")}); err != nil {
		t.Fatal(err)
	}
	for status := ""; status != "completed"; {
		r, err := qmp.do("query-migrate", nil)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		json.Unmarshal(r, &m)
		if status = m.Status; status == "failed" || status == "cancelled" || ctx.Err() != nil {
			t.Fatalf("migration %s: %s (source %v, destination %v)", status, m.ErrorDesc, src.state(), dst.state())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !dst.wait(ctx, func(s *sideState) bool { return s.rarp != nil }) {
		t.Fatalf("no announcement on the destination: %v", dst.state())
	}
	s, d := src.state(), dst.state()
	t.Logf("source %v; destination %v", s, d)
	if !s.logged {
		t.Error("the source device never logged")
	}
	if !s.stopped {
		t.Error("the source device's rings were not stopped")
	}
	if want := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0x12, 0x34, 0x57, 0x80, 0x35}; !bytes.HasPrefix(d.rarp, want) {
		t.Errorf("announcement % x, want a RARP from the guest's MAC (% x)", d.rarp, want)
	}
	for _, side := range []*side{src, dst} {
		if err := side.stop(); err != nil {
			t.Errorf("%s device: %v", side.name, err)
		}
	}
}

// sideState is what a side's device did, as the test reads it.
type sideState struct {
	ready, logged, stopped bool
	frames                 uint64
	rarp                   []byte // the first RARP ReadTX returned
}

// side is one QEMU and the device serving it on its own goroutine.
type side struct {
	name string
	mu   sync.Mutex
	st   sideState
	quit chan struct{}
	done chan error
}

func (s *side) state() sideState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

func (s *side) wait(ctx context.Context, ok func(*sideState) bool) bool {
	for ctx.Err() == nil {
		st := s.state()
		if ok(&st) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (s *side) stop() error {
	close(s.quit)
	return <-s.done
}

// startSide listens on dir/name.vhost, starts QEMU on it and serves the
// device QEMU connects.
func startSide(t *testing.T, ctx context.Context, dir, name string, extra ...string) *side {
	sock := filepath.Join(dir, name+".vhost")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(lfd) })
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(lfd, 1)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", append([]string{
		"-nodefaults", "-display", "none", "-serial", "none", "-accel", "tcg", "-m", "128",
		"-object", "memory-backend-memfd,id=mem,size=128M,share=on", "-numa", "node,memdev=mem",
		"-chardev", "socket,id=c0,path=" + sock, "-netdev", "vhost-user,id=n0,chardev=c0",
		"-device", "virtio-net-pci,netdev=n0,vectors=0,mac=52:54:00:12:34:57", "-boot", "n",
		"-qmp", "unix:" + filepath.Join(dir, name+".qmp") + ",server=on,wait=off",
	}, extra...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Logf("%s qemu: %s", name, out.String())
	})
	pfd := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(pfd, 20000); n != 1 {
		t.Fatalf("%s: qemu did not connect", name)
	}
	fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDevice(fd, Config{Note: func(m string) { t.Log(name, m) }})
	if err != nil {
		t.Fatal(err)
	}
	s := &side{name: name, quit: make(chan struct{}), done: make(chan error, 1)}
	go func() { s.done <- s.serve(d) }()
	return s
}

// serve runs d until quit: messages, kicks, and its TX ring read and
// dropped, the first RARP kept.
func (s *side) serve(d *Device) error {
	defer d.Close()
	got, sizes := bufs(32, 2048)
	for {
		select {
		case <-s.quit:
			return nil
		default:
		}
		pfds := []unix.PollFd{{Fd: int32(d.SocketFD()), Events: unix.POLLIN}}
		for q := range numQueues {
			if fd := d.KickFD(q); fd >= 0 {
				pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
			}
		}
		unix.Poll(pfds, 50)
		if pfds[0].Revents != 0 {
			if _, err := d.HandleSocket(); errors.Is(err, ErrHangup) {
				<-s.quit // QEMU went away; the test decides whether it should have
				return nil
			} else if err != nil {
				return err
			}
		}
		d.DrainKick(TXQ)
		n, _, err := d.ReadTX(got, sizes, nil)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.st.ready = s.st.ready || d.Ready()
		s.st.stopped = s.st.stopped || d.Stopped()
		s.st.logged = s.st.logged || d.q[RXQ].vq.log != nil
		s.st.frames = d.Stats().TXFrames
		for i := range n {
			if f := got[i][:sizes[i]]; s.st.rarp == nil && len(f) >= 14 && f[12] == 0x80 && f[13] == 0x35 {
				s.st.rarp = bytes.Clone(f)
			}
		}
		s.mu.Unlock()
	}
}

// qmpConn is a QMP client: one command at a time, events skipped.
type qmpConn struct {
	net.Conn
	r *bufio.Reader
}

func dialQMP(path string) (*qmpConn, error) {
	var c net.Conn
	var err error
	for range 50 { // QEMU creates the socket as it starts
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	q := &qmpConn{Conn: c, r: bufio.NewReader(c)}
	if _, err := q.r.ReadBytes('\n'); err != nil { // the greeting
		c.Close()
		return nil, err
	}
	if _, err := q.do("qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpConn) do(cmd string, args map[string]any) (json.RawMessage, error) {
	m := map[string]any{"execute": cmd}
	if args != nil {
		m["arguments"] = args
	}
	b, _ := json.Marshal(m)
	q.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var r struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Desc string `json:"desc"`
			} `json:"error"`
		}
		if json.Unmarshal(line, &r) != nil {
			continue
		}
		if r.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s", cmd, r.Error.Desc)
		}
		if r.Return != nil {
			return r.Return, nil
		}
	}
}
