//go:build linux

package secure

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
)

// The datagram-client attacks of issue 7, from outside: the attacker is an
// unprivileged user in the switch's group (uid attackerUID), and a victim
// user (uid victimUID) is a client beside it. Each runs this test binary
// in probe mode (runDgramProbe) under its own credentials, in the daemon's
// network namespace (abstract socket names belong to one).

const (
	vknetGID    = 4300 // the daemon's --group
	attackerUID = 4242
	victimUID   = 4343
	probeEnv    = "VKNETD_DGRAM_PROBE"
)

// dgramDaemon is a secure-mode vknetd with a --dgram listener, its sockets
// in a directory others may enter, given to group vknetGID.
func dgramDaemon(t *testing.T) (d *daemon, dir, dgram string) {
	t.Helper()
	testbed.RequireRoot(t)
	testbed.RequireTool(t, "ip")
	dir = testbed.ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dgram = filepath.Join(dir, "vknet.dgram")
	ns := testbed.NewNetns(t)
	ns.DisableIPv6(t)
	p := ns.StartDaemon(t, vknetd, testbed.DaemonConfig{
		Sock:    filepath.Join(dir, "vknet"),
		Pidfile: filepath.Join(dir, "vknetd.pid"),
		Group:   strconv.Itoa(vknetGID),
		Args:    []string{"-t", tapName, "--dgram", dgram, network},
	})
	return &daemon{ns: ns, p: p, tapMAC: ns.LinkMAC(t, tapName)}, dir, dgram
}

