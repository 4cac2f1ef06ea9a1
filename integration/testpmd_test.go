//go:build linux

package integration

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// testpmdQueues and testpmdQueueSize are the queue pairs each testpmd
// port asks for and the entries in each of its rings.
const (
	testpmdQueues    = 4
	testpmdQueueSize = 256
	// testpmdPages is the 2 MiB huge pages testpmd's -m 128 takes.
	testpmdPages = 64
	// testpmdFrames is how many frames each port must have sent through
	// the switch before the test stops the traffic: enough for every
	// queue to have carried many, and a few seconds at worst on a loaded
	// 2-core machine (the loop runs at about 0.5 M frames/s per port when
	// quiet).
	testpmdFrames = 50000
)

// TestTestpmdMultiQueueGuests is issue 19, item 4's "tested with testpmd
// guests using several queues": DPDK's testpmd, written independently of
// vknetd, as two virtio-user guests of 4 queue pairs each on the daemon's
// vhost-user socket. Its forwarding lcore loops frames between its two
// ports through the switch (mac forwarding after a first burst of 256
// frames of 256 flows, --txonly-multi-flow), so every one of the 8
// forwarding streams (port 0 RX queue q -> port 1 TX queue q, and back)
// depends on the switch reading every TX ring and spreading the flows over
// every RX ring. Checked once the traffic stops, with the ports still up:
//   - testpmd's per-stream stats: frames received and sent on every queue
//     of both ports;
//   - testpmd runs its in-order paths (VIRTIO_F_IN_ORDER negotiated);
//   - the switch's per-port counters agree with testpmd's to the frame:
//     what the switch received from a port is what testpmd sent on it;
//     what it sent to a port is what testpmd received there, plus at most
//     the frames still in that port's RX rings when testpmd stopped.
//
// Frame order within a flow is not checked here: testpmd's frames carry
// no sequence number (TestTestpmdMultiQueueKeepsFlowOrder numbers its
// own). With VKNETD_TEST_WORKERS=2 (the suite's second pass) the two
// ports land on different loops, and each port's queue pairs are spread
// over both (checked before the traffic starts): every loop reads and
// writes rings of both ports.
//
// testpmd busy-polls CPU 0 for the few seconds the traffic runs; it is
// stopped, and its huge pages given back, at cleanup even on failure.
func TestTestpmdMultiQueueGuests(t *testing.T) {
	needRoot(t)
	testbed.RequireTool(t, "dpdk-testpmd")
	testbed.Hugepages(t, testpmdPages) // given back after testpmd stops (cleanups run last first)
	ns := testbed.NewNetns(t)
	vhost := filepath.Join(testbed.ShortTempDir(t), "vhost")
	// -U: testpmd's 256 flows come from 256 source addresses of one MAC,
	// which secure mode would rightly refuse.
	d := startDaemon(t, ns, testbed.DaemonConfig{Args: []string{"-U", "--vhost-user", vhost, "198.18.0.1/16"}})
	if !waitFor(5*time.Second, func() bool { return fileExists(vhost) }) {
		t.Fatalf("vknetd did not create %s; stderr:\n%s", vhost, d.Stderr())
	}

	macs := [2]string{"02:70:6d:00:00:01", "02:70:6d:00:00:02"}
	tp, command := startTestpmd(t, ns, vhost, macs[:], "--forward-mode=mac", "--eth-peer=0,"+macs[1], "--eth-peer=1,"+macs[0],
		"--txonly-multi-flow")

	c, err := control.Dial(d.Sock + ".ctl")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// ports gives the switch's counters for testpmd's ports 0 and 1, found
	// by their MACs once learned.
	ports := func() (p [2]control.Port, ok bool) {
		t.Helper()
		ms, err := c.MACs()
		if err != nil {
			t.Fatal(err)
		}
		ps, err := c.Ports()
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for i, mac := range macs {
			for _, m := range ms {
				if m.MAC != mac {
					continue
				}
				for _, port := range ps {
					if port.ID == m.Port && port.Kind == "vhost-user" {
						p[i] = port
						found++
					}
				}
			}
		}
		return p, found == 2
	}

	waitQueuesSpread(t, d, 2)
	command("start tx_first")
	var sw [2]control.Port
	if !waitFor(60*time.Second, func() bool {
		var ok bool
		sw, ok = ports()
		return ok && sw[0].RxFrames >= testpmdFrames && sw[1].RxFrames >= testpmdFrames
	}) {
		t.Fatalf("the switch did not receive %d frames from each testpmd port within 60 s: %+v\ntestpmd:\n%s", testpmdFrames, sw, tp.Output())
	}
	mark := len(tp.Output())
	command("stop")
	// The report ends with "Done.", after the totals of all ports.
	if !waitFor(30*time.Second, func() bool { return strings.Contains(tp.Output()[mark:], "\nDone.") }) {
		t.Fatalf("testpmd did not report its stats within 30 s of stop:\n%s", tp.Output())
	}
	out := tp.Output()[mark:]
	streams, total := testpmdStats(t, out)
	// The switch offers VIRTIO_F_IN_ORDER, and testpmd takes it: the
	// counters below are those of its in-order paths, which trust the
	// switch to use every chain in the order posted.
	for port := range 2 {
		for _, dir := range []string{"Rx", "Tx"} {
			if line := fmt.Sprintf("using inorder %s path on port %d", dir, port); !strings.Contains(tp.Output(), line) {
				t.Errorf("testpmd does not say %q: did it not negotiate VIRTIO_F_IN_ORDER?", line)
			}
		}
	}

	if len(streams) != 2*testpmdQueues {
		t.Fatalf("testpmd reported %d forwarding streams, want %d (2 ports x %d queues); did the virtio-user ports get %d queue pairs?\n%s",
			len(streams), 2*testpmdQueues, testpmdQueues, testpmdQueues, out)
	}
	// The 256 flows spread over the 4 RX rings of each port (a ring's
	// share near 1/4, well above 1/16 even for an uneven hash), and each
	// flow stays on its rings: every stream carries a fair share of the
	// frames. A switch reading only the first TX ring left the others a
	// few frames of the first burst.
	all := total[0].rx + total[1].rx
	for _, s := range streams {
		if s.rx < all/(4*uint64(len(streams))) || s.tx == 0 {
			t.Errorf("%s: received %d and sent %d frames, of %d in all: less than 1/4 of its share", s.name, s.rx, s.tx, all)
		} else {
			t.Logf("%s: %d frames", s.name, s.rx)
		}
	}
	// Stopped, testpmd sends nothing more: the switch takes what is left
	// in the TX rings, and then has received exactly what testpmd sent.
	if !waitFor(10*time.Second, func() bool {
		sw, _ = ports()
		return sw[0].RxFrames == total[0].tx && sw[1].RxFrames == total[1].tx
	}) {
		t.Errorf("switch received %d and %d frames from testpmd's ports 0 and 1; testpmd sent %d and %d",
			sw[0].RxFrames, sw[1].RxFrames, total[0].tx, total[1].tx)
	}
	for i := range 2 {
		// What the switch wrote into a port's RX rings that testpmd had not
		// taken yet when it stopped is at most what the rings hold.
		inRings := sw[i].TxFrames - total[i].rx
		if sw[i].TxFrames < total[i].rx || inRings > testpmdQueues*testpmdQueueSize {
			t.Errorf("port %d: switch sent %d frames, testpmd received %d: the difference must be within the %d entries of its RX rings",
				i, sw[i].TxFrames, total[i].rx, testpmdQueues*testpmdQueueSize)
		}
		t.Logf("port %d (switch port %d): testpmd sent %d and received %d frames; the switch received %d and sent %d; drops %v; workers %s",
			i, sw[i].ID, total[i].tx, total[i].rx, sw[i].RxFrames, sw[i].TxFrames, sw[i].Drops, sw[i].Workers)
		// Still spread after the traffic: the loops served both ports'
		// rings all along (a gather would have come with a message).
		if w, _ := strconv.Atoi(os.Getenv(testbed.WorkersEnv)); w > 1 && !(strings.Contains(sw[i].Workers, "0") && strings.Contains(sw[i].Workers, "1")) {
			t.Errorf("port %d: vknetctl ports lists workers %q, want its pairs on both loops", i, sw[i].Workers)
		}
	}
	command("quit")
	if err := tp.Wait(30 * time.Second); err != nil {
		t.Errorf("testpmd quit: %v", err)
	}
}

