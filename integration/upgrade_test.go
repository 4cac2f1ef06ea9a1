//go:build linux

package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// vknetctl upgrade (issue 17): clients of every socket kind send without
// pause through upgrades in a row; none is disconnected, none loses more
// than the issue allows, and the switch's view (ports, MAC table,
// bindings, counters) survives each upgrade.

// Traffic per flow: the 2-10k frames/s, in small bursts.
const (
	upgradeFlowRate  = 2000 // frames/s per flow
	upgradeBurstTick = 5 * time.Millisecond
	maxUpgradePause  = 200 * time.Millisecond // the target
	maxUpgradeLoss   = 0.001
)

// flowEnd is one client socket as a VM's network device would use it.
type flowEnd interface {
	send(frame []byte) error
	recv(buf []byte) (int, error)
	close()
}

type seqEnd struct{ c *net.UnixConn }

func (e seqEnd) send(f []byte) error {
	e.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := e.c.Write(f)
	return err
}
func (e seqEnd) recv(b []byte) (int, error) { return e.c.Read(b) }
func (e seqEnd) close()                     { e.c.Close() }

type streamEnd struct {
	c   *net.UnixConn
	out []byte
}

func (e *streamEnd) send(f []byte) error {
	e.out = binary.BigEndian.AppendUint32(e.out[:0], uint32(len(f)))
	e.out = append(e.out, f...)
	e.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := e.c.Write(e.out)
	return err
}