// probe is this test binary running as another user in probe mode; it
// talks in lines: it says what it did on stdout, and waits for the test's
// go-ahead on stdin where the attack needs one.
type probe struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// startProbe runs probe mode with env as uid (groups: the daemon's) in the
// daemon's namespace.
func startProbe(t *testing.T, d *daemon, dir string, uid int, env ...string) *probe {
	t.Helper()
	exe := filepath.Join(dir, "probe.test")
	if _, err := os.Stat(exe); err != nil {
		copyExecutable(t, os.Args[0], exe)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{vknetGID}}}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Started from a thread inside the namespace, the probe lives there.
	if err := inNetns(d.ns.Name, cmd.Start); err != nil {
		t.Fatalf("starting the probe as uid %d: %v", uid, err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return &probe{cmd: cmd, in: in, out: bufio.NewReader(out)}
}

// expect reads the probe's next line and fails unless it starts with prefix.
func (p *probe) expect(t *testing.T, prefix string) string {
	t.Helper()
	line := make(chan string, 1)
	go func() {
		s, _ := p.out.ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case s := <-line:
		if !strings.HasPrefix(s, prefix) {
			t.Fatalf("probe said %q, want %q...", s, prefix)
		}
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("probe said nothing within 10s, want %q", prefix)
		return ""
	}
}

func (p *probe) goOn(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(p.in, "go\n"); err != nil {
		t.Fatal(err)
	}
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// waitDgramClient waits for the daemon to log its nth datagram client
// (from 1) and returns its port and uid.
func waitDgramClient(t *testing.T, d *daemon, nth int) (port, uid int) {
	t.Helper()
	re := regexp.MustCompile(`msg="client connected" port=(\d+) .*kind=dgram.*`)
	uidRe := regexp.MustCompile(` uid=(-?\d+) `)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if m := re.FindAllStringSubmatch(d.p.Output(), -1); len(m) >= nth {
			port, _ = strconv.Atoi(m[nth-1][1])
			uid = -1
			if u := uidRe.FindStringSubmatch(m[nth-1][0]); u != nil {
				uid, _ = strconv.Atoi(u[1])
			}
			return port, uid
		}
		if time.Now().After(deadline) {
			t.Fatalf("vknetd logged no datagram client number %d within 5s:\n%s", nth, d.p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Finding 1: the attacker binds a socket, connects it to the listener (so
// it is answered through the listener), registers, then replaces its path
// by a symlink to a socket in a root-only directory and floods broadcasts
// from a second client. Every frame flooded to it once landed in the
// victim socket, sent by uid 0.
func TestDgramSymlinkSwapReachesNoForeignSocket(t *testing.T) {
	d, dir, dgram := dgramDaemon(t)
	private := testbed.ShortTempDir(t) // 0700, root's
	victimPath := filepath.Join(private, "victim.sock")
	victim, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(victim)
	if err := unix.Bind(victim, &unix.SockaddrUnix{Name: victimPath}); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "attacker")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, attackerUID, attackerUID); err != nil {
		t.Fatal(err)
	}
	p := startProbe(t, d, dir, attackerUID, probeEnv+"=swap", "PROBE_LISTENER="+dgram,
		"PROBE_SWITCH="+d.p.Sock, "PROBE_PATH="+filepath.Join(home, "vm.sock"), "PROBE_TARGET="+victimPath)
	p.expect(t, "registered")
	_, uid := waitDgramClient(t, d, 1)
	p.goOn(t)
	got := p.expect(t, "received ")
	n, _ := strconv.Atoi(strings.TrimPrefix(got, "received "))

	var buf [2048]byte
	leaked := 0
	for {
		if _, _, err := unix.Recvfrom(victim, buf[:], unix.MSG_DONTWAIT); err != nil {
			break
		}
		leaked++
	}
	if leaked > 0 {
		t.Fatalf("HOLE: the root-only socket %s received %d frames through uid %d's symlink", victimPath, leaked, attackerUID)
	}
	if n == 0 {
		t.Fatalf("the attacker's own socket received none of the flooded frames: the switch stopped answering it:\n%s", d.p.Output())
	}
	if uid != attackerUID {
		t.Fatalf("the datagram client's port records uid %d, want the sender's %d", uid, attackerUID)
	}
}

// Finding 2: in secure mode, with a victim user's client at the abstract
// name "\0victim", the attacker's "\0victim\0x" cannot send with the
// victim's MAC and IP: it is a client of its own, refused the MAC in use.
func TestDgramAbstractNameCannotPassForAnother(t *testing.T) {
	d, dir, dgram := dgramDaemon(t)
	tapCap := startCapture(t, d.ns, tapName)
	vMAC, vIP := testbed.MAC(0x71), netip.MustParseAddr("198.18.7.1")
	name := fmt.Sprintf("\x00vknetd-victim-%d", os.Getpid())
	legit := testbed.IPv4UDP(vMAC, d.tapMAC, vIP, tapIP, 40000, 9, legitMark(71))
	victim := startProbe(t, d, dir, victimUID, probeEnv+"=abstract", "PROBE_LISTENER="+dgram,
		"PROBE_NAME="+hex.EncodeToString([]byte(name)), "PROBE_FRAME="+hex.EncodeToString(legit))
	victim.expect(t, "sent")
	if !tapCap.waitFor(t, legitMark(71), 3*time.Second) {
		t.Fatalf("the victim's frame did not reach the TAP:\n%s", d.p.Output())
	}
	waitDgramClient(t, d, 1)

	spoof := testbed.IPv4UDP(vMAC, d.tapMAC, vIP, tapIP, 40000, 9, spoofMark(71))
	attacker := startProbe(t, d, dir, attackerUID, probeEnv+"=abstract", "PROBE_LISTENER="+dgram,
		"PROBE_NAME="+hex.EncodeToString([]byte(name+"\x00x")), "PROBE_FRAME="+hex.EncodeToString(spoof))
	attacker.expect(t, "sent")
	time.Sleep(300 * time.Millisecond)
	if n := len(tapCap.containing(t, spoofMark(71))); n > 0 {
		t.Fatalf("HOLE: uid %d's frame from \\0victim\\0x with the victim's MAC and IP reached the TAP", attackerUID)
	}
	port, uid := waitDgramClient(t, d, 2)
	if uid != attackerUID {
		t.Fatalf("\\0victim\\0x's port records uid %d, want %d", uid, attackerUID)
	}
	if got := drops(d.counters(t, port)); got["src-mac-in-use"] != 1 {
		t.Fatalf("the attacker's frame was not dropped as src-mac-in-use on its own port %d: %v", port, got)
	}
}

// runDgramProbe is probe mode: what an attacker or victim user does.
func runDgramProbe(mode string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "probe %s (uid %d): %s\n", mode, os.Getuid(), fmt.Sprintf(format, a...))
		return 1
	}
	stdin := bufio.NewReader(os.Stdin)
	listener := &unix.SockaddrUnix{Name: os.Getenv("PROBE_LISTENER")}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket: %v", err)
	}
	switch mode {
	case "abstract":
		name, _ := hex.DecodeString(os.Getenv("PROBE_NAME"))
		frame, _ := hex.DecodeString(os.Getenv("PROBE_FRAME"))
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: string(name)}); err != nil {
			return fail("bind %q: %v", name, err)
		}
		if err := unix.Sendto(fd, frame, 0, listener); err != nil {
			return fail("send: %v", err)
		}
		fmt.Println("sent")
		io.Copy(io.Discard, stdin) // hold the name until the test ends
		return 0
	case "swap":
		path, target := os.Getenv("PROBE_PATH"), os.Getenv("PROBE_TARGET")
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			return fail("bind %s: %v", path, err)
		}
		// Connected to the listener: answered through it, by address.
		if err := unix.Connect(fd, listener); err != nil {
			return fail("connect: %v", err)
		}
		if _, err := unix.Write(fd, testbed.ARPRequest(testbed.MAC(0x42), netip.MustParseAddr("198.18.42.1"), tapIP)); err != nil {
			return fail("send: %v", err)
		}
		fmt.Println("registered")
		stdin.ReadString('\n')
		if err := os.Remove(path); err != nil {
			return fail("%v", err)
		}
		if err := os.Symlink(target, path); err != nil {
			return fail("%v", err)
		}
		// Flood "to it" from a second client of the same user.
		sw, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fail("socket: %v", err)
		}
		if err := unix.Connect(sw, &unix.SockaddrUnix{Name: os.Getenv("PROBE_SWITCH")}); err != nil {
			return fail("connect to the switch: %v", err)
		}
		for i := 0; i < 20; i++ {
			unix.Write(sw, testbed.ARPRequest(testbed.MAC(0x43), netip.MustParseAddr("198.18.42.2"), tapIP))
			time.Sleep(5 * time.Millisecond)
		}
		tv := unix.NsecToTimeval(int64(time.Second))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n := 0
		var buf [2048]byte
		for {
			if _, err := unix.Read(fd, buf[:]); err != nil {
				break
			}
			n++
		}
		fmt.Printf("received %d\n", n)
		return 0
	}
	return fail("unknown mode")
}
