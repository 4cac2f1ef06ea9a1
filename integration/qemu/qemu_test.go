package qemu_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/internal/testbed"
)

const (
	hostIP  = "198.18.0.1"
	hostNet = hostIP + "/16"
	tapName = "vkt-q0"
	// DHCP hands out this range; fixed leases (dnsmasq --dhcp-host) lie outside it.
	rangeLo, rangeHi = "198.18.0.50", "198.18.0.99"

	// A TCG boot takes 5-20 s on a busy two-core machine; the margin is for a
	// machine busier still, and costs nothing when the guest is quick.
	guestTimeout = 120 * time.Second
	// How long a guest keeps answering pings after its own, so that its peer (which
	// may boot later) and the host can ping it. The test stops it sooner.
	holdSeconds = 100
)

// lab is one vknetd with its stream and dgram listeners, and dnsmasq serving DHCP
// on its TAP, all in a namespace of their own.
type lab struct {
	ns      *testbed.Netns
	dir     string
	stream  string
	dgram   string
	vhost   string
	daemon  *testbed.Daemon
	dnsmasq *testbed.Proc
	// initrd, when set, is the image guests boot instead of the cached one.
	initrd string
}

// newLab starts the switch in secure mode and dnsmasq on its TAP. fixed maps guest
// MACs to the addresses dnsmasq must give them, so that guests know each other's.
func newLab(t *testing.T, fixed map[string]string) *lab {
	t.Helper()
	return newLabWith(t, labOptions{fixed: fixed})
}

// labOptions are newLab's choices beyond the fixed addresses.
type labOptions struct {
	fixed map[string]string
	// daemonArgs go on vknetd's command line before the network.
	daemonArgs []string
	// leaseTime is dnsmasq's lease time (default 10m; dnsmasq's least is 2m).
	leaseTime string
	// binary is the vknetd to run, when not the one TestMain built.
	binary string
}

func newLabWith(t *testing.T, o labOptions) *lab {
	t.Helper()
	needGuests(t)
	l := &lab{ns: testbed.NewNetns(t), dir: testbed.ShortTempDir(t)}
	leaseTime := o.leaseTime
	if leaseTime == "" {
		leaseTime = "10m"
	}
	l.stream = filepath.Join(l.dir, "vknet.stream")
	l.dgram = filepath.Join(l.dir, "vknet.dgram")
	l.vhost = filepath.Join(l.dir, "vknet.vhost")
	binary := vknetd
	if o.binary != "" {
		binary = o.binary
	}
	l.daemon = l.ns.StartDaemon(t, binary, testbed.DaemonConfig{
		Sock: filepath.Join(l.dir, "vknet"), Pidfile: filepath.Join(l.dir, "vknetd.pid"),
		Args: append(append([]string{"-t", tapName, "--stream", l.stream, "--dgram", l.dgram, "--vhost-user", l.vhost},
			o.daemonArgs...), hostNet),
		Ready: 15 * time.Second,
	})
	if l.daemon.TAP != tapName {
		t.Fatalf("vknetd printed %q, want its TAP %s", l.daemon.TAP, tapName)
	}
	waitUntil(t, 15*time.Second, "vknetd to create its sockets", l.daemon.Proc, func() bool {
		return exists(l.stream) && exists(l.dgram) && exists(l.vhost)
	})

	args := []string{"dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface=" + tapName, "--bind-interfaces", "--dhcp-authoritative",
		// Without it dnsmasq pings an address for up to 3 s before offering it.
		"--no-ping",
		"--dhcp-range=" + rangeLo + "," + rangeHi + ",255.255.0.0," + leaseTime,
		"--dhcp-leasefile=" + filepath.Join(l.dir, "leases"),
		"--pid-file=" + filepath.Join(l.dir, "dnsmasq.pid")}
	for mac, ip := range o.fixed {
		testbed.CheckAddr(t, ip)
		args = append(args, "--dhcp-host="+mac+","+ip)
	}
	l.dnsmasq = l.ns.Start(t, args...)
	l.dnsmasq.WaitOutput(t, "DHCP, IP range", 10*time.Second)
	return l
}

// guest is one QEMU attached to the lab's switch.
type guest struct {
	name    string
	mac     string
	p       *testbed.Proc
	started time.Time
}

// transport is how a guest reaches the switch.
type transport int

const (
	overStream transport = iota
	overDgram
	overVhostUser
	// overVhostUserMQ is vhost-user with 4 queue pairs (queues=4,
	// mq=on) and 4 vCPUs, so that Linux enables all 4 pairs.
	overVhostUserMQ
)