func (e *streamEnd) recv(b []byte) (int, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(e.c, hdr[:]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n > len(b) {
		return 0, fmt.Errorf("stream frame of %d bytes", n)
	}
	return io.ReadFull(e.c, b[:n])
}
func (e *streamEnd) close() { e.c.Close() }

type dgramEnd struct {
	c  *net.UnixConn
	to *net.UnixAddr
}

func (e dgramEnd) send(f []byte) error {
	e.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := e.c.WriteToUnix(f, e.to)
	return err
}
func (e dgramEnd) recv(b []byte) (int, error) { n, _, err := e.c.ReadFromUnix(b); return n, err }
func (e dgramEnd) close()                     { e.c.Close() }

// vhostEnd is a Go vhost-user guest (the repo's test driver): it polls
// its rings, as a guest's driver in poll mode does.
type vhostEnd struct {
	g     *vhostguest.Guest
	bufs  [][]byte
	sizes []int
	done  chan struct{}
}

func (e *vhostEnd) send(f []byte) error {
	deadline := time.Now().Add(5 * time.Second)
	for e.g.Send([][]byte{f}, nil) != 1 {
		if time.Now().After(deadline) {
			return errors.New("vhost-user guest: no room in its TX ring for 5s")
		}
		time.Sleep(100 * time.Microsecond)
	}
	return nil
}

func (e *vhostEnd) recv(b []byte) (int, error) {
	for {
		select {
		case <-e.done:
			return 0, io.EOF
		default:
		}
		if k := e.g.Receive(e.bufs, e.sizes, nil); k == 1 {
			e.g.PostRX(1)
			return copy(b, e.bufs[0][:e.sizes[0]]), nil
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (e *vhostEnd) close() {
	select {
	case <-e.done:
	default:
		close(e.done)
	}
}

func dialEnd(t *testing.T, kind, path, dir string, n int) flowEnd {
	t.Helper()
	switch kind {
	case "vhost-user":
		g, err := vhostguest.New(vhostguest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Close)
		fd, err := vhostguest.Dial(path)
		if err != nil {
			t.Fatal(err)
		}
		g.Attach(fd)
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		g.PostRX(1 << 16)
		return &vhostEnd{g: g, bufs: [][]byte{make([]byte, 4096)}, sizes: make([]int, 1), done: make(chan struct{})}
	case "seqpacket":
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		return seqEnd{c}
	case "stream":
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		return &streamEnd{c: c}
	}
	local := filepath.Join(dir, fmt.Sprintf("c%d.sock", n))
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(local, 0o777) // the daemon may run as --user
	c.SetReadBuffer(1 << 20)
	return dgramEnd{c: c, to: &net.UnixAddr{Name: path, Net: "unixgram"}}
}

// flow is one sender and one receiver of the same kind, the receiver
// counting sequence numbers and the longest gap between two frames.
type flow struct {
	kind              string
	tx, rx            flowEnd
	txMAC, rxMAC      [6]byte
	txIP, rxIP        netip.Addr
	sent, got         atomic.Uint64
	maxGap            atomic.Int64
	maxGapAt          atomic.Int64 // unix ns when the longest gap ended
	last              atomic.Int64 // unix ns of the last frame received
	err               atomic.Value // the first send or receive error: a disconnection
	stopped, stopped2 chan struct{}
}

func (f *flow) fail(err error) { f.err.CompareAndSwap(nil, err) }

func (f *flow) frame(seq uint64) []byte {
	payload := binary.BigEndian.AppendUint64(make([]byte, 56, 64), seq) // last in the frame
	return testbed.IPv4UDP(f.txMAC, f.rxMAC, f.txIP, f.rxIP, 4000, 4000, payload)
}

// run sends until stop; the receiver runs until its socket is closed.
func (f *flow) run(stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		var next uint64 = 1
		for {
			n, err := f.rx.recv(buf)
			if err != nil {
				select {
				case <-f.stopped:
				default:
					f.fail(fmt.Errorf("%s receiver: %w", f.kind, err))
				}
				return
			}
			if n < 14+20+8+64 || [6]byte(buf[6:12]) != f.txMAC {
				continue
			}
			seq := binary.BigEndian.Uint64(buf[n-8 : n])
			now := time.Now().UnixNano()
			if last := f.last.Swap(now); last != 0 && seq > 1 {
				if gap := now - last; gap > f.maxGap.Load() {
					f.maxGap.Store(gap)
					f.maxGapAt.Store(now)
				}
			}
			if seq >= next {
				f.got.Add(1)
				next = seq + 1
			}
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(upgradeBurstTick)
		defer tick.Stop()
		burst := int(upgradeFlowRate * upgradeBurstTick / time.Second)
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for i := 0; i < burst; i++ {
				if err := f.tx.send(f.frame(f.sent.Load() + 1)); err != nil {
					f.fail(fmt.Errorf("%s sender: %w", f.kind, err))
					return
				}
				f.sent.Add(1)
			}
		}
	}()
}

// stallMeter measures how long the test process itself went without
// running: a goroutine that sleeps 1 ms at a time and records its longest
// oversleep. On a machine shared with other jobs (2 cores here) the
// clients can be descheduled for longer than an upgrade's pause; such a
// pause says nothing about the switch.
type stallMeter struct{ longest atomic.Int64 }

func (m *stallMeter) run(stop <-chan struct{}) {
	for {
		start := time.Now()
		select {
		case <-stop:
			return
		case <-time.After(time.Millisecond):
		}
		if over := int64(time.Since(start) - time.Millisecond); over > m.longest.Load() {
			m.longest.Store(over)
		}
	}
}

// upgradeBed is a daemon with a seqpacket, a stream, a datagram and a
// vhost-user flow.
type upgradeBed struct {
	stalls  stallMeter
	t       *testing.T
	ns      *testbed.Netns
	d       *daemon
	ctl     string
	flows   []*flow
	stop    chan struct{}
	wg      sync.WaitGroup
	dir     string
	pidfile string
}

// allKinds are the client kinds of a bed.
var allKinds = []string{"seqpacket", "stream", "dgram", "vhost-user"}

func startUpgradeBed(t *testing.T, bin string, extra ...string) *upgradeBed {
	return startBed(t, bin, allKinds, extra...)
}

func startBed(t *testing.T, bin string, kinds []string, extra ...string) *upgradeBed {
	t.Helper()
	ns := testbed.NewNetns(t)
	// The host's own IPv6 chatter (router and multicast listener
	// solicitations) on the TAP would move the counters of a quiet upgrade.
	ns.DisableIPv6(t)
	dir := testbed.ShortTempDir(t)
	os.Chmod(dir, 0o755)
	b := &upgradeBed{t: t, ns: ns, dir: dir, stop: make(chan struct{}), pidfile: filepath.Join(dir, "vknetd.pid")}
	args := append([]string{"--stream", filepath.Join(dir, "s"), "--dgram", filepath.Join(dir, "g"), "--vhost-user", filepath.Join(dir, "v")}, extra...)
	args = append(args, "198.18.0.1/24")
	b.d = &daemon{Daemon: ns.StartDaemon(t, bin, testbed.DaemonConfig{Sock: filepath.Join(dir, "vknet"), Pidfile: b.pidfile, Args: args}), t: t}
	b.ctl = b.d.Sock + ".ctl"
	paths := map[string]string{"seqpacket": b.d.Sock, "stream": filepath.Join(dir, "s"), "dgram": filepath.Join(dir, "g"), "vhost-user": filepath.Join(dir, "v")}
	for i, kind := range kinds {
		f := &flow{kind: kind, stopped: make(chan struct{}),
			txMAC: testbed.MAC(byte(0x10 + i)), rxMAC: testbed.MAC(byte(0x20 + i)),
			txIP: netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}), rxIP: netip.AddrFrom4([4]byte{198, 18, 0, byte(20 + i)})}
		f.tx = dialEnd(t, kind, paths[kind], dir, 2*i)
		f.rx = dialEnd(t, kind, paths[kind], dir, 2*i+1)
		// Each end speaks once, so the switch learns both MACs and binds
		// both addresses before the flow starts.
		bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		if err := f.rx.send(testbed.IPv4UDP(f.rxMAC, bcast, f.rxIP, netip.MustParseAddr("198.18.0.255"), 1, 1, []byte("hello"))); err != nil {
			t.Fatal(err)
		}
		if err := f.tx.send(testbed.IPv4UDP(f.txMAC, bcast, f.txIP, netip.MustParseAddr("198.18.0.255"), 1, 1, []byte("hello"))); err != nil {
			t.Fatal(err)
		}
		b.flows = append(b.flows, f)
	}
	t.Cleanup(b.close)
	if !waitFor(5*time.Second, func() bool { return len(b.snapshot().macs) >= 2*len(b.flows) }) {
		t.Fatalf("the switch did not learn the %d MACs: %v", 2*len(b.flows), b.snapshot().macs)
	}
	return b
}

func (b *upgradeBed) start() {
	go b.stalls.run(b.stop)
	for _, f := range b.flows {
		f.run(b.stop, &b.wg)
	}
}

// quiesce stops the senders and waits until the receivers have what
// will come.
func (b *upgradeBed) quiesce() {
	close(b.stop)
	waitFor(3*time.Second, func() bool {
		for _, f := range b.flows {
			if f.got.Load() < f.sent.Load() {
				return false
			}
		}
		return true
	})
	time.Sleep(50 * time.Millisecond)
}

func (b *upgradeBed) close() {
	select {
	case <-b.stop:
	default:
		close(b.stop) // a test that failed before quiesce
	}
	for _, f := range b.flows {
		close(f.stopped)
		f.tx.close()
		f.rx.close()
	}
	b.wg.Wait()
}

func (b *upgradeBed) checkFlows() {
	b.t.Helper()
	for _, f := range b.flows {
		if err, _ := f.err.Load().(error); err != nil {
			b.t.Errorf("%s flow disconnected: %v", f.kind, err)
		}
	}
}

// report logs and checks loss and the longest pause of every flow.
func (b *upgradeBed) report(upgrades int) {
	b.t.Helper()
	for _, f := range b.flows {
		sent, got := f.sent.Load(), f.got.Load()
		loss := float64(sent-got) / float64(max(sent, 1))
		gap := time.Duration(f.maxGap.Load())
		b.t.Logf("%s flow: %d upgrades, %d frames sent at %d/s, %d received (loss %.4f%%), longest pause %v ending at %s",
			f.kind, upgrades, sent, upgradeFlowRate, got, 100*loss, gap.Round(time.Millisecond), time.Unix(0, f.maxGapAt.Load()).Format("15:04:05.000"))
		if loss > maxUpgradeLoss {
			b.t.Errorf("%s flow lost %d of %d frames (%.3f%%), more than %.1f%%", f.kind, sent-got, sent, 100*loss, 100*maxUpgradeLoss)
		}
		stall := time.Duration(b.stalls.longest.Load())
		switch {
		case gap > maxUpgradePause && stall > maxUpgradePause/2:
			b.t.Logf("%s flow paused %v, more than %v, but the test process itself did not run for %v: the machine is overloaded, not judged",
				f.kind, gap, maxUpgradePause, stall.Round(time.Millisecond))
		case gap > maxUpgradePause:
			b.t.Errorf("%s flow paused %v, more than %v (the test process ran: its longest stall was %v)", f.kind, gap, maxUpgradePause, stall)
		}
	}
}

type switchView struct {
	ports    map[uint32]control.Port
	macs     map[string]uint32
	bindings map[string]string
}

func (b *upgradeBed) snapshot() switchView {
	b.t.Helper()
	c, err := control.Dial(b.ctl)
	if err != nil {
		b.t.Fatal(err)
	}
	defer c.Close()
	v := switchView{ports: map[uint32]control.Port{}, macs: map[string]uint32{}, bindings: map[string]string{}}
	ports, err := c.Ports()
	if err != nil {
		b.t.Fatal(err)
	}
	for _, p := range ports {
		v.ports[p.ID] = p
	}
	macs, err := c.MACs()
	if err != nil {
		b.t.Fatal(err)
	}
	for _, m := range macs {
		v.macs[m.MAC] = m.Port
	}
	bs, err := c.Bindings()
	if err != nil {
		b.t.Fatal(err)
	}
	for _, x := range bs {
		v.bindings[x.IP] = fmt.Sprintf("%s port %d %s", x.MAC, x.Port, x.Source)
	}
	return v
}

// same compares two views: the same ports (ids, kinds, peers), MACs and
// bindings; counters equal when exact, else never lower.
func sameView(t *testing.T, what string, before, after switchView, exact bool) {
	t.Helper()
	if !reflect.DeepEqual(before.macs, after.macs) {
		t.Errorf("%s: MAC table %v, before %v", what, after.macs, before.macs)
	}
	if !reflect.DeepEqual(before.bindings, after.bindings) {
		t.Errorf("%s: bindings %v, before %v", what, after.bindings, before.bindings)
	}
	if len(before.ports) != len(after.ports) {
		t.Errorf("%s: %d ports, before %d", what, len(after.ports), len(before.ports))
	}
	for id, p := range before.ports {
		q, ok := after.ports[id]
		switch {
		case !ok || p.Kind != q.Kind || p.Name != q.Name || p.PID != q.PID || p.UID != q.UID:
			t.Errorf("%s: port %d is %+v, before %+v", what, id, q, p)
		case exact && (p.RxFrames != q.RxFrames || p.TxFrames != q.TxFrames || p.RxBytes != q.RxBytes || p.TxBytes != q.TxBytes ||
			!reflect.DeepEqual(p.Drops, q.Drops) || p.Unlearned != q.Unlearned):
			t.Errorf("%s: port %d counters %+v, before %+v", what, id, q, p)
		case q.RxFrames < p.RxFrames || q.TxFrames < p.TxFrames:
			t.Errorf("%s: port %d counters went down: %+v, before %+v", what, id, q, p)
		}
	}
}

// upgrade asks for an upgrade as vknetctl does and returns the new pid.
func (b *upgradeBed) upgrade(binary string) (int, error) {
	c, err := control.Dial(b.ctl)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.Upgrade(binary)
}

// pidAlive: pid runs (a zombie has exited: the old daemon's parent may be
// slow to reap it).
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// runUpgrades upgrades n times under traffic, then once more quiet, and
// stops the last daemon, checking it cleans up.
func runUpgrades(t *testing.T, b *upgradeBed, n int) (lastPid int) {
	b.start()
	time.Sleep(200 * time.Millisecond)
	oldPid := b.d.Pid()
	var took []time.Duration
	for i := 0; i < n; i++ {
		before := b.snapshot()
		start := time.Now()
		pid, err := b.upgrade("")
		took = append(took, time.Since(start))
		if err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		sameView(t, fmt.Sprintf("upgrade %d", i+1), before, b.snapshot(), false)
		if !waitFor(3*time.Second, func() bool { return !pidAlive(oldPid) }) {
			t.Fatalf("upgrade %d: the old daemon (pid %d) did not exit", i+1, oldPid)
		}
		// Under --user the keeper writes the pidfile, a moment later.
		if !waitFor(time.Second, func() bool { return tryReadPid(b.pidfile) == pid }) {
			got, _ := os.ReadFile(b.pidfile)
			t.Errorf("upgrade %d: pidfile says %q, the new daemon is %d", i+1, got, pid)
		}
		oldPid = pid
		b.checkFlows()
		if t.Failed() {
			t.FailNow()
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.quiesce()
	b.checkFlows()
	b.report(n)
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("vknetctl upgrade took %v median, %v at most", took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))

	// Quiet: every counter the same across the upgrade.
	before := b.snapshot()
	pid, err := b.upgrade("")
	if err != nil {
		t.Fatal(err)
	}
	sameView(t, "quiet upgrade", before, b.snapshot(), true)
	waitFor(3*time.Second, func() bool { return !pidAlive(oldPid) })
	return pid
}

// stopAndCheckCleanup stops the daemon at pid and checks it removed its
// files and TAP as a daemon that was never upgraded does.
func stopAndCheckCleanup(t *testing.T, b *upgradeBed, pid int) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGTERM)
	if !waitFor(5*time.Second, func() bool { return !pidAlive(pid) }) {
		t.Fatalf("the upgraded daemon (pid %d) did not stop on SIGTERM", pid)
	}
	gone := func() bool {
		for _, p := range []string{b.d.Sock, b.ctl, filepath.Join(b.dir, "s"), filepath.Join(b.dir, "g"), filepath.Join(b.dir, "v"), b.pidfile} {
			if fileExists(p) {
				return false
			}
		}
		_, there := b.ns.LinkShow(b.d.TAP)
		return !there
	}
	if !waitFor(5*time.Second, gone) {
		out, _ := b.ns.Try("ip", "link")
		t.Errorf("after the upgraded daemon stopped, files or the TAP %s remain:\n%s", b.d.TAP, out)
	}
}