// startTestpmd runs dpdk-testpmd interactively in ns with a virtio-user port
// on the vhost-user socket at vhost for each of macs, with testpmdQueues
// queue pairs each, one forwarding lcore and args after testpmd's own; it
// returns once testpmd waits for commands, with the function that sends it
// one. testpmd is stopped at cleanup; call Hugepages before.
func startTestpmd(t *testing.T, ns *testbed.Netns, vhost string, macs []string, args ...string) (*testbed.Proc, func(string)) {
	t.Helper()
	in, input, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { input.Close() })
	// --in-memory: no hugetlbfs mount and no runtime files, but DPDK still
	// makes its runtime directory, empty: removed once testpmd is stopped
	// (this cleanup runs after the process's), with /var/run/dpdk if it
	// made that too.
	const runDir = "/var/run/dpdk"
	_, err = os.Stat(runDir)
	hadRunDir := err == nil
	prefix := ns.Name
	t.Cleanup(func() {
		os.Remove(filepath.Join(runDir, prefix))
		if !hadRunDir {
			os.Remove(runDir) // only if empty: other DPDK processes may use it by now
		}
	})
	// The forwarding lcore 0 on CPU 0, the main lcore (which reads the
	// commands) on CPU 1. stdbuf: testpmd prints its report with stdio,
	// which holds it back when stdout is a pipe.
	// The virtio driver's info lines say which paths it runs (in-order
	// or not), chosen from the features it negotiated with the switch.
	cmd := []string{"stdbuf", "-oL", "dpdk-testpmd", "-l", "0,1", "--main-lcore", "1", "--no-pci",
		"--in-memory", "--file-prefix", prefix, "--single-file-segments", "-m", "128",
		"--log-level=pmd.net.virtio.init:info"}
	for i, mac := range macs {
		cmd = append(cmd, "--vdev", fmt.Sprintf("net_virtio_user%d,path=%s,mac=%s,queues=%d,queue_size=%d",
			i, vhost, mac, testpmdQueues, testpmdQueueSize))
	}
	cmd = append(cmd, "--", "-i", "--nb-cores=1", "--rxq="+strconv.Itoa(testpmdQueues), "--txq="+strconv.Itoa(testpmdQueues),
		"--total-num-mbufs=8192")
	tp := ns.StartInput(t, in, append(cmd, args...)...)
	in.Close() // testpmd has it
	tp.WaitOutput(t, "testpmd> ", 60*time.Second)
	return tp, func(c string) {
		t.Helper()
		if _, err := fmt.Fprintln(input, c); err != nil {
			t.Fatalf("testpmd command %q: %v", c, err)
		}
	}
}