// mqPairs is overVhostUserMQ's queue pairs and vCPUs.
const mqPairs = 4

// boot starts a guest in a namespace of its own; params go on its kernel command
// line (see scripts/qemu-guest.sh for the vkt.* ones).
func (l *lab) boot(t *testing.T, name, mac string, tr transport, params ...string) *guest {
	t.Helper()
	var netdev string
	var extra []string
	switch tr {
	case overVhostUser, overVhostUserMQ:
		// The guest's RAM is shared with the switch, which maps it to
		// reach the virtio rings. vectors=0: QEMU 7.2 under TCG crashes in
		// msix_set_vector_notifiers when vhost starts with MSI-X.
		netdev = "vhost-user,id=n0,chardev=c0"
		extra = []string{"-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-numa", "node,memdev=mem",
			"-chardev", "socket,id=c0,reconnect=1,path=" + l.vhost}
		if tr == overVhostUserMQ {
			netdev += fmt.Sprintf(",queues=%d", mqPairs)
			extra = append(extra, "-smp", fmt.Sprint(mqPairs))
		}
	case overStream:
		netdev = "stream,id=n0,server=off,addr.type=unix,addr.path=" + l.stream
	case overDgram:
		netdev = "dgram,id=n0,local.type=unix,local.path=" + filepath.Join(l.dir, name+".sock") +
			",remote.type=unix,remote.path=" + l.dgram
	}
	if strings.Contains(l.dir, ",") {
		t.Fatalf("temporary directory %s has a comma, which QEMU's -netdev syntax cannot quote", l.dir)
	}
	g := &guest{name: name, mac: mac, started: time.Now()}
	args := qemuArgs(netdev, mac, tr == overVhostUser || tr == overVhostUserMQ, params)
	if tr == overVhostUserMQ {
		args[len(args)-1] += ",mq=on"
	}
	if l.initrd != "" {
		args[slices.Index(args, "-initrd")+1] = l.initrd
	}
	g.p = testbed.NewNetns(t).Start(t, append(args, extra...)...)
	return g
}

// qemuArgs is the whole QEMU command line; the README shows the same.
func qemuArgs(netdev, mac string, vhost bool, params []string) []string {
	device := "virtio-net-pci,netdev=n0,mac=" + mac + ",romfile="
	if vhost {
		device += ",vectors=0"
	}
	return []string{"qemu-system-x86_64",
		"-M", "q35", "-accel", "tcg", "-m", "256",
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet " + strings.Join(params, " "),
		"-netdev", netdev,
		// romfile= skips the PXE option ROM: the kernel is loaded directly.
		"-device", device,
	}
}

// wait returns the guest's report once it printed VKT-DONE, or an error when QEMU
// exited or deadline passed first. It never fails the test, so that a test can
// collect every guest's outcome before judging.
func (g *guest) wait(deadline time.Time) (report, error) {
	for {
		// Whole lines only while QEMU runs: the serial console delivers a
		// line in pieces, and "VKT-DONE 1.82" read before its "ok" would
		// be taken for a failure.
		out := g.p.Output()
		out = out[:strings.LastIndexByte(out, '\n')+1]
		if r := parseReport(out); r.done {
			r.wall = time.Since(g.started)
			return r, nil
		}
		select {
		case <-g.p.Done():
			if r := parseReport(g.p.Output()); r.done {
				r.wall = time.Since(g.started)
				return r, nil
			}
			return parseReport(g.p.Output()), fmt.Errorf("guest %s (%s): QEMU exited (%v) before VKT-DONE", g.name, g.mac, g.p.Wait(0))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return parseReport(out), fmt.Errorf("guest %s (%s): no VKT-DONE within %v", g.name, g.mac, time.Since(g.started).Round(time.Second))
		}
	}
}

// waitLine returns the first complete console line of the guest that
// holds marker, failing t if QEMU exits or deadline passes first.
func (g *guest) waitLine(t *testing.T, marker string, deadline time.Time) string {
	t.Helper()
	for {
		// The serial console delivers a line in pieces: whole lines only.
		out := g.p.Output()
		out = out[:strings.LastIndexByte(out, '\n')+1]
		if i := strings.Index(out, marker); i >= 0 {
			return strings.TrimSpace(out[i : i+strings.IndexByte(out[i:], '\n')])
		}
		select {
		case <-g.p.Done():
			t.Fatalf("guest %s (%s): QEMU exited (%v) before printing %q: %s", g.name, g.mac, g.p.Wait(0), marker, parseReport(g.p.Output()).summary())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest %s (%s): no %q within %v: %s", g.name, g.mac, marker, time.Since(g.started).Round(time.Second), parseReport(out).summary())
		}
	}
}