// TestUpgradeUnderTraffic: 20 upgrades in a row with a SEQPACKET, a
// stream, a datagram and a vhost-user flow at 2000 frames/s each: no disconnection, at
// most 0.1% lost, no pause over 200 ms, the same ports, MACs, bindings and
// (when quiet) counters; the last daemon cleans up as the first would.
func TestUpgradeUnderTraffic(t *testing.T) {
	needRoot(t)
	b := startUpgradeBed(t, vknetd)
	pid := runUpgrades(t, b, 20)
	stopAndCheckCleanup(t, b, pid)
}

// TestUpgradeUnderUser: the same under --user nobody: the new daemons
// are never root, the keeper lives on, writes the pidfile and still
// cleans up at the last exit.
func TestUpgradeUnderUser(t *testing.T) {
	needRoot(t)
	lookupDropUser(t)
	// nobody must be able to run the new binary: not from root's 0700
	// build directory.
	binDir := testbed.ShortTempDir(t)
	os.Chmod(binDir, 0o755)
	bin := filepath.Join(binDir, "vknetd")
	copyFile(t, vknetd, bin, 0o755)
	b := startUpgradeBed(t, bin, "--user", dropUser)
	keeper := childPids(b.d.Pid())
	pid := runUpgrades(t, b, 5)
	st := procStatus(t, fmt.Sprintf("/proc/%d/status", pid))
	if uids := strings.Fields(st["Uid"]); len(uids) != 4 || uids[0] == "0" || uids[1] == "0" || uids[2] == "0" || uids[3] == "0" {
		t.Errorf("the upgraded daemon's uids are %q: it regained root", st["Uid"])
	}
	// CAP_NET_ADMIN (bit 12) and nothing else, none to pass on.
	if st["CapEff"] != "0000000000001000" || st["CapPrm"] != "0000000000001000" || st["CapInh"] != "0000000000000000" ||
		st["CapAmb"] != "0000000000000000" || st["NoNewPrivs"] != "1" {
		t.Errorf("the upgraded daemon's capabilities: eff %s prm %s inh %s amb %s, no_new_privs %s; want CAP_NET_ADMIN alone",
			st["CapEff"], st["CapPrm"], st["CapInh"], st["CapAmb"], st["NoNewPrivs"])
	}
	for _, k := range keeper {
		if !pidAlive(k) {
			t.Errorf("the keeper (pid %d) exited during the upgrades", k)
		}
	}
	stopAndCheckCleanup(t, b, pid)
}

