//go:build linux

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
)

// The probes of issue 7 (hardening), rerun from outside: clients of
// unprivileged users in the socket's group, an attacking user and a victim
// user side by side.

// nogroup is the socket's group in these tests: a group that exists on
// every Debian machine and that no test user belongs to by default.
const nogroup = 65534

var (
	attackerUser = testbed.User{UID: 4242, GID: 4242, Groups: []int{nogroup}}
	victimUser   = testbed.User{UID: 4343, GID: 4343, Groups: []int{nogroup}}
)

// userDaemon starts vknetd with its socket in a directory other users may
// traverse and the socket's group nogroup, so unprivileged clients of that
// group can connect.
func userDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	dir := testbed.ShortTempDir(t)
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	ns := testbed.NewNetns(t)
	return startDaemon(t, ns, testbed.DaemonConfig{
		Sock:  filepath.Join(dir, "vknet"),
		Group: "nogroup",
		Args:  args,
	})
}

func dialAs(t *testing.T, d *daemon, u testbed.User, mac [6]byte) *rawClient {
	t.Helper()
	return &rawClient{SeqpacketClient: testbed.DialSeqpacketAs(t, d.Sock, u), t: t, mac: mac}
}

// Finding 3: one user's connections, each sending from as many MACs as a
// port may hold, used to fill the table; a victim user's VMs arriving
// afterwards were never learned and their unicast reached every one of the
// attacker's ports.
func TestUserCannotFillTheMACTableForOthers(t *testing.T) {
	needRoot(t)
	const tagUnicast = 0x301
	d := userDaemon(t, "--mac-max", "64", "--port-macs", "16", "--user-macs", "16", "198.18.0.1/16")
	var attackers []*rawClient
	for i := 0; i < 4; i++ {
		c := dialAs(t, d, attackerUser, testMAC(0))
		attackers = append(attackers, c)
		for m := 0; m < 16; m++ {
			c.send(rawFrame(testbed.Broadcast, [6]byte{0x02, 0xaa, 0, 0, byte(i), byte(m)}, 0x300, uint32(m)))
		}
	}
	// Wait until the switch has seen every attacking frame: 16 MACs
	// learned, the other 48 refused for the user's limit.
	if !waitFor(5*time.Second, func() bool {
		refused := 0
		for _, p := range d.Counters(t).Ports {
			if p["drop_user-mac-limit"] != "" {
				refused += int(p.Uint(t, "drop_user-mac-limit"))
			}
		}
		return refused == 48
	}) {
		t.Fatalf("the attacker's frames were not refused for --user-macs; log:\n%s", d.Stderr())
	}
	a := dialAs(t, d, victimUser, testMAC(0xa))
	b := dialAs(t, d, victimUser, testMAC(0xb))
	a.send(rawFrame(testbed.Broadcast, a.mac, 0x302, 0))
	b.expect(0x302, 3*time.Second)
	b.send(rawFrame(testbed.Broadcast, b.mac, 0x303, 0))
	a.expect(0x303, 3*time.Second)
	a.send(rawFrame(b.mac, a.mac, tagUnicast, 0))
	b.expect(tagUnicast, 3*time.Second)
	// The barrier: a broadcast sent after the unicast reaches every
	// attacker port after the unicast would have.
	a.send(rawFrame(testbed.Broadcast, a.mac, 0x304, 0))
	for _, c := range attackers {
		c.expectNoneUntil(tagUnicast, 0x304)
	}
}