// check fails t unless the guest got a lease (want, or any in the DHCP range when
// want is empty) and every target answered its pings.
func (g *guest) check(t *testing.T, r report, err error, want string, targets ...string) {
	t.Helper()
	// Its console, and the daemon's and dnsmasq's output, are logged at cleanup.
	if err != nil {
		t.Errorf("%v; it printed: %s", err, r.summary())
		return
	}
	lo, hi := netip.MustParseAddr(rangeLo), netip.MustParseAddr(rangeHi)
	switch {
	case !r.lease.IsValid():
		t.Errorf("guest %s (%s) got no DHCP lease: %s", g.name, g.mac, r.summary())
		return
	case want != "" && r.lease.String() != want:
		t.Errorf("guest %s (%s) leased %v, want the fixed %s", g.name, g.mac, r.lease, want)
	case want == "" && (r.lease.Less(lo) || hi.Less(r.lease)):
		t.Errorf("guest %s (%s) leased %v, outside dnsmasq's range %s-%s", g.name, g.mac, r.lease, rangeLo, rangeHi)
	}
	pinged := true
	for _, target := range targets {
		if p, ok := r.pings[target]; !ok || !p.ok {
			t.Errorf("guest %s (%s) could not ping %s: %s", g.name, g.mac, target, r.summary())
			pinged = false
		}
	}
	if pinged && !r.ok {
		t.Errorf("guest %s (%s) reports failure: %s", g.name, g.mac, r.summary())
	}
	t.Logf("guest %s: %s; VKT-DONE %.1fs after QEMU started", g.name, r.summary(), r.wall.Seconds())
}

// stop ends a guest that holds on after its report.
func (g *guest) stop(t *testing.T) {
	t.Helper()
	if err := g.p.Stop(testbed.StopTimeout); err != nil {
		t.Errorf("stopping guest %s: %v", g.name, err)
	}
}

func hold() string { return fmt.Sprintf("vkt.hold=%d", holdSeconds) }

func TestStreamGuestLeasesAndPingsHost(t *testing.T) {
	l := newLab(t, nil)
	g := l.boot(t, "s1", "52:54:00:76:6b:01", overStream, "vkt.ping="+hostIP, hold())
	r, err := g.wait(time.Now().Add(guestTimeout))
	g.check(t, r, err, "", hostIP)
	if t.Failed() {
		return
	}
	// And the other way: the host reaches the guest through the TAP.
	if ok, out := l.ns.Ping(t, r.lease.String(), 2); !ok {
		t.Errorf("the host cannot ping guest s1 at %v over the stream listener:\n%s", r.lease, out)
	}
	g.stop(t)
}

func TestDgramGuestLeasesAndPingsHost(t *testing.T) {
	l := newLab(t, nil)
	g := l.boot(t, "d1", "52:54:00:76:6b:02", overDgram, "vkt.ping="+hostIP, hold())
	r, err := g.wait(time.Now().Add(guestTimeout))
	g.check(t, r, err, "", hostIP)
	if t.Failed() {
		return
	}
	if ok, out := l.ns.Ping(t, r.lease.String(), 2); !ok {
		t.Errorf("the host cannot ping guest d1 at %v over the dgram listener:\n%s", r.lease, out)
	}
	g.stop(t)
}

// Two guests, one on each listener, booted at once: each pings the host and the
// other by the address dnsmasq reserved for it.
func TestStreamAndDgramGuestsPingEachOther(t *testing.T) {
	const (
		macS, ipS = "52:54:00:76:6b:11", "198.18.0.11"
		macD, ipD = "52:54:00:76:6b:12", "198.18.0.12"
	)
	l := newLab(t, map[string]string{macS: ipS, macD: ipD})
	gs := l.boot(t, "s", macS, overStream, "vkt.ping="+hostIP+","+ipD, hold())
	gd := l.boot(t, "d", macD, overDgram, "vkt.ping="+hostIP+","+ipS, hold())
	deadline := time.Now().Add(guestTimeout)
	rs, errS := gs.wait(deadline)
	rd, errD := gd.wait(deadline)
	gs.check(t, rs, errS, ipS, hostIP, ipD)
	gd.check(t, rd, errD, ipD, hostIP, ipS)
	checkWorkers(t, l, 2)
	gs.stop(t)
	gd.stop(t)
}