// testpmdStream is one forwarding stream's counters in testpmd's stop
// report.
type testpmdStream struct {
	name   string // "RX port 0 queue 1 -> TX port 1 queue 1"
	rx, tx uint64
}

// testpmdPort is one port's totals in testpmd's stop report.
type testpmdPort struct{ rx, tx uint64 }

var (
	testpmdStreamRE = regexp.MustCompile(`Forward Stats for RX Port=\s*(\d+)/Queue=\s*(\d+) -> TX Port=\s*(\d+)/Queue=\s*(\d+)\s*-+\s*RX-packets:\s*(\d+)\s+TX-packets:\s*(\d+)`)
	testpmdPortRE   = regexp.MustCompile(`Forward statistics for port\s+(\d+)\s*-+\s*RX-packets:\s*(\d+)\s+RX-dropped:\s*\d+\s+RX-total:\s*\d+\s*TX-packets:\s*(\d+)`)
)

// testpmdStats reads the per-stream and per-port counters from the report
// testpmd prints when its forwarding stops.
func testpmdStats(t *testing.T, out string) ([]testpmdStream, [2]testpmdPort) {
	t.Helper()
	num := func(s string) uint64 {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("testpmd report: %v", err)
		}
		return n
	}
	var streams []testpmdStream
	for _, m := range testpmdStreamRE.FindAllStringSubmatch(out, -1) {
		streams = append(streams, testpmdStream{
			name: fmt.Sprintf("RX port %s queue %s -> TX port %s queue %s", m[1], m[2], m[3], m[4]),
			rx:   num(m[5]), tx: num(m[6])})
	}
	var ports [2]testpmdPort
	seen := 0
	for _, m := range testpmdPortRE.FindAllStringSubmatch(out, -1) {
		i := num(m[1])
		if i > 1 {
			t.Fatalf("testpmd report names port %d; it has 0 and 1:\n%s", i, out)
		}
		ports[i] = testpmdPort{rx: num(m[2]), tx: num(m[3])}
		seen++
	}
	if seen != 2 {
		t.Fatalf("testpmd's report has totals for %d ports, want 2:\n%s", seen, strings.TrimSpace(out))
	}
	return streams, ports
}