// Finding 4: a client that sends one frame and closes at once lost it
// when the switch had traffic queued for it (about 50 of 200 arrived with
// another client broadcasting every 0.5 ms).
func TestFramesSentJustBeforeCloseArrive(t *testing.T) {
	needRoot(t)
	const rounds = 200
	d := userDaemon(t, "-U")
	recv := dialAs(t, d, victimUser, testMAC(1))
	noisy := dialAs(t, d, attackerUser, testMAC(2))
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for seq := uint32(0); !stop.Load(); seq++ {
			noisy.TrySend(rawFrame(testbed.Broadcast, noisy.mac, 0x401, seq))
			time.Sleep(500 * time.Microsecond)
		}
	}()
	got := map[uint32]bool{}
	var gotMu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			f, err := recv.recv(100 * time.Millisecond)
			if err != nil || f == nil {
				continue
			}
			if tag, seq, ok := marker(f); ok && tag == 0x402 {
				gotMu.Lock()
				got[seq] = true
				gotMu.Unlock()
			}
		}
	}()
	for i := 0; i < rounds; i++ {
		c := testbed.DialSeqpacketAs(t, d.Sock, victimUser)
		if err := c.TrySend(rawFrame(recv.mac, testMAC(3), 0x402, uint32(i))); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		c.Close()
	}
	waitFor(5*time.Second, func() bool {
		gotMu.Lock()
		defer gotMu.Unlock()
		return len(got) == rounds
	})
	stop.Store(true)
	wg.Wait()
	if len(got) != rounds {
		t.Fatalf("%d of %d frames sent just before closing arrived", len(got), rounds)
	}
}

// Finding 5: a client looping on connect and close, or on connections the
// daemon refuses, wrote one log line per attempt.
func TestConnectLoopsCannotFloodTheLog(t *testing.T) {
	needRoot(t)
	const attempts = 1000
	d := userDaemon(t, "--user-clients", "2", "198.18.0.1/16")
	// The attacker holds its two clients for the whole test.
	testbed.DialSeqpacketAs(t, d.Sock, attackerUser)
	testbed.DialSeqpacketAs(t, d.Sock, attackerUser)
	start := time.Now()
	for i := 0; i < attempts; i++ {
		// Refused (the user is at --user-clients) and closed by the daemon.
		testbed.DialSeqpacketAs(t, d.Sock, attackerUser).Close()
		// Accepted and closed by the client.
		testbed.DialSeqpacketAs(t, d.Sock, victimUser).Close()
	}
	// The victim's last connect and close get logged in the end (or are
	// counted as suppressed): wait until the daemon has seen them all.
	time.Sleep(500 * time.Millisecond)
	elapsed := time.Since(start)
	// The burst, then two lines a second per kind.
	limit := 32 + int(2*elapsed.Seconds()) + 2
	for _, msg := range []string{"client refused", "client connected", "client disconnected"} {
		if n := d.countLog(msg); n > limit {
			t.Errorf("%d attempts in %v wrote %d %q lines; want at most %d", attempts, elapsed.Round(time.Millisecond), n, msg, limit)
		} else if n == 0 {
			t.Errorf("no %q line at all: the brake must let the first ones through", msg)
		}
	}
	d.requireRunning()
}

// Item 8: a datagram client whose path the daemon, running as --user,
// cannot reach is logged with that reason and what to do, not closed with
// a bare "client disconnected".
func TestDgramClientUnreachableByUserIsExplained(t *testing.T) {
	needRoot(t)
	dir := testbed.ShortTempDir(t)
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	dgram := filepath.Join(dir, "vknet.dgram")
	d := startDaemon(t, testbed.NewNetns(t), testbed.DaemonConfig{
		Sock:  filepath.Join(dir, "vknet"),
		Group: "nogroup",
		Args:  []string{"--user", "nobody", "--dgram", dgram, "-U"},
	})
	// The guest's socket sits in a directory only root may enter.
	private := testbed.ShortTempDir(t) // mode 0700, root's
	local := filepath.Join(private, "vm.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: local}); err != nil {
		t.Fatal(err)
	}
	frame := rawFrame(testbed.Broadcast, testMAC(7), 0x801, 0)
	if err := unix.Sendto(fd, frame, 0, &unix.SockaddrUnix{Name: dgram}); err != nil {
		t.Fatalf("sending to the datagram listener: %v", err)
	}
	r := d.waitLog(5*time.Second, "datagram client refused")
	if !strings.Contains(r["err"], "cannot reach") || !strings.Contains(r["hint"], "uid 65534") {
		t.Fatalf("the refusal should say the daemon cannot reach the path and name its uid: %v", r)
	}
	if n := d.countLog("client connected"); n != 0 {
		t.Fatalf("the unreachable client was made a port: %d connects logged", n)
	}
}