// A guest on shared-memory virtio rings (vhost-user) beside a stream guest:
// it takes its lease from the host's dnsmasq in secure mode and each pings
// the host and the other.
func TestVhostUserGuestLeasesAndPingsHostAndStreamGuest(t *testing.T) {
	const (
		macV, ipV = "52:54:00:76:6b:21", "198.18.0.21"
		macS, ipS = "52:54:00:76:6b:22", "198.18.0.22"
	)
	l := newLab(t, map[string]string{macV: ipV, macS: ipS})
	gv := l.boot(t, "v", macV, overVhostUser, "vkt.ping="+hostIP+","+ipS, hold())
	gs := l.boot(t, "s", macS, overStream, "vkt.ping="+hostIP+","+ipV, hold())
	deadline := time.Now().Add(guestTimeout)
	rv, errV := gv.wait(deadline)
	rs, errS := gs.wait(deadline)
	gv.check(t, rv, errV, ipV, hostIP, ipS)
	gs.check(t, rs, errS, ipS, hostIP, ipV)
	if !t.Failed() {
		if ok, out := l.ns.Ping(t, ipV, 2); !ok {
			t.Errorf("the host cannot ping the vhost-user guest at %s:\n%s", ipV, out)
		}
	}
	checkWorkers(t, l, 2)
	// Linux's virtio-net driver takes the offloads the switch offers, so
	// its TCP superframes cross whole.
	for _, p := range l.daemon.Counters(t).Ports {
		if p["kind"] == "vhost-user" && !strings.Contains(p["offloads"], "tso4") {
			t.Errorf("the QEMU guest's port shows offloads %q, want TSO among them", p["offloads"])
		}
	}
	gv.stop(t)
	gs.stop(t)
}

// A Linux guest with 4 vCPUs on a vhost-user card with 4 queue pairs
// (queues=4, mq=on): Linux enables a pair per vCPU, and leases, pings the
// host and a stream guest, and is pinged by the host, its flows on
// whichever rings its CPUs and the flow hash pick. QEMU refused the
// netdev before the device offered multi-queue ("The maximum number of
// queues supported by the backend is 1"). Then it runs iperf3 with 4 TCP
// streams to the host and back (checkIperf): every stream gets through,
// over at least 2 of its TX rings and 2 of its RX rings, and at 2
// workers with its pairs spread over both loops throughout.
func TestVhostUserMultiQueueGuestLeasesAndPings(t *testing.T) {
	const (
		macV, ipV = "52:54:00:76:6b:41", "198.18.0.41"
		macS, ipS = "52:54:00:76:6b:42", "198.18.0.42"
	)
	l := newLab(t, map[string]string{macV: ipV, macS: ipS})
	params := []string{"vkt.ping=" + hostIP + "," + ipS, hold()}
	if noIperf == "" {
		params = append(params, "vkt.iperf="+hostIP, fmt.Sprintf("vkt.secs=%d", iperfSecs))
	}
	gv := l.boot(t, "v", macV, overVhostUserMQ, params...)
	gs := l.boot(t, "s", macS, overStream, "vkt.ping="+hostIP+","+ipV, hold())
	deadline := time.Now().Add(2 * guestTimeout) // 4 vCPUs under TCG boot slower
	spread := false
	if noIperf == "" {
		// The guest tries iperf3 until the server answers: at 2 workers
		// it answers once the guest's pairs are spread, so that the
		// streams run through both loops.
		gv.waitLine(t, "VKT-LEASE ", deadline)
		spread = checkQueuesSpread(t, l)
		srv := l.ns.Start(t, "iperf3", "-s", "-B", hostIP, "--forceflush")
		srv.WaitOutput(t, "Server listening", 10*time.Second)
	}
	rv, errV := gv.wait(deadline)
	rs, errS := gs.wait(deadline)
	gv.check(t, rv, errV, ipV, hostIP, ipS)
	gs.check(t, rs, errS, ipS, hostIP, ipV)
	if !t.Failed() {
		if ok, out := l.ns.Ping(t, ipV, 2); !ok {
			t.Errorf("the host cannot ping the multi-queue guest at %s:\n%s", ipV, out)
		}
	}
	checkWorkers(t, l, 2)
	t.Run("iperf3", func(t *testing.T) {
		if noIperf != "" {
			t.Skip(noIperf)
		}
		checkIperf(t, l, rv, spread)
	})
	if checkQueuesSpread(t, l) {
		// Through the rings as the loops serve them now.
		if ok, out := l.ns.Ping(t, ipV, 3); !ok {
			t.Errorf("the host cannot ping the multi-queue guest at %s once its pairs are spread:\n%s", ipV, out)
		}
	}
	gv.stop(t)
	gs.stop(t)
}

