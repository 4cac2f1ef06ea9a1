package qemu_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// Live migration (issue 18): a guest moves between QEMU processes while the
// host pings it every 20 ms, and its MAC and address bindings follow it to
// the destination's port in secure mode. The longest gap between replies
// must stay within maxPingGap, whether the source quits at once or stays
// paused for 3 s, as a management layer leaves it while it confirms.
//
// One guest boots once and migrates down a chain of QEMU processes, which
// keeps the test to one TCG boot: A to B (source quits at once), B to C
// (source left paused 3 s), then C to D, a QEMU run by another user, whose
// announcement must be refused while C still holds the VM. A download into
// the guest runs across the first two migrations and is checked by sha256.

const (
	maxPingGap     = 250 * time.Millisecond
	pingInterval   = "0.02"
	migrationGuest = "52:54:00:76:6b:41"
	migrationIP    = "198.18.0.41"
	otherUID       = 4242
	socketGroup    = 65534 // nogroup: the daemon's --group, which the other user has
	downloadPort   = 8087
)

// migrationInit replaces the test guest's /init (scripts/qemu-guest.sh) in an
// initramfs layered on the cached one: a static address instead of DHCP, so
// that it is up sooner, and a download from the host whose checksum it prints.
const migrationInit = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
arg() {
	for w in $(cat /proc/cmdline); do
		case $w in "vkt.$1="*) echo "${w#*=}"; return ;; esac
	done
}
while read -r m; do insmod "/lib/modules/$m"; done </etc/modules
echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up
ip addr add "$(arg ip)/16" dev eth0
echo "VKT-UP $(arg ip)"
# busybox's wget looks the port up by name, which a static binary cannot:
# the host serves plain TCP, read with nc until the host closes.
if get=$(arg get) && [ -n "$get" ]; then
	if nc ${get%:*} ${get#*:} </dev/null >/tmp/blob; then
		echo "VKT-SUM $(sha256sum </tmp/blob | cut -d' ' -f1) $(wc -c </tmp/blob)"
	else
		echo "VKT-GET-FAIL"
	fi
fi
while :; do sleep 3600; done
`

// layeredInitrd writes the cached initramfs followed by a second archive
// holding only /init: the kernel unpacks both, the later file replacing the
// earlier, so the shared image is left as it is.
func layeredInitrd(t *testing.T, dir string) string {
	t.Helper()
	base, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	zw := gzip.NewWriter(&layer)
	writeCpio(zw, "init", 0o100755, []byte(migrationInit))
	writeCpio(zw, "TRAILER!!!", 0, nil)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "initrd-migration")
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

// qmp is a QEMU Machine Protocol connection.
type qmp struct {
	c net.Conn
	r *bufio.Reader
}

func dialQMP(t *testing.T, path string, p *testbed.Proc) *qmp {
	t.Helper()
	var c net.Conn
	waitUntil(t, 20*time.Second, "QEMU's QMP socket "+path, p, func() bool {
		var err error
		c, err = net.Dial("unix", path)
		return err == nil
	})
	q := &qmp{c: c, r: bufio.NewReader(c)}
	t.Cleanup(func() { c.Close() })
	if _, err := q.r.ReadBytes('\n'); err != nil { // the greeting
		t.Fatalf("QMP %s: %v", path, err)
	}
	q.do(t, "qmp_capabilities", nil)
	return q
}

// do runs a command and returns its "return" value, skipping events.
func (q *qmp) do(t *testing.T, cmd string, args any) json.RawMessage {
	t.Helper()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	q.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		t.Fatalf("QMP %s: %v", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("QMP %s: %v", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Desc string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			t.Fatalf("QMP %s: %v in %q", cmd, err, line)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			t.Fatalf("QMP %s: %s", cmd, resp.Error.Desc)
		}
		return resp.Return
	}
}

// migrationLab is the switch in secure mode, its socket open to the other
// user's group, and what the guests share.
type migrationLab struct {
	ns     *testbed.Netns
	dir    string
	stream string
	daemon *testbed.Daemon
	initrd string
}

func newMigrationLab(t *testing.T) *migrationLab {
	t.Helper()
	needGuests(t)
	testbed.RequireTool(t, "setpriv")
	l := &migrationLab{ns: testbed.NewNetns(t), dir: testbed.ShortTempDir(t)}
	// Other users traverse the directory to reach the socket and write
	// their QEMU's files in it.
	if err := os.Chmod(l.dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	l.stream = filepath.Join(l.dir, "vknet.stream")
	l.daemon = l.ns.StartDaemon(t, vknetd, testbed.DaemonConfig{
		Sock: filepath.Join(l.dir, "vknet"), Pidfile: filepath.Join(l.dir, "vknetd.pid"),
		Group: strconv.Itoa(socketGroup),
		Args:  []string{"-t", tapName, "--stream", l.stream, hostNet},
		Ready: 15 * time.Second,
	})
	waitUntil(t, 15*time.Second, "vknetd to create its stream socket", l.daemon.Proc, func() bool { return exists(l.stream) })
	l.initrd = layeredInitrd(t, l.dir)
	return l
}

// startQEMU starts one QEMU of the chain, named name: with incoming, it
// waits for a migration on the unix socket of that name. asUser runs it as
// otherUID.
func (l *migrationLab) startQEMU(t *testing.T, name string, incoming, asUser bool) (*testbed.Proc, string) {
	t.Helper()
	args := qemuArgs("stream,id=n0,server=off,addr.type=unix,addr.path="+l.stream, migrationGuest, false,
		[]string{"vkt.ip=" + migrationIP, fmt.Sprintf("vkt.get=%s:%d", hostIP, downloadPort)})
	for i := range args {
		if args[i] == "-initrd" {
			args[i+1] = l.initrd
		}
	}
	qmpPath := filepath.Join(l.dir, name+".qmp")
	args = append(args, "-qmp", "unix:"+qmpPath+",server=on,wait=off")
	if incoming {
		args = append(args, "-incoming", "unix:"+filepath.Join(l.dir, name+".mig"))
	}
	if asUser {
		args = append([]string{"setpriv", "--reuid", strconv.Itoa(otherUID), "--regid", strconv.Itoa(otherUID),
			"--groups", strconv.Itoa(socketGroup)}, args...)
	}
	return testbed.NewNetns(t).Start(t, args...), qmpPath
}

// migrate moves the guest from src to the QEMU listening as dst and
// returns once the migration completed.
func migrate(t *testing.T, l *migrationLab, src *qmp, dst string) time.Duration {
	t.Helper()
	mig := filepath.Join(l.dir, dst+".mig")
	waitUntil(t, 20*time.Second, "the destination's migration socket", l.daemon.Proc, func() bool { return exists(mig) })
	start := time.Now()
	src.do(t, "migrate", map[string]any{"uri": "unix:" + mig})
	for {
		var st struct {
			Status string `json:"status"`
			Error  string `json:"error-desc"`
		}
		json.Unmarshal(src.do(t, "query-migrate", nil), &st)
		switch st.Status {
		case "completed":
			return time.Since(start)
		case "failed", "cancelled":
			t.Fatalf("migration to %s %s: %s", dst, st.Status, st.Error)
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("migration to %s not complete within 60s (status %q)", dst, st.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pinger pings the guest from the host every 20 ms.
type pinger struct{ p *testbed.Proc }

func (l *migrationLab) ping(t *testing.T) *pinger {
	t.Helper()
	p := &pinger{l.ns.Start(t, "ping", "-n", "-D", "-i", pingInterval, "-W", "1", migrationIP)}
	waitUntil(t, 10*time.Second, "the guest to answer the host's pings", p.p, func() bool {
		return strings.Contains(p.p.Output(), "bytes from")
	})
	return p
}

// stop ends the pings and returns the longest time without a reply, the
// end counted as one: a guest that no longer answers has the gap since
// its last reply.
func (p *pinger) stop(t *testing.T) (longest time.Duration, replies int) {
	t.Helper()
	end := time.Now()
	p.p.Signal(os.Interrupt)
	p.p.Wait(5 * time.Second)
	var last time.Time
	for _, line := range strings.Split(p.p.Output(), "\n") {
		if !strings.Contains(line, "bytes from") || !strings.HasPrefix(line, "[") {
			continue
		}
		ts, _, _ := strings.Cut(line[1:], "]")
		secs, err := strconv.ParseFloat(ts, 64)
		if err != nil {
			continue
		}
		at := time.Unix(0, int64(secs*1e9))
		if !last.IsZero() && at.Sub(last) > longest {
			longest = at.Sub(last)
		}
		last = at
		replies++
	}
	if gap := end.Sub(last); gap > longest {
		longest = gap
	}
	return longest, replies
}

// download serves the guest a paced stream of random bytes over TCP until
// stop is closed, and says what it sent.
type download struct {
	stop    chan struct{}
	mu      sync.Mutex
	sent    int
	sum     string
	started chan struct{}
	err     error
}

func (l *migrationLab) serveDownload(t *testing.T) *download {
	t.Helper()
	d := &download{stop: make(chan struct{}), started: make(chan struct{})}
	var ln net.Listener
	if err := l.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", hostIP, downloadPort))
		return err
	}); err != nil {
		t.Fatalf("listening for the guest's download: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		close(d.started)
		h := sha256.New()
		chunk := make([]byte, 8<<10)
		rng := rand.NewChaCha8([32]byte{18})
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-d.stop:
				d.mu.Lock()
				d.sum = hex.EncodeToString(h.Sum(nil))
				d.mu.Unlock()
				return
			case <-tick.C:
			}
			rng.Read(chunk)
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write(chunk); err != nil {
				d.mu.Lock()
				d.err = err
				d.mu.Unlock()
				return
			}
			h.Write(chunk)
			d.mu.Lock()
			d.sent += len(chunk)
			d.mu.Unlock()
		}
	}()
	return d
}

func (d *download) bytes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sent
}

// moveLines returns the daemon's "MAC moved" log lines.
func moveLines(d *testbed.Daemon) []string {
	var out []string
	for _, line := range strings.Split(d.Stderr(), "\n") {
		if strings.Contains(line, "MAC moved") {
			out = append(out, line)
		}
	}
	return out
}

func TestStreamGuestMigratesWithItsAddress(t *testing.T) {
	l := newMigrationLab(t)
	dl := l.serveDownload(t)

	a, aQMP := l.startQEMU(t, "a", false, false)
	a.WaitOutput(t, "VKT-UP", guestTimeout)
	select {
	case <-dl.started:
	case <-time.After(30 * time.Second):
		t.Fatalf("the guest did not start its download:\n%s", a.Output())
	}
	qa := dialQMP(t, aQMP, a)

	// A to B, A quits at once.
	b, bQMP := l.startQEMU(t, "b", true, false)
	p := l.ping(t)
	took := migrate(t, l, qa, "b")
	qa.do(t, "quit", nil)
	time.Sleep(time.Second)
	gap, n := p.stop(t)
	t.Logf("A to B, source quit at once: migration %v, longest ping gap %v (%d replies), %d bytes downloaded so far",
		took.Round(time.Millisecond), gap.Round(time.Millisecond), n, dl.bytes())
	if gap > maxPingGap {
		t.Errorf("source quit at once: longest ping gap %v, want at most %v", gap.Round(time.Millisecond), maxPingGap)
	}
	qb := dialQMP(t, bQMP, b)

	// B to C, B stays paused for 3 s before it quits.
	c, cQMP := l.startQEMU(t, "c", true, false)
	p = l.ping(t)
	took = migrate(t, l, qb, "c")
	time.Sleep(3 * time.Second)
	qb.do(t, "quit", nil)
	time.Sleep(500 * time.Millisecond)
	gap, n = p.stop(t)
	t.Logf("B to C, source paused 3 s: migration %v, longest ping gap %v (%d replies)",
		took.Round(time.Millisecond), gap.Round(time.Millisecond), n)
	if gap > maxPingGap {
		t.Errorf("source paused 3 s: longest ping gap %v, want at most %v", gap.Round(time.Millisecond), maxPingGap)
	}

	// The download ran across both migrations; it ends, and the guest's
	// checksum must be the server's.
	close(dl.stop)
	out := c.WaitOutput(t, "VKT-SUM", 60*time.Second)
	var gotSum string
	var gotLen int
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "VKT-SUM "); i >= 0 {
			fmt.Sscanf(line[i:], "VKT-SUM %s %d", &gotSum, &gotLen)
		}
	}
	dl.mu.Lock()
	if dl.err != nil || gotSum != dl.sum || gotLen != dl.sent {
		t.Errorf("the download across the migrations: the guest has %d bytes, sha256 %s; the host sent %d, sha256 %s (error %v)",
			gotLen, gotSum, dl.sent, dl.sum, dl.err)
	} else {
		t.Logf("downloaded %d bytes across two migrations, sha256 matches", gotLen)
	}
	dl.mu.Unlock()

	lines := moveLines(l.daemon)
	if len(lines) != 2 {
		t.Errorf("the daemon logged %d moves, want 2: %q", len(lines), lines)
	}
	for _, line := range lines {
		t.Log(line)
	}

	// C to D, D run by another user: its announcement is refused while C,
	// paused, still holds the VM, and the host no longer reaches the guest.
	_, _ = l.startQEMU(t, "d", true, true)
	qc := dialQMP(t, cQMP, c)
	migrate(t, l, qc, "d")
	time.Sleep(time.Second)
	if ok, out := l.ns.Ping(t, migrationIP, 2); ok {
		t.Errorf("the host reaches the guest that another user's QEMU took over:\n%s", out)
	}
	cnt := l.daemon.Counters(t)
	refused := 0
	for _, p := range cnt.Ports {
		if p["uid"] == strconv.Itoa(otherUID) || strings.Contains(p["name"], fmt.Sprintf("uid %d", otherUID)) {
			refused, _ = strconv.Atoi(p["drop_src-mac-in-use"])
		}
	}
	if refused == 0 {
		t.Errorf("no src-mac-in-use drop on the other user's port: %v", cnt.Ports)
	}
	if got := cnt.Global["mac_moves"]; got != "2" {
		t.Errorf("mac_moves = %q after another user's announcement, want 2", got)
	}
}
