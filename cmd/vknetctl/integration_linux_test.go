package main

// Integration tests: a real vknetd in a network namespace of its own, Go
// SEQPACKET clients sending frames, and the vknetctl binary asked about
// them, its pcap read back by tcpdump.

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/internal/testbed"
)

var bins struct {
	once             sync.Once
	dir              string
	vknetd, vknetctl string
	err              error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// binaries builds vknetd and vknetctl from the working tree once per test
// binary, into a directory other users may enter (the refusal test runs
// vknetctl as nobody).
func binaries(t *testing.T) (vknetd, vknetctl string) {
	t.Helper()
	testbed.RequireRoot(t)
	bins.once.Do(func() {
		root, err := testbed.ModuleRoot()
		if err != nil {
			bins.err = err
			return
		}
		if bins.dir, bins.err = os.MkdirTemp("", "vknetctl-it-"); bins.err != nil {
			return
		}
		if bins.err = os.Chmod(bins.dir, 0o755); bins.err != nil {
			return
		}
		for _, b := range []struct {
			out *string
			pkg string
		}{{&bins.vknetd, "./cmd/vknetd"}, {&bins.vknetctl, "./cmd/vknetctl"}} {
			*b.out = filepath.Join(bins.dir, filepath.Base(b.pkg))
			cmd := exec.Command("go", "build", "-o", *b.out, b.pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.vknetd, bins.vknetctl
}

// testSwitch is a daemon in its own namespace, IPv6 off so that its TAP
// stays quiet and every frame counted is one a test sent.
type testSwitch struct {
	*testbed.Daemon
	ctl      string // the control socket
	vknetctl string
}

func startSwitch(t *testing.T, args ...string) *testSwitch {
	t.Helper()
	vknetd, vknetctl := binaries(t)
	ns := testbed.NewNetns(t)
	ns.DisableIPv6(t)
	d := ns.StartDaemon(t, vknetd, testbed.DaemonConfig{Args: args})
	return &testSwitch{Daemon: d, ctl: d.Sock + ".ctl", vknetctl: vknetctl}
}

// ctl runs vknetctl against the switch and returns stdout, stderr and the
// exit status.
func (s *testSwitch) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(s.vknetctl, append([]string{"--socket", s.ctl}, args...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("vknetctl %s hung; stderr: %s", strings.Join(args, " "), errOut.String())
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// jsonOf runs vknetctl --json and decodes what it printed into v.
func (s *testSwitch) jsonOf(t *testing.T, v any, args ...string) {
	t.Helper()
	out, errOut, code := s.run(t, append([]string{"--json"}, args...)...)
	if code != 0 {
		t.Fatalf("vknetctl --json %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("vknetctl --json %s printed something that is not its JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !ok(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	macA = testbed.MAC(0x0a)
	macB = testbed.MAC(0x0b)
	ipA  = netip.MustParseAddr("198.18.0.10")
	ipB  = netip.MustParseAddr("198.18.0.11")
)

func macStr(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

func TestListingsMatchWhatClientsSent(t *testing.T) {
	sw := startSwitch(t, "198.18.0.1/16")
	a := testbed.DialSeqpacket(t, sw.Sock)
	b := testbed.DialSeqpacket(t, sw.Sock)

	var bytesA, bytesB uint64
	for i := 0; i < 3; i++ {
		f := testbed.IPv4UDP(macA, macB, ipA, ipB, 4000, 5000, make([]byte, 100*i))
		a.Send(t, f)
		bytesA += uint64(len(f))
		b.Expect(t, 2*time.Second)
	}
	for i := 0; i < 5; i++ {
		f := testbed.IPv4UDP(macB, macA, ipB, ipA, 5000, 4000, make([]byte, 50*i+7))
		b.Send(t, f)
		bytesB += uint64(len(f))
		a.Expect(t, 2*time.Second)
	}

	var st control.Stats
	sw.jsonOf(t, &st, "stats")
	if st.Clients != 2 || st.ClientsByKind["seqpacket"] != 2 || st.Accepted != 2 ||
		st.Traffic.Clients.RxFrames != 8 || st.Traffic.Clients.RxBytes != bytesA+bytesB ||
		st.Traffic.Clients.TxFrames < 8 || st.Monitors != 0 || st.MACs < 2 || st.Buffers == 0 || len(st.Drops) != 0 {
		t.Fatalf("stats --json: %+v\nwant 2 seqpacket clients that sent 8 frames, %d bytes, nothing dropped", st, bytesA+bytesB)
	}

	var macs []control.MAC
	sw.jsonOf(t, &macs, "macs")
	portOf := map[string]control.MAC{}
	for _, m := range macs {
		portOf[m.MAC] = m
	}
	ma, mb := portOf[macStr(macA)], portOf[macStr(macB)]
	if ma.Kind != "seqpacket" || mb.Kind != "seqpacket" || ma.Port == mb.Port || ma.PID != int32(os.Getpid()) || ma.AgeSecs > 60 {
		t.Fatalf("macs --json: %+v\nwant %s and %s on two seqpacket ports of pid %d", macs, macStr(macA), macStr(macB), os.Getpid())
	}

	var ports []control.Port
	sw.jsonOf(t, &ports, "ports")
	byID := map[uint32]control.Port{}
	kinds := map[string]int{}
	for _, p := range ports {
		byID[p.ID] = p
		kinds[p.Kind]++
	}
	if kinds["tap"] != 1 || kinds["seqpacket"] != 2 || len(ports) != 3 {
		t.Fatalf("ports --json lists %v, want the TAP and two seqpacket clients", kinds)
	}
	for _, c := range []struct {
		port            control.Port
		rxFrames, rxB   uint64
		minTx           uint64
		name, otherName string
	}{{byID[ma.Port], 3, bytesA, 5, "a", "b"}, {byID[mb.Port], 5, bytesB, 3, "b", "a"}} {
		p := c.port
		if p.RxFrames != c.rxFrames || p.RxBytes != c.rxB || p.TxFrames < c.minTx || p.MACs != 1 ||
			p.PID != int32(os.Getpid()) || p.UID != 0 || len(p.Drops) != 0 {
			t.Errorf("client %s's port: %+v\nwant rx %d frames %d bytes, at least %d frames from %s, 1 MAC, pid %d uid 0, no drops",
				c.name, p, c.rxFrames, c.rxB, c.minTx, c.otherName, os.Getpid())
		}
	}

	var bindings []control.Binding
	sw.jsonOf(t, &bindings, "bindings")
	want := []control.Binding{{IP: ipA.String(), MAC: macStr(macA), Port: ma.Port, Source: "first-use"},
		{IP: ipB.String(), MAC: macStr(macB), Port: mb.Port, Source: "first-use"}}
	for i := range bindings {
		// Just used: it ends a --mac-age from now unless used again.
		if e := bindings[i].ExpiresSecs; e <= 0 || e > 300 {
			t.Errorf("binding %s expires in %vs, want (0, 300]", bindings[i].IP, e)
		}
		bindings[i].ExpiresSecs = 0
	}
	if fmt.Sprint(bindings) != fmt.Sprint(want) {
		t.Fatalf("bindings --json: %+v, want %+v", bindings, want)
	}
	out, _, code := sw.run(t, "bindings")
	line := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(ipA.String()) + ` ` + macStr(macA) + ` port ` + strconv.Itoa(int(ma.Port)) + ` first-use expires \d+m?\d*s$`)
	if code != 0 || !line.MatchString(out) {
		t.Fatalf("vknetctl bindings (exit %d):\n%s\nwant a line matching %s", code, out, line)
	}

	// The text forms carry the same facts.
	out, _, code = sw.run(t, "macs")
	line = regexp.MustCompile(`(?m)^` + macStr(macA) + ` port ` + strconv.Itoa(int(ma.Port)) + ` seqpacket pid ` + strconv.Itoa(os.Getpid()) + ` age \d+s$`)
	if code != 0 || !line.MatchString(out) {
		t.Fatalf("vknetctl macs (exit %d):\n%s\nwant a line matching %s", code, out, line)
	}
	out, _, code = sw.run(t, "ports")
	if code != 0 || !strings.HasPrefix(out, "PORT  KIND") || strings.Count(out, "\n") != 4 || !strings.Contains(out, sw.TAP) {
		t.Fatalf("vknetctl ports (exit %d):\n%s", code, out)
	}
	out, _, code = sw.run(t, "stats")
	if code != 0 || !regexp.MustCompile(`all clients\s+rx 8 frames `+strconv.FormatUint(bytesA+bytesB, 10)+` bytes`).MatchString(out) {
		t.Fatalf("vknetctl stats (exit %d):\n%s", code, out)
	}
}

// sentFrame is a frame a test sent and whether the switch floods it.
type sentFrame struct {
	src, dst [6]byte
	len      int
	flooded  bool
}

func TestMonitorPcapShowsExactlyTheTraffic(t *testing.T) {
	testbed.RequireTool(t, "tcpdump")
	sw := startSwitch(t, "-U")
	a := testbed.DialSeqpacket(t, sw.Sock)
	b := testbed.DialSeqpacket(t, sw.Sock)
	dir := testbed.ShortTempDir(t)
	allPcap, floodPcap := filepath.Join(dir, "all.pcap"), filepath.Join(dir, "flood.pcap")

	mirror := sw.Netns.StartSplit(t, sw.vknetctl, "--socket", sw.ctl, "monitor", "--all", "-w", allPcap)
	floods := sw.Netns.StartSplit(t, sw.vknetctl, "--socket", sw.ctl, "monitor")
	// vknetd -c is an ordinary client: it sees what is flooded, like the
	// flood-only monitor, and writes it with -w.
	client := sw.Netns.StartSplit(t, bins.vknetd, "-c", "-p", sw.Sock, "-w", floodPcap)
	waitFor(t, "two monitors and the -c client attached", 5*time.Second, func() bool {
		var ports []control.Port
		sw.jsonOf(t, &ports, "ports")
		kinds := map[string]int{}
		for _, p := range ports {
			kinds[p.Kind]++
		}
		return kinds["monitor"] == 2 && kinds["seqpacket"] == 3
	})

	unknown, mcast := testbed.MAC(0x99), [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
	frame := func(dst, src [6]byte, n int) []byte {
		payload := make([]byte, n)
		return testbed.EthernetFrame(dst, src, 0x88b5, payload) // IEEE local experimental: the TAP ignores it
	}
	var sent []sentFrame
	send := func(from, to *testbed.SeqpacketClient, src, dst [6]byte, n int, flooded bool) {
		f := frame(dst, src, n)
		from.Send(t, f)
		// Waiting for delivery orders the frames and makes sure the switch
		// learned each source before the next frame relies on it.
		to.Expect(t, 2*time.Second)
		sent = append(sent, sentFrame{src, dst, len(f), flooded})
	}
	send(a, b, macA, testbed.Broadcast, 46, true)
	send(b, a, macB, testbed.Broadcast, 60, true)
	send(a, b, macA, macB, 100, false) // learned unicast: never flooded
	send(b, a, macB, macA, 200, false)
	send(a, b, macA, unknown, 300, true)
	send(b, a, macB, mcast, 400, true)
	nFlooded := 0
	for _, s := range sent {
		if s.flooded {
			nFlooded++
		}
	}

	waitFor(t, "the --all monitor's pcap holds every frame", 5*time.Second, func() bool { return pcapCount(allPcap) == len(sent) })
	waitFor(t, "vknetd -c's pcap holds the flooded frames", 5*time.Second, func() bool { return pcapCount(floodPcap) == nFlooded })
	waitFor(t, "the flood monitor printed the flooded frames", 5*time.Second, func() bool {
		return strings.Count(floods.Stdout(), "\n") >= nFlooded
	})
	// A little longer: anything extra would show now.
	time.Sleep(300 * time.Millisecond)
	for _, c := range []*testbed.Proc{mirror, floods, client} {
		c.Signal(syscall.SIGINT)
		if err := c.Wait(5 * time.Second); err != nil {
			t.Fatalf("%s after SIGINT: %v (want exit 0)", strings.Join(c.Cmd.Args, " "), err)
		}
	}

	var want, wantFlooded []sentFrame
	for _, s := range sent {
		want = append(want, s)
		if s.flooded {
			wantFlooded = append(wantFlooded, s)
		}
	}
	checkPcap(t, allPcap, want)
	checkPcap(t, floodPcap, wantFlooded)

	lines := strings.Split(strings.TrimSpace(floods.Stdout()), "\n")
	if len(lines) != nFlooded {
		t.Fatalf("flood-only monitor printed %d lines, want %d:\n%s", len(lines), nFlooded, floods.Stdout())
	}
	for i, s := range wantFlooded {
		if !strings.Contains(lines[i], " "+macStr(s.src)+" > "+macStr(s.dst)+" ") {
			t.Errorf("flood monitor line %d: %q, want %s > %s", i, lines[i], macStr(s.src), macStr(s.dst))
		}
	}
	if strings.Contains(floods.Stdout(), macStr(macA)+" > "+macStr(macB)) {
		t.Errorf("the flood-only monitor saw learned unicast:\n%s", floods.Stdout())
	}
}

// pcapCount is how many complete frames tcpdump reads from path so far.
func pcapCount(path string) int {
	lines, err := tcpdumpFrames(path)
	if err != nil {
		return -1
	}
	return len(lines)
}

// tcpdumpFrames is tcpdump -r's one line per frame, without the hex dump
// it adds below frames of an ethertype it does not know.
func tcpdumpFrames(path string) ([]string, error) {
	out, err := exec.Command("tcpdump", "-r", path, "-n", "-e").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("tcpdump -r %s: %v\n%s", path, err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l != "" && !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, "reading from file") {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

var tcpdumpLine = regexp.MustCompile(`^\S+ ([0-9a-f:]{17}) > ([0-9a-f:]{17}), ethertype Unknown \(0x88b5\), length (\d+):`)

func checkPcap(t *testing.T, path string, want []sentFrame) {
	t.Helper()
	lines, err := tcpdumpFrames(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != len(want) {
		t.Fatalf("tcpdump -r %s shows %d frames, want exactly %d:\n%s", path, len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		m := tcpdumpLine.FindStringSubmatch(lines[i])
		if m == nil || m[1] != macStr(w.src) || m[2] != macStr(w.dst) || m[3] != strconv.Itoa(w.len) {
			t.Errorf("tcpdump -r %s frame %d: %q, want %s > %s length %d", path, i, lines[i], macStr(w.src), macStr(w.dst), w.len)
		}
	}
}

func TestNonMemberIsRefused(t *testing.T) {
	testbed.RequireTool(t, "setpriv")
	sw := startSwitch(t, "-U") // --group root: uid 65534 is not in it
	// Let uid 65534 reach the socket file, so what refuses it is the socket.
	if err := os.Chmod(filepath.Dir(sw.ctl), 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func(groups string, args ...string) (string, int) {
		cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", groups, sw.vknetctl, "--socket", sw.ctl}, args...)...)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := asNobody("--clear-groups", "ports")
	if code != 1 || !strings.Contains(out, sw.ctl) || !strings.Contains(out, "permission denied") || !strings.Contains(out, "usermod -aG") {
		t.Fatalf("nobody without the group: exit %d, %q; want 1 and a message naming the socket and the fix", code, out)
	}
	// Member through a supplementary group: in.
	if out, code := asNobody("--groups=0", "stats"); code != 0 || !strings.Contains(out, "all clients") {
		t.Fatalf("nobody in the socket's group: exit %d, %q; want the stats", code, out)
	}
	// Past a socket file opened to everyone by mistake, the daemon's own
	// check still refuses, and says why.
	if err := os.Chmod(sw.ctl, 0o666); err != nil {
		t.Fatal(err)
	}
	out, code = asNobody("--clear-groups", "monitor", "--all")
	if code != 1 || !strings.Contains(out, "uid 65534 is neither root nor in group root") || !strings.Contains(out, sw.ctl) {
		t.Fatalf("nobody past a 0666 socket: exit %d, %q; want the daemon's refusal", code, out)
	}
	// The daemon logs before it answers, but its stderr reaches the test
	// through a pipe and a reader goroutine, which may lag behind.
	waitFor(t, "the daemon logs the refusal", 2*time.Second, func() bool {
		return strings.Contains(sw.Stderr(), "control socket: refused")
	})
}

func TestMetricsScrapedInsideTheNamespace(t *testing.T) {
	fetch := fetcher(t)
	const addr = "127.0.0.1:9477"
	sw := startSwitch(t, "-U", "--metrics", addr)
	a := testbed.DialSeqpacket(t, sw.Sock)
	b := testbed.DialSeqpacket(t, sw.Sock)
	var sentBytes int
	for i := 0; i < 4; i++ {
		f := testbed.EthernetFrame(testbed.Broadcast, macA, 0x88b5, make([]byte, 46+i))
		a.Send(t, f)
		b.Expect(t, 2*time.Second)
		sentBytes += len(f)
	}
	body := sw.Netns.Run(t, append(fetch, "http://"+addr+"/metrics")...)
	for _, w := range []string{
		`vknetd_frames_total{direction="rx",side="clients"} 4`,
		`vknetd_bytes_total{direction="rx",side="clients"} ` + strconv.Itoa(sentBytes),
		`vknetd_frames_total{direction="tx",side="clients"} 4`,
		`vknetd_clients{kind="seqpacket"} 2`,
		`vknetd_clients_accepted_total 2`,
		`vknetd_drops_total{reason="tx-queue-full"} 0`,
		`vknetd_monitors 0`,
		"# TYPE vknetd_frames_total counter",
	} {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("metrics lack %q", w)
		}
	}
	if t.Failed() {
		t.Fatalf("metrics:\n%s", body)
	}

	// A second daemon asking for the same address is refused before it
	// creates anything, with the flag named.
	dir := testbed.ShortTempDir(t)
	_, err := sw.Netns.TryStartDaemon(t, bins.vknetd, testbed.DaemonConfig{
		Sock: filepath.Join(dir, "vknet"), Pidfile: filepath.Join(dir, "pid"), Args: []string{"-U", "--metrics", addr}})
	se, ok := err.(*testbed.StartError)
	if !ok || se.Code != 1 || !strings.Contains(se.Stderr, "--metrics "+addr) || !strings.Contains(se.Stderr, "pick another port") {
		t.Fatalf("second daemon on %s: %v; want exit 1 naming --metrics", addr, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("the refused daemon left %v behind", left)
	}
}

// fetcher is an HTTP GET command from Debian's packages: curl, wget or
// busybox's wget.
func fetcher(t *testing.T) []string {
	for _, c := range [][]string{{"curl", "-sSf"}, {"wget", "-q", "-O", "-"}, {"busybox", "wget", "-q", "-O", "-"}} {
		if _, err := exec.LookPath(c[0]); err == nil {
			return c
		}
	}
	t.Skip("needs curl, wget or busybox to scrape the metrics: apt-get install curl")
	return nil
}

func TestControlSocketLifecycle(t *testing.T) {
	sw := startSwitch(t, "-U")
	if fi, err := os.Stat(sw.ctl); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("control socket %s: %v %v; want a socket with mode 0660", sw.ctl, fi.Mode(), err)
	}
	// A second daemon pointed at a live control socket is refused and
	// leaves it alone.
	dir := testbed.ShortTempDir(t)
	_, err := sw.Netns.TryStartDaemon(t, bins.vknetd, testbed.DaemonConfig{
		Sock: filepath.Join(dir, "vknet"), Pidfile: filepath.Join(dir, "pid"), Args: []string{"-U", "--control", sw.ctl}})
	se, ok := err.(*testbed.StartError)
	if !ok || se.Code != 1 || !strings.Contains(se.Stderr, sw.ctl+" (--control)") {
		t.Fatalf("second daemon on a live control socket: %v; want exit 1 naming the path and --control", err)
	}
	if _, _, code := sw.run(t, "stats"); code != 0 {
		t.Fatal("the first daemon's control socket stopped answering")
	}
	// SIGTERM removes it with the other sockets.
	if err := sw.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sw.ctl); !os.IsNotExist(err) {
		t.Fatalf("control socket still there after SIGTERM: %v", err)
	}

	// A stale control socket (its daemon killed) is replaced.
	stale := filepath.Join(dir, "stale.ctl")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	d := sw.Netns.StartDaemon(t, bins.vknetd, testbed.DaemonConfig{
		Sock: filepath.Join(dir, "vknet"), Pidfile: filepath.Join(dir, "pid"), Args: []string{"-U", "--control", stale}})
	s2 := &testSwitch{Daemon: d, ctl: stale, vknetctl: sw.vknetctl}
	if _, errOut, code := s2.run(t, "ports"); code != 0 {
		t.Fatalf("daemon on a stale control socket: vknetctl exit %d: %s", code, errOut)
	}
}