// iperfSecs is how long each iperf3 run of the multi-queue guest lasts:
// long enough for every stream to send under TCG, short for the suite.
const iperfSecs = 3

// checkIperf fails t unless the multi-queue guest's report r shows both
// iperf3 runs done, to the host and back, each of the 4 streams with
// data and a rate above 0 (TCP's checksums and order make it intact; the
// rate is never judged); unless the switch counted frames from at least
// 2 of the guest's TX rings and to at least 2 of its RX rings, with no
// drop but those of a receiver falling behind, which TCP makes good;
// and, when spread says its pairs were spread over the loops before the
// runs, unless they still are.
func checkIperf(t *testing.T, l *lab, r report, spread bool) {
	t.Helper()
	for _, dir := range []string{"to", "from"} {
		ir := r.iperf[dir]
		if ir == nil || !ir.done || !ir.ok {
			t.Errorf("iperf3 %s the host did not finish: %s", dir, r.summary())
			continue
		}
		streams := 0
		for _, st := range ir.streams {
			if st.amount <= 0 || st.kbits <= 0 {
				t.Errorf("iperf3 %s the host: stream %s got %g %s at %g Kbit/s", dir, st.id, st.amount, st.unit, st.kbits)
			}
			if st.id != "SUM" {
				streams++
			}
		}
		if streams != 4 {
			t.Errorf("iperf3 %s the host reported %d streams, want 4: %s", dir, streams, r.summary())
		}
	}
	c, err := control.Dial(l.daemon.Sock + ".ctl")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ports, err := c.Ports()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if p.Kind != "vhost-user" {
			continue
		}
		t.Logf("the guest's port: frames received by pair %v, sent by pair %v, loops %s, drops %v",
			p.RxQueues, p.TxQueues, p.Workers, p.Drops)
		if n := pairsUsed(p.RxQueues); n < 2 {
			t.Errorf("the switch received the guest's frames on %d of its TX rings, want 2 or more: %v", n, p.RxQueues)
		}
		if n := pairsUsed(p.TxQueues); n < 2 {
			t.Errorf("the switch sent the guest's frames on %d of its RX rings, want 2 or more: %v", n, p.TxQueues)
		}
		for reason, n := range p.Drops {
			switch reason {
			case "tx-queue-full", "pool-pressure", "no-buffer", "worker-ring-full":
				// A receiver behind: TCP sends again.
			default:
				t.Errorf("the guest's port dropped %d frames as %s", n, reason)
			}
		}
		if spread && !(strings.Contains(p.Workers, "0") && strings.Contains(p.Workers, "1")) {
			t.Errorf("the guest's pairs were gathered on loop %s during iperf3, want them spread over both", p.Workers)
		}
		return
	}
	t.Errorf("no vhost-user port listed: %+v", ports)
}

// pairsUsed is how many pairs of counts moved frames.
func pairsUsed(counts []uint64) int {
	n := 0
	for _, c := range counts {
		if c > 0 {
			n++
		}
	}
	return n
}

// checkQueuesSpread fails t unless, when the tests run the switch with
// more than one event loop (testbed.WorkersEnv), the daemon's log shows
// a guest's queue pairs spread over two loops within 20 s: the guest's 4
// vCPUs use its 4 pairs, and once its device is quiet for a second the
// switch serves them from both loops. It says whether they were to be.
func checkQueuesSpread(t *testing.T, l *lab) bool {
	t.Helper()
	if w, _ := strconv.Atoi(os.Getenv(testbed.WorkersEnv)); w < 2 {
		return false
	}
	var got []string
	spread := func() bool {
		got = got[:0]
		for _, r := range l.daemon.Log() {
			if r["msg"] == "queue pairs spread over workers" {
				got = append(got, r["workers"])
				if strings.Contains(r["workers"], "0") && strings.Contains(r["workers"], "1") {
					return true
				}
			}
		}
		return false
	}
	waitUntil(t, 20*time.Second, "the multi-queue guest's pairs spread over both loops", l.daemon.Proc, spread)
	t.Logf("queue pairs spread over loops %v", got)
	return true
}