// TestUpgradeRollsBack: a binary that exits, one that never says it is
// ready, and one that refuses the state (other flags) leave the running
// daemon serving its clients; vknetctl says why and exits 1.
func TestUpgradeRollsBack(t *testing.T) {
	needRoot(t)
	vknetctl, remove, err := testbed.BuildCommand("vknetctl")
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	b := startUpgradeBed(t, vknetd)
	b.start()
	dir := testbed.ShortTempDir(t)
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct{ binary, want string }{
		{script("exits", "echo broken >&2; exit 1"), "exited before it was ready: exit status 1"},
		{script("silent", "exec sleep 30"), "not ready within 5s"},
		{script("otherflags", "exec "+vknetd+` "$@" --mtu 1400`), "an upgrade keeps the flags"},
		{filepath.Join(dir, "missing"), "no such file"},
	}
	pid := b.d.Pid()
	for _, c := range cases {
		before := b.snapshot()
		out, err := exec.Command(vknetctl, "-s", b.ctl, "upgrade", c.binary).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), c.want) || !strings.Contains(string(out), "keeps serving") {
			t.Errorf("vknetctl upgrade %s: %v, %q; want exit status 1 and %q", filepath.Base(c.binary), err, out, c.want)
		}
		if !pidAlive(pid) {
			t.Fatalf("the daemon exited after the failed upgrade to %s", filepath.Base(c.binary))
		}
		sameView(t, "failed upgrade to "+filepath.Base(c.binary), before, b.snapshot(), false)
		got := b.flows[0].got.Load()
		if !waitFor(2*time.Second, func() bool { return b.flows[0].got.Load() > got+100 }) {
			t.Errorf("no traffic after the failed upgrade to %s", filepath.Base(c.binary))
		}
	}
	b.quiesce()
	b.checkFlows()
	b.report(0)
	// And it can still be upgraded.
	if _, err := b.upgrade(""); err != nil {
		t.Errorf("upgrade after the failed ones: %v", err)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeTellsSystemd: under systemd (a $NOTIFY_SOCKET, as a unit with
// NotifyAccess=main gets) the old daemon, the main process until then,
// names the new one (MAINPID=) before it exits, so the unit follows it;
// the pidfile says the same for PIDFile=.
func TestUpgradeTellsSystemd(t *testing.T) {
	needRoot(t)
	notify := filepath.Join(testbed.ShortTempDir(t), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", notify)
	b := startUpgradeBed(t, vknetd)
	pid, err := b.upgrade("")
	if err != nil {
		t.Fatal(err)
	}
	l.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	n, err := l.Read(buf)
	if want := fmt.Sprintf("MAINPID=%d", pid); err != nil || string(buf[:n]) != want {
		t.Fatalf("systemd heard %q (%v), want %q", buf[:n], err, want)
	}
	if got, _ := os.ReadFile(b.pidfile); strings.TrimSpace(string(got)) != strconv.Itoa(pid) {
		t.Errorf("pidfile says %q, the new daemon is %d", got, pid)
	}
}