// TestTestpmdMultiQueueKeepsFlowOrder: frames of one flow stay in order
// through the switch and a testpmd guest on 4 queue pairs, both ways. A Go
// guest (internal/vhostguest) with 4 queue pairs sends 32 UDP flows, flow f
// on the TX ring of pair f%4, each frame numbered within its flow, to
// testpmd's one port, which sends every frame back to it (mac forwarding,
// the port looped onto itself) on the queue it came in on. The Go guest
// gets every frame back, each flow on one of its RX rings and in order,
// and every queue of testpmd's carried frames. With VKNETD_TEST_WORKERS=2
// the queue pairs of both guests are spread over both loops before the
// frames go (flows cross between loops on their way, and keep their order).
func TestTestpmdMultiQueueKeepsFlowOrder(t *testing.T) {
	needRoot(t)
	testbed.RequireTool(t, "dpdk-testpmd")
	testbed.Hugepages(t, testpmdPages)
	ns := testbed.NewNetns(t)
	vhost := filepath.Join(testbed.ShortTempDir(t), "vhost")
	d := startDaemon(t, ns, testbed.DaemonConfig{Args: []string{"-U", "--vhost-user", vhost, "198.18.0.1/16"}})
	if !waitFor(5*time.Second, func() bool { return fileExists(vhost) }) {
		t.Fatalf("vknetd did not create %s; stderr:\n%s", vhost, d.Stderr())
	}
	tmac := [6]byte{0x02, 0x70, 0x6d, 0, 0, 0x11}
	gmac := [6]byte{0x02, 0x70, 0x6d, 0, 0, 0x12}
	tp, command := startTestpmd(t, ns, vhost, []string{net.HardwareAddr(tmac[:]).String()},
		"--forward-mode=mac", "--port-topology=loop", "--eth-peer=0,"+net.HardwareAddr(gmac[:]).String(),
		"--no-flush-rx")
	// Without --no-flush-rx, start empties the RX rings first, frames the
	// Go guest sent by then included; it prints the streams once
	// forwarding is about to run.
	command("start")
	tp.WaitOutput(t, "forwards packets on", 30*time.Second)

	g, err := vhostguest.New(vhostguest.Options{QueuePairs: testpmdQueues})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	fd, err := vhostguest.Dial(vhost)
	if err != nil {
		t.Fatal(err)
	}
	g.Attach(fd)
	if err := g.Start(); err != nil {
		t.Fatalf("Go guest set-up: %v; stderr:\n%s", err, d.Stderr())
	}
	for k := range testpmdQueues {
		g.Use(k)
		g.PostRX(testpmdQueueSize)
	}
	waitQueuesSpread(t, d, 2)

	const (
		flows  = 32
		each   = 300
		window = 128 // frames in flight, well within every ring on the way: none is dropped
		sport  = 4000
	)
	gip, tip := netip.MustParseAddr("198.18.2.1"), netip.MustParseAddr("198.18.2.2")
	frame := func(f, seq int) []byte {
		payload := make([]byte, 18) // a 60-byte frame
		binary.BigEndian.PutUint32(payload, uint32(seq))
		return testbed.IPv4UDP(gmac, tmac, gip, tip, uint16(sport+f), 5000, payload)
	}
	// flowOf reads a frame's flow and number back; ok is false for the
	// frames that are not the test's (the TAP's IPv6 floods, which testpmd
	// sends back too).
	flowOf := func(b []byte) (f, seq int, ok bool) {
		if len(b) < 60 || b[12] != 0x08 || b[13] != 0 || b[23] != 17 || binary.BigEndian.Uint16(b[36:]) != 5000 {
			return 0, 0, false
		}
		f = int(binary.BigEndian.Uint16(b[34:])) - sport
		return f, int(binary.BigEndian.Uint32(b[42:])), f >= 0 && f < flows
	}

	var (
		sent, back [flows]int // per flow: frames sent, and received back in order
		ringOf     [flows]int // the RX ring a flow came back on, -1 before
		perRing    [testpmdQueues]int
		inFlight   int
	)
	for f := range ringOf {
		ringOf[f] = -1
	}
	bufs := make([][]byte, testpmdQueueSize)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	total := 0
	deadline := time.Now().Add(60 * time.Second)
	for total < flows*each {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s, %d of %d frames came back; per flow sent %v, back %v\ntestpmd:\n%s", total, flows*each, sent, back, tp.Output())
		}
		moved := false
		for k := range testpmdQueues {
			g.Use(k)
			var batch [][]byte
			for f := k; f < flows && inFlight+len(batch) < window; f += testpmdQueues {
				if sent[f] < each {
					batch = append(batch, frame(f, sent[f]))
				}
			}
			n := g.Send(batch, nil)
			for _, b := range batch[:n] {
				f, _, _ := flowOf(b)
				sent[f]++
			}
			inFlight += n
			moved = moved || n > 0
		}
		for k := range testpmdQueues {
			g.Use(k)
			n := g.Receive(bufs, sizes, nil)
			g.PostRX(n)
			for i := range n {
				f, seq, ok := flowOf(bufs[i][:sizes[i]])
				if !ok {
					continue
				}
				if ringOf[f] < 0 {
					ringOf[f] = k
				} else if ringOf[f] != k {
					t.Fatalf("flow %d came back on RX rings %d and %d", f, ringOf[f], k)
				}
				if seq != back[f] {
					t.Fatalf("flow %d (TX ring %d, RX ring %d): frame %d came back after %d: out of order or lost", f, f%testpmdQueues, k, seq, back[f]-1)
				}
				back[f]++
				perRing[k]++
				inFlight--
				total++
			}
			moved = moved || n > 0
		}
		if !moved {
			time.Sleep(time.Millisecond) // pacing while frames are on the way, not synchronisation
		}
	}
	t.Logf("%d frames of %d flows came back in order; per RX ring %v", total, flows, perRing)
	for k, n := range perRing {
		if n == 0 {
			t.Errorf("RX ring %d got none of the %d flows", k, flows)
		}
	}

	mark := len(tp.Output())
	command("stop")
	if !waitFor(30*time.Second, func() bool { return strings.Contains(tp.Output()[mark:], "\nDone.") }) {
		t.Fatalf("testpmd did not report its stats within 30 s of stop:\n%s", tp.Output())
	}
	out := tp.Output()[mark:]
	streams := testpmdStreamRE.FindAllStringSubmatch(out, -1)
	if len(streams) != testpmdQueues {
		t.Fatalf("testpmd reported %d forwarding streams, want %d:\n%s", len(streams), testpmdQueues, out)
	}
	for _, m := range streams {
		if m[5] == "0" || m[6] == "0" {
			t.Errorf("testpmd port %s queue %s carried no frames: received %s, sent %s", m[1], m[2], m[5], m[6])
		}
	}
	command("quit")
	if err := tp.Wait(30 * time.Second); err != nil {
		t.Errorf("testpmd quit: %v", err)
	}
}