// QEMU's reconnect= brings a vhost-user guest back after the daemon
// restarts: the new daemon's host reaches it again.
func TestVhostUserGuestSurvivesDaemonRestart(t *testing.T) {
	const macV, ipV = "52:54:00:76:6b:31", "198.18.0.31"
	l := newLab(t, map[string]string{macV: ipV})
	gv := l.boot(t, "v", macV, overVhostUser, "vkt.ping="+hostIP, hold())
	rv, errV := gv.wait(time.Now().Add(guestTimeout))
	gv.check(t, rv, errV, ipV, hostIP)
	if t.Failed() {
		return
	}
	if err := l.daemon.Stop(testbed.StopTimeout); err != nil {
		t.Fatalf("stopping vknetd: %v", err)
	}
	dir := l.dir
	again := l.ns.StartDaemon(t, vknetd, testbed.DaemonConfig{
		Sock: filepath.Join(dir, "vknet"), Pidfile: filepath.Join(dir, "vknetd.pid"),
		Args:  []string{"-t", tapName, "--stream", l.stream, "--dgram", l.dgram, "--vhost-user", l.vhost, hostNet},
		Ready: 15 * time.Second,
	})
	waitUntil(t, 20*time.Second, "QEMU to reconnect to the new daemon", again.Proc, func() bool {
		return strings.Contains(again.Stderr(), "kind=vhost-user")
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, out := l.ns.Ping(t, ipV, 1)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the host cannot ping the vhost-user guest at %s:\n%s\nvknetd:\n%s", ipV, out, again.Stderr())
		}
	}
	gv.stop(t)
}

// checkWorkers fails t unless the daemon's log shows at least clients
// clients connected and, when the tests run the switch with more than
// one event loop (testbed.WorkersEnv), not all on one loop: a guest's
// port goes to the loop with the fewest ports, so two guests share a
// loop only when placement is broken, and a test of them would check
// one loop alone.
func checkWorkers(t *testing.T, l *lab, clients int) {
	t.Helper()
	workers := map[string]int{}
	n := 0
	for _, r := range l.daemon.Log() {
		if r["msg"] == "client connected" {
			w := r["worker"]
			if w == "" {
				w = "0" // datagram clients are the first loop's, and the log does not say
			}
			workers[w]++
			n++
		}
	}
	if n < clients {
		t.Errorf("%d clients connected, want %d: %v", n, clients, workers)
		return
	}
	w, _ := strconv.Atoi(os.Getenv(testbed.WorkersEnv))
	t.Logf("%d clients on %d of %d loops: %v", n, len(workers), max(w, 1), workers)
	if w > 1 && len(workers) < 2 {
		t.Errorf("with %s=%d the %d clients all went to one loop: %v", testbed.WorkersEnv, w, n, workers)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// waitUntil polls cond until it holds, failing the test if p exits or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, p *testbed.Proc, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); {
		select {
		case <-p.Done():
			t.Fatalf("waiting for %s: it exited (%v):\n%s", what, p.Wait(0), p.Output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v; output:\n%s", what, timeout, p.Output())
		}
	}
}

// layerInitrd writes, as dir/name, the cached initramfs followed by a second
// archive holding only the script file: the kernel unpacks both, the later
// file replacing an earlier one of its name, so the shared image is left as
// it is.
func layerInitrd(t *testing.T, dir, name, file, script string) string {
	t.Helper()
	base, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	zw := gzip.NewWriter(&layer)
	writeCpio(zw, file, 0o100755, []byte(script))
	writeCpio(zw, "TRAILER!!!", 0, nil)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, append(base, layer.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeCpio writes one entry of a "newc" cpio archive, the format the
// kernel's initramfs takes.
func writeCpio(w io.Writer, name string, mode uint32, data []byte) {
	fields := []uint32{1, mode, 0, 0, 1, 0, uint32(len(data)), 0, 0, 0, 0, uint32(len(name) + 1), 0}
	var h strings.Builder
	h.WriteString("070701")
	for _, f := range fields {
		fmt.Fprintf(&h, "%08x", f)
	}
	h.WriteString(name)
	h.WriteByte(0)
	for h.Len()%4 != 0 {
		h.WriteByte(0)
	}
	io.WriteString(w, h.String())
	w.Write(data)
	w.Write(make([]byte, (4-len(data)%4)%4))
}
