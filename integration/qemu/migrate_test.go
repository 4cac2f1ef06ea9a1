//go:build linux

package qemu_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
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
	// migrationDowntime is QEMU's downtime-limit for the tests' migrations.
	migrationDowntime = 100 * time.Millisecond
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
# the host serves plain TCP, read with nc until the host closes and summed
# as it comes (kept in memory it would only dirty more pages to migrate).
if get=$(arg get) && [ -n "$get" ]; then
	echo "VKT-SUM $(nc ${get%:*} ${get#*:} </dev/null | sha256sum | cut -d' ' -f1)"
fi
while :; do sleep 3600; done
`

// layeredInitrd is the migration guest's image: migrationInit as /init.
func layeredInitrd(t *testing.T, dir string) string {
	return layerInitrd(t, dir, "initrd-migration", "init", migrationInit)
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
// user's group, and what the guests share. stream is the socket the next
// QEMU started connects to.
type migrationLab struct {
	ns     *testbed.Netns
	dir    string
	stream string
	daemon *testbed.Daemon
	initrd string
	// download: the guests fetch the host's download (serveDownload).
	download bool
	// qemu is the QEMU binary that runs the guests (migrationQEMU).
	qemu string
	// vhost, when set, is the daemon's --vhost-user socket, which the next
	// QEMU started uses instead of stream (its RAM then shared).
	vhost string
}

// startSwitch starts vknetd in ns on address with args, its stream socket
// in dir, and returns it with the socket's path.
func startSwitch(t *testing.T, ns *testbed.Netns, dir, name, address string, args ...string) (*testbed.Daemon, string) {
	t.Helper()
	stream := filepath.Join(dir, name+".stream")
	d := ns.StartDaemon(t, vknetd, testbed.DaemonConfig{
		Sock: filepath.Join(dir, name), Pidfile: filepath.Join(dir, name+".pid"),
		Group: strconv.Itoa(socketGroup),
		Args:  append(append([]string{"--stream", stream}, args...), address),
		Ready: 15 * time.Second,
	})
	waitUntil(t, 15*time.Second, "vknetd to create its stream socket", d.Proc, func() bool { return exists(stream) })
	return d, stream
}

func newMigrationLab(t *testing.T) *migrationLab {
	t.Helper()
	needGuests(t)
	testbed.RequireTool(t, "setpriv")
	l := &migrationLab{ns: testbed.NewNetns(t), dir: testbed.ShortTempDir(t), qemu: migrationQEMU(t)}
	// Other users traverse the directory to reach the socket and write
	// their QEMU's files in it.
	if err := os.Chmod(l.dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	l.daemon, l.stream = startSwitch(t, l.ns, l.dir, "vknet", hostNet, "-t", tapName,
		"--vhost-user", filepath.Join(l.dir, "vknet.vhost"))
	l.initrd = layeredInitrd(t, l.dir)
	return l
}

// startQEMU starts one QEMU of the chain, named name: with incoming, it
// waits for a migration on the unix socket of that name. asUser runs it as
// otherUID.
func (l *migrationLab) startQEMU(t *testing.T, name string, incoming, asUser bool) (*testbed.Proc, string) {
	t.Helper()
	params := []string{"vkt.ip=" + migrationIP}
	if l.download {
		params = append(params, fmt.Sprintf("vkt.get=%s:%d", hostIP, downloadPort))
	}
	netdev := "stream,id=n0,server=off,addr.type=unix,addr.path=" + l.stream
	if l.vhost != "" {
		netdev = "vhost-user,id=n0,chardev=c0"
	}
	args := qemuArgs(netdev, migrationGuest, l.vhost != "", params)
	args[0] = l.qemu
	if l.vhost != "" {
		// Shared RAM, which the switch maps; QEMU migrates it with the
		// switch's dirty log. No reconnect=: a chardev that may reconnect
		// waits for its connection before QEMU starts.
		args = append(args, "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-numa", "node,memdev=mem",
			"-chardev", "socket,id=c0,path="+l.vhost)
	}
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
// returns once the migration completed, with how long it took in all and
// the downtime QEMU reports (the guest stopped on both sides).
func migrate(t *testing.T, l *migrationLab, src *qmp, dst string) (took, downtime time.Duration) {
	t.Helper()
	mig := filepath.Join(l.dir, dst+".mig")
	waitUntil(t, 20*time.Second, "the destination's migration socket", l.daemon.Proc, func() bool { return exists(mig) })
	// QEMU stops the guest for the last round once what is left fits its
	// downtime limit (default 300 ms) at the rate it measured: the guest
	// is unreachable that long whatever the switch does. A management
	// layer that wants short gaps sets it, as here: the gap measured is
	// then that downtime plus what the switch adds.
	src.do(t, "migrate-set-parameters", map[string]any{"downtime-limit": migrationDowntime.Milliseconds()})
	start := time.Now()
	src.do(t, "migrate", map[string]any{"uri": "unix:" + mig})
	for {
		var st struct {
			Status   string `json:"status"`
			Error    string `json:"error-desc"`
			Downtime int64  `json:"downtime"` // ms
		}
		json.Unmarshal(src.do(t, "query-migrate", nil), &st)
		switch st.Status {
		case "completed":
			return time.Since(start), time.Duration(st.Downtime) * time.Millisecond
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

// stop ends the pings and returns when each reply came, and when the
// pings ended.
func (p *pinger) stop(t *testing.T) (replies []time.Time, end time.Time) {
	t.Helper()
	end = time.Now()
	p.p.Signal(os.Interrupt)
	p.p.Wait(5 * time.Second)
	for _, line := range strings.Split(p.p.Output(), "\n") {
		if !strings.Contains(line, "bytes from") || !strings.HasPrefix(line, "[") {
			continue
		}
		ts, _, _ := strings.Cut(line[1:], "]")
		secs, err := strconv.ParseFloat(ts, 64)
		if err != nil {
			continue
		}
		replies = append(replies, time.Unix(0, int64(secs*1e9)))
	}
	return replies, end
}

// longestGap is the longest time without a reply that ends after from, the
// end counted as a reply: a guest that no longer answers has the gap
// since its last reply.
func longestGap(replies []time.Time, end, from time.Time) time.Duration {
	var longest time.Duration
	for i := 1; i <= len(replies); i++ {
		at := end
		if i < len(replies) {
			at = replies[i]
		}
		if at.After(from) && at.Sub(replies[i-1]) > longest {
			longest = at.Sub(replies[i-1])
		}
	}
	return longest
}

// move migrates the guest from src to the QEMU listening as dst while p
// pings it, has src quit after pause, and judges the gaps in the replies.
// The switch-over's gap, from the source's stop on (the reported downtime
// before QEMU said it completed, and the 20 ms the test polls), is the one
// the switch answers for: at most maxPingGap. Before it, while QEMU copies
// memory, a guest under TCG on a loaded machine may answer late by itself
// (up to 0.26 s was seen as QEMU started a vhost-user migration); that is
// only required to stay under a second.
func move(t *testing.T, l *migrationLab, p *pinger, src *qmp, dst, what string, pause time.Duration) {
	t.Helper()
	took, down := migrate(t, l, src, dst)
	stopped := time.Now().Add(-down - 20*time.Millisecond)
	time.Sleep(pause)
	src.do(t, "quit", nil)
	time.Sleep(time.Second)
	replies, end := p.stop(t)
	all, switchOver := longestGap(replies, end, time.Time{}), longestGap(replies, end, stopped)
	t.Logf("%s: migration %v (downtime %v); longest ping gap %v at the switch-over, %v in all (%d replies)",
		what, took.Round(time.Millisecond), down, switchOver.Round(time.Millisecond), all.Round(time.Millisecond), len(replies))
	if switchOver > maxPingGap {
		t.Errorf("%s: longest ping gap at the switch-over %v, want at most %v", what, switchOver.Round(time.Millisecond), maxPingGap)
	}
	if all > time.Second {
		t.Errorf("%s: longest ping gap %v, want under a second", what, all.Round(time.Millisecond))
	}
}

// download serves the guest a paced stream of random bytes over TCP until
// stop is closed, and says what it sent. The pace is low, 50 KB/s in 1 KiB
// writes: with QEMU 7.2 under TCG, migrations during a 400-800 KB/s
// download left the destination's guest kernel corrupt in about a third of
// runs (list_add corruption, general protection faults, page faults in the
// scheduler and the network stack, or a silent hang), with the same guest
// on private memory and -netdev stream, where nothing but QEMU writes it;
// at 50 KB/s, and with pings alone, none did.
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
	l.download = true
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
		chunk := make([]byte, 1<<10)
		rng := rand.NewChaCha8([32]byte{18})
		tick := time.NewTicker(20 * time.Millisecond)
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

// migrateTwice boots the guest on QEMU A and moves it to B (A quits at
// once), then to C (B stays paused 3 s before it quits), while the host
// pings it and it downloads dl. It checks the ping gaps and the download,
// and returns C with its QMP socket and the daemon's move lines.
func migrateTwice(t *testing.T, l *migrationLab, dl *download) (*testbed.Proc, string, []string) {
	t.Helper()
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
	move(t, l, l.ping(t), qa, "b", "A to B, source quit at once", 0)
	t.Logf("%d bytes downloaded so far", dl.bytes())
	qb := dialQMP(t, bQMP, b)

	// B to C, B stays paused for 3 s before it quits.
	c, cQMP := l.startQEMU(t, "c", true, false)
	move(t, l, l.ping(t), qb, "c", "B to C, source paused 3 s", 3*time.Second)

	// The download ran across both migrations; it ends, and the guest's
	// checksum must be the server's.
	close(dl.stop)
	out := c.WaitOutput(t, "VKT-SUM", 60*time.Second)
	// The serial console delivers the line in pieces: wait for its end,
	// or a sum cut short would read as a corrupt download.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out[strings.Index(out, "VKT-SUM"):], "\n") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		out = c.Output()
	}
	var gotSum string
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "VKT-SUM "); i >= 0 {
			fmt.Sscanf(line[i:], "VKT-SUM %s", &gotSum)
		}
	}
	dl.mu.Lock()
	if dl.err != nil || gotSum != dl.sum {
		t.Errorf("the download across the migrations: the guest's sha256 is %s; the host sent %d bytes, sha256 %s (error %v)",
			gotSum, dl.sent, dl.sum, dl.err)
	} else {
		t.Logf("downloaded %d bytes across two migrations, sha256 matches", dl.sent)
	}
	dl.mu.Unlock()

	// The paused source's port holds the VM until the move; the source
	// that quit may have closed its port before the destination spoke,
	// which frees the MAC without a move.
	lines := moveLines(l.daemon)
	if len(lines) < 1 || len(lines) > 2 {
		t.Errorf("the daemon logged %d moves, want 1 or 2: %q", len(lines), lines)
	}
	for _, line := range lines {
		t.Log(line)
	}

	return c, cQMP, lines
}

// migrationQEMU is the QEMU that migrates the Linux guests:
// VKNETD_MIGRATION_QEMU, which make test sets from
// scripts/qemu-migration.sh (QEMU 8 or later: the machine's own, or
// Debian 12's backport of QEMU 10 fetched beside it). Without it the test
// skips. QEMU 7.2 under TCG corrupts a migrated Linux guest's memory now
// and then: on 2026-12-07 the destination's kernel crashed a few seconds
// after the switch-over in 1 of 6 to 5 of 13 runs (a page fault in kernel
// text, "kernel BUG at mm/slub.c", list_add corruption), over -netdev
// stream too, where the switch never touches guest memory, and also with
// the guest left to settle 10 s before it moved. With QEMU 10.0 the three
// migration tests passed 20 runs in a row. The firmware guest's migration
// (TestQEMUMigration in vhostuser) runs on the machine's QEMU.
func migrationQEMU(t *testing.T) string {
	t.Helper()
	q := os.Getenv("VKNETD_MIGRATION_QEMU")
	if q == "" {
		t.Skip("VKNETD_MIGRATION_QEMU is not set: make test sets it to a QEMU 8 or later from scripts/qemu-migration.sh (QEMU 7.2 under TCG corrupts migrated guests; see migrationQEMU)")
	}
	return q
}

func TestStreamGuestMigratesWithItsAddress(t *testing.T) {
	l := newMigrationLab(t)
	dl := l.serveDownload(t)

	c, cQMP, lines := migrateTwice(t, l, dl)

	// C to D, D run by another user: its announcement is refused while C,
	// paused, still holds the VM, and the host no longer reaches the guest.
	_, _ = l.startQEMU(t, "d", true, true)
	qc := dialQMP(t, cQMP, c)
	_, _ = migrate(t, l, qc, "d")
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
	if got := cnt.Global["mac_moves"]; got != strconv.Itoa(len(lines)) {
		t.Errorf("mac_moves = %q after another user's announcement, want the %d moves before it", got, len(lines))
	}
}

// The same moves for a vhost-user guest, whose RAM the switch writes: the
// download across the migrations holds only if the switch's dirty log
// (vhostuser) made QEMU copy every page it wrote. The source's rings are
// stopped at the switch-over, so the destination's first frame moves the
// MAC.
func TestVhostUserGuestMigratesWithItsAddress(t *testing.T) {
	l := newMigrationLab(t)
	l.vhost = filepath.Join(l.dir, "vknet.vhost")
	dl := l.serveDownload(t)
	migrateTwice(t, l, dl)
	for _, line := range moveLines(l.daemon) {
		if !strings.Contains(line, "old device stopped") && !strings.Contains(line, "old port closing") {
			t.Errorf("a vhost-user guest moved for another reason than its stopped device: %s", line)
		}
	}
}

// Across hosts (--vxlan): host A's and host B's switches, each in secure
// mode in a namespace of its own, joined by VXLAN over a veth underlay.
// The guest moves from a QEMU on A to one on B (the source left paused
// 3 s) and back to a new one on A (the source quit at once), while host A
// pings it every 20 ms: B's switch takes the MAC from its TAP on the
// guest's announcement, A's TAP takes it from the paused local port, and
// back again.
func TestStreamGuestMigratesAcrossHosts(t *testing.T) {
	qemu := migrationQEMU(t)
	needGuests(t)
	testbed.RequireTool(t, "bridge")
	dir := testbed.ShortTempDir(t)
	ha, hb := testbed.NewNetns(t), testbed.NewNetns(t)
	for _, h := range []*testbed.Netns{ha, hb} {
		h.DisableIPv6(t)
	}
	const underlayA, underlayB = "198.19.0.1", "198.19.0.2"
	ha.Run(t, "ip", "link", "add", "vkmu0", "mtu", "1550", "type", "veth", "peer", "name", "vkmu1", "mtu", "1550", "netns", hb.Name)
	ha.Run(t, "ip", "addr", "add", underlayA+"/24", "dev", "vkmu0")
	ha.Run(t, "ip", "link", "set", "vkmu0", "up")
	hb.Run(t, "ip", "addr", "add", underlayB+"/24", "dev", "vkmu1")
	hb.Run(t, "ip", "link", "set", "vkmu1", "up")
	da, streamA := startSwitch(t, ha, dir, "hosta", hostNet, "--vxlan", "42", "--vxlan-remote", underlayB)
	db, streamB := startSwitch(t, hb, dir, "hostb", "198.18.0.2/16", "--vxlan", "42", "--vxlan-remote", underlayA)
	l := &migrationLab{ns: ha, dir: dir, stream: streamA, daemon: da, initrd: layeredInitrd(t, dir), qemu: qemu}

	a, aQMP := l.startQEMU(t, "xa", false, false)
	a.WaitOutput(t, "VKT-UP", guestTimeout)
	qa := dialQMP(t, aQMP, a)

	l.stream = streamB
	b, bQMP := l.startQEMU(t, "xb", true, false)
	move(t, l, l.ping(t), qa, "xb", "host A to host B, source paused 3 s, pinged from host A", 3*time.Second)
	qb := dialQMP(t, bQMP, b)

	l.stream = streamA
	_, _ = l.startQEMU(t, "xc", true, false)
	move(t, l, l.ping(t), qb, "xc", "host B back to host A, source quit at once, pinged from host A", 0)
	for _, d := range []*testbed.Daemon{da, db} {
		for _, line := range moveLines(d) {
			t.Log(line)
		}
	}
	// Host A: its TAP takes the MAC from the paused port, then its new
	// port from the TAP. Host B learned the MAC on its TAP only if the
	// guest flooded a frame there before it came.
	if na, nb := len(moveLines(da)), len(moveLines(db)); na != 2 || nb > 2 {
		t.Errorf("moves logged: host A %d, want 2; host B %d, want at most 2", na, nb)
	}
}