// waitQueuesSpread waits until the daemon's log shows n multi-queue ports
// with their queue pairs spread over both loops, when the suite runs the
// switch with two (testbed.WorkersEnv); with one, it checks none was.
func waitQueuesSpread(t *testing.T, d *daemon, n int) {
	t.Helper()
	spread := func() map[string]string {
		ports := map[string]string{}
		for _, r := range d.Log() {
			if r["msg"] == "queue pairs spread over workers" {
				ports[r["port"]] = r["workers"]
			}
		}
		return ports
	}
	if w, _ := strconv.Atoi(os.Getenv(testbed.WorkersEnv)); w < 2 {
		if got := spread(); len(got) != 0 {
			t.Fatalf("queue pairs spread with one loop: %v", got)
		}
		return
	}
	var got map[string]string
	if !waitFor(15*time.Second, func() bool {
		got = spread()
		both := 0
		for _, w := range got {
			if strings.Contains(w, "0") && strings.Contains(w, "1") {
				both++
			}
		}
		return both >= n
	}) {
		t.Fatalf("with %s=2, %d ports' queue pairs not spread over both loops within 15 s: %v\nvknetd:\n%s",
			testbed.WorkersEnv, n, got, d.Stderr())
	}
	t.Logf("queue pairs spread over loops, by port: %v", got)
}
