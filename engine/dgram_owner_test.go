//go:build linux

package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// The attacks of issue 7 on datagram clients, at the engine: a client must
// never make the switch deliver to a socket it does not own, nor pass for
// another client by an address that only starts like the other's.

// syncBuffer collects a switch's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// victimSocket is a datagram socket in a directory only root may enter,
// as a system daemon's would be. Nothing the switch does for a client
// may ever reach it.
func victimSocket(t *testing.T) (fd int, path string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "victim.sock")
	return bindDgram(t, path), path
}

// bindDgram is a non-blocking datagram socket bound to name (a leading
// NUL: an abstract name, NULs inside kept).
func bindDgram(t *testing.T, name string) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		t.Fatalf("bind %q: %v", name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// abstractName is a name in the abstract namespace no other test run uses.
func abstractName(suffix string) string {
	return fmt.Sprintf("\x00vknetd-test-%d-%s", os.Getpid(), suffix)
}

// rawAddr is the address a datagram from a socket bound to path carries.
func rawAddr(path string) (unix.RawSockaddrUnix, int) {
	a := unix.RawSockaddrUnix{Family: unix.AF_UNIX}
	for i := 0; i < len(path); i++ {
		a.Path[i] = int8(path[i])
	}
	return a, 2 + len(path) + 1
}

// swapToSymlink replaces the socket file at path by a symlink to target.
func swapToSymlink(t *testing.T, path, target string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// floodFrom sends n broadcast frames from a and runs the switch, retry
// timer included, until they are delivered or dropped.
func floodFrom(t *testing.T, s *testSwitch, a *testClient, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		a.send(t, ethFrame(broadcast, mac(1), 0x0800, 100))
		s.pump()
		s.advance(2 * dgramRetry)
		s.pump() // the retry timer's round
	}
}

func TestDgramSymlinkAtRegistrationIsRefused(t *testing.T) {
	log := &syncBuffer{}
	s, lpath := newDgramSwitchWith(t, false, log)
	victim, victimPath := victimSocket(t)
	att := dialDgram(t, t.TempDir(), "att.sock", "")
	att.sendTo(t, lpath, ethFrame(broadcast, mac(0x11), 0x0800, 60))
	// Before the switch reads the datagram, the path becomes a symlink.
	swapToSymlink(t, att.path, victimPath)
	a := s.connect()
	s.pump()
	if s.dgramPeers()[att.path] != nil {
		t.Fatal("a client whose path is a symlink was made a port")
	}
	floodFrom(t, s, a, 5)
	if got := drainFrames(t, victim); len(got) != 0 {
		t.Fatalf("HOLE: the root-only victim socket received %d frames through a client's symlink", len(got))
	}
	if out := log.String(); !strings.Contains(out, "symlink") || !strings.Contains(out, "datagram client refused") {
		t.Fatalf("the refusal does not say why:\n%s", out)
	}
}

// A directory on the path that is a symlink (/var/run -> /run) is refused
// too: openat2 follows none, in any component.
func TestDgramSymlinkedParentDirectoryIsRefused(t *testing.T) {
	log := &syncBuffer{}
	s, lpath := newDgramSwitchWith(t, false, log)
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	vm := dialDgram(t, filepath.Join(dir, "link"), "vm.sock", "")
	vm.sendTo(t, lpath, ethFrame(broadcast, mac(0x11), 0x0800, 60))
	s.pump()
	if len(s.dgramPeers()) != 0 {
		t.Fatal("a client bound through a symlinked directory was made a port")
	}
	if out := log.String(); !strings.Contains(out, "a directory on it is a symlink") || !strings.Contains(out, "real path") {
		t.Fatalf("the refusal gives no reason or hint:\n%s", out)
	}
}

// The attack of finding 1: register, then replace the path by a symlink to
// a root-only socket, then have frames flooded to "you". Connected to the
// listener (answered through it) or not, frames keep going to the socket
// that registered, never to the symlink's target.
func TestDgramPathSwappedAfterRegistration(t *testing.T) {
	for _, viaListener := range []bool{false, true} {
		t.Run(fmt.Sprintf("via_listener=%v", viaListener), func(t *testing.T) {
			s, lpath := newDgramSwitch(t)
			victim, victimPath := victimSocket(t)
			connectTo := ""
			if viaListener {
				connectTo = lpath
			}
			att := dialDgram(t, t.TempDir(), "att.sock", connectTo)
			if _, err := unix.Write(att.fd, ethFrame(broadcast, mac(0x11), 0x0800, 60)); viaListener && err != nil {
				t.Fatal(err)
			}
			if !viaListener {
				att.sendTo(t, lpath, ethFrame(broadcast, mac(0x11), 0x0800, 60))
			}
			a := s.connect()
			s.pump()
			p := s.dgramPeers()[att.path]
			if p == nil || (p.dgram.via != nil) != viaListener {
				t.Fatalf("client not registered as expected: %+v", p)
			}
			swapToSymlink(t, att.path, victimPath)
			floodFrom(t, s, a, 10)
			if got := drainFrames(t, victim); len(got) != 0 {
				t.Fatalf("HOLE: the root-only victim socket received %d frames after the client's path became a symlink to it", len(got))
			}
			if got := att.recv(t); len(got) != 10 {
				t.Fatalf("the registered socket got %d of 10 flooded frames", len(got))
			}
		})
	}
}

// A socket file the sender does not own is refused; its owner, and root,
// are accepted. Credentials are given as the kernel would report them.
func TestDgramSocketOwnedByAnotherUserIsRefused(t *testing.T) {
	log := &syncBuffer{}
	s, _ := newDgramSwitchWith(t, false, log)
	dir := t.TempDir()
	path := filepath.Join(dir, "vm.sock")
	bindDgram(t, path)
	if err := os.Chown(path, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	addr, n := rawAddr(path)
	l := &s.e.listeners[0]
	frame := ethFrame(broadcast, mac(0x11), 0x0800, 60)
	if p := s.l.dgramPort(l, &addr, n, senderCred{pid: 77, uid: 4343}, frame); p != nil || len(s.dgramPeers()) != 0 {
		t.Fatal("uid 4343 registered a socket owned by uid 4242")
	}
	if out := log.String(); !strings.Contains(out, "owned by uid 4242, not by the sender (uid 4343)") {
		t.Fatalf("the refusal does not name the owner and the sender:\n%s", out)
	}
	p := s.l.dgramPort(l, &addr, n, senderCred{pid: 78, uid: 4242}, frame)
	if p == nil || p.uid != 4242 || p.pid != 78 {
		t.Fatalf("the socket's owner was not registered with its pid and uid: %+v", p)
	}
	// Root may name any socket.
	path2 := filepath.Join(dir, "vm2.sock")
	bindDgram(t, path2)
	os.Chown(path2, 4242, 4242)
	addr2, n2 := rawAddr(path2)
	if p := s.l.dgramPort(l, &addr2, n2, senderCred{pid: 1, uid: 0}, frame); p == nil {
		t.Fatal("root was refused")
	}
}

// Later datagrams under a registered address must come from the same
// user; another user's are dropped and counted. Once the registered socket
// file is gone and another user binds the path anew, that user registers.
func TestDgramLaterDatagramsFromAnotherUserAreDropped(t *testing.T) {
	log := &syncBuffer{}
	s, _ := newDgramSwitchWith(t, false, log)
	path := filepath.Join(t.TempDir(), "vm.sock")
	first := bindDgram(t, path)
	os.Chown(path, 4242, 4242)
	addr, n := rawAddr(path)
	l := &s.e.listeners[0]
	frame := ethFrame(broadcast, mac(0x11), 0x0800, 60)
	p := s.l.dgramPort(l, &addr, n, senderCred{pid: 10, uid: 4242}, frame)
	if p == nil {
		t.Fatal("not registered")
	}
	if q := s.l.dgramPort(l, &addr, n, senderCred{pid: 11, uid: 4343}, frame); q != nil {
		t.Fatal("HOLE: a datagram from uid 4343 was taken for uid 4242's port")
	}
	if p.cnt.drops[DropWrongUser] != 1 || !strings.Contains(log.String(), "from another user, dropped") {
		t.Fatalf("not counted (%d) or not logged:\n%s", p.cnt.drops[DropWrongUser], log.String())
	}
	if q := s.l.dgramPort(l, &addr, n, senderCred{pid: 10, uid: 4242}, frame); q != p {
		t.Fatal("the registered user's next datagram did not find its port")
	}
	// The owner's socket goes, the file is removed, uid 4343 binds the path.
	unix.Close(first)
	os.Remove(path)
	bindDgram(t, path)
	os.Chown(path, 4343, 4343)
	q := s.l.dgramPort(l, &addr, n, senderCred{pid: 12, uid: 4343}, frame)
	if q == nil || q == p || q.uid != 4343 || !p.dead || s.dgramPeers()[path] != q {
		t.Fatalf("the new owner of the path was not registered in place of the stale client: %+v", q)
	}
	s.l.reap()
	if s.dgramPeers()[path] != q {
		t.Fatal("closing the stale client forgot its successor")
	}
}

// Finding 2: a client's key was cut at the first NUL of its address, so
// "\0victim\0x" was taken for "\0victim" and passed secure mode with the
// victim's MAC and IP.
func TestDgramAbstractNamesAreKeyedWhole(t *testing.T) {
	s, lpath := newDgramSwitchWith(t, true, nil)
	obs := s.connect()
	victimName := abstractName("victim")
	victim := bindDgram(t, victimName)
	attacker := bindDgram(t, victimName+"\x00x")
	to := &unix.SockaddrUnix{Name: lpath}
	vMAC, vIP := mac(0x21), [4]byte{198, 18, 0, 21}
	if err := unix.Sendto(victim, ipv4UDP(broadcast, vMAC, vIP, [4]byte{198, 18, 255, 255}), 0, to); err != nil {
		t.Fatal(err)
	}
	s.pump()
	if got := len(obs.recv(t)); got != 1 {
		t.Fatalf("the victim's frame did not pass: %d", got)
	}
	if err := unix.Sendto(attacker, ipv4UDP(broadcast, vMAC, vIP, [4]byte{198, 18, 0, 1}), 0, to); err != nil {
		t.Fatal(err)
	}
	s.pump()
	if got := len(obs.recv(t)); got != 0 {
		t.Fatal("HOLE: a frame from \\0victim\\0x with the victim's MAC and IP passed secure mode")
	}
	vp, ap := s.dgramPeers()[victimName], s.dgramPeers()[victimName+"\x00x"]
	if vp == nil || ap == nil || vp == ap {
		t.Fatalf("the two abstract names are not two clients: %v %v", vp, ap)
	}
	if ap.cnt.drops[DropMACInUse] != 1 {
		t.Fatalf("the attacker's frame was not dropped as src-mac-in-use on its own port: %v", ap.cnt.drops)
	}
	if want := "@vknetd-test-" + fmt.Sprint(os.Getpid()) + `-victim\x00x`; ap.name != want {
		t.Fatalf("display name %q, want %q", ap.name, want)
	}
	if vp.pid != int32(os.Getpid()) || vp.uid != 0 {
		t.Fatalf("pid %d uid %d recorded, want %d 0", vp.pid, vp.uid, os.Getpid())
	}
}

// An abstract name has no inode to pin: answered through the listener it
// would be looked up on every send. Such a client is refused, and says so.
func TestDgramAbstractClientConnectedToListenerIsRefused(t *testing.T) {
	log := &syncBuffer{}
	s, lpath := newDgramSwitchWith(t, false, log)
	fd := bindDgram(t, abstractName("via"))
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: lpath}); err != nil {
		t.Fatal(err)
	}
	unix.Write(fd, ethFrame(broadcast, mac(0x11), 0x0800, 60))
	s.pump()
	if len(s.dgramPeers()) != 0 {
		t.Fatal("an abstract client connected to the listener was made a port")
	}
	if out := log.String(); !strings.Contains(out, "abstract address and connected its socket to the listener") {
		t.Fatalf("no clear refusal:\n%s", out)
	}
}

func TestDgramRelativePathIsRefused(t *testing.T) {
	log := &syncBuffer{}
	s, _ := newDgramSwitchWith(t, false, log)
	addr, n := rawAddr("vm.sock")
	if p := s.l.dgramPort(&s.e.listeners[0], &addr, n, senderCred{1, 0}, ethFrame(broadcast, mac(1), 0x0800, 60)); p != nil {
		t.Fatal("a relative path was registered")
	}
	if !strings.Contains(log.String(), "bind an absolute path") {
		t.Fatalf("no hint:\n%s", log.String())
	}
}

// File descriptors a client attaches to its datagrams (SCM_RIGHTS) are
// never installed in the daemon.
func TestDgramPassedFdsAreNotInstalled(t *testing.T) {
	s, lpath := newDgramSwitch(t)
	vm := dialDgram(t, t.TempDir(), "vm.sock", "")
	null, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(null)
	vm.sendTo(t, lpath, ethFrame(broadcast, mac(0x11), 0x0800, 60))
	s.pump() // registered: its own sending socket and O_PATH fd are open now
	before := countFds(t)
	frame := ethFrame(broadcast, mac(0x11), 0x0800, 60)
	for i := 0; i < 5; i++ {
		if err := unix.Sendmsg(vm.fd, frame, unix.UnixRights(null, null, null, null), &unix.SockaddrUnix{Name: lpath}, 0); err != nil {
			t.Fatal(err)
		}
	}
	s.pump()
	if after := countFds(t); after != before {
		t.Fatalf("HOLE: %d fds open after datagrams carrying fds, %d before", after, before)
	}
}

func countFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestDgramKeyNormalisesAddresses(t *testing.T) {
	key := func(path string, addrLen int) string {
		a, _ := rawAddr(path)
		return string(dgramKey(nil, &a, addrLen))
	}
	p := "/run/vm.sock"
	if key(p, 2+len(p)) != p || key(p, 2+len(p)+1) != p || key(p+"\x00junk", 2+len(p)+5) != p {
		t.Fatal("a pathname's key depends on whether its length counted the NUL or what follows it")
	}
	a := "\x00victim"
	if key(a, 2+len(a)) != a || key(a+"\x00x", 2+len(a)+2) != a+"\x00x" {
		t.Fatal("an abstract name is not kept whole")
	}
	if key(a, 2+len(a)+3) != a+"\x00\x00\x00" {
		t.Fatal("an abstract name's length is not honoured")
	}
	if key("", 2) != "" || key(p, 0) != "" || key(p, -5) != "" {
		t.Fatal("an unbound sender has a key")
	}
	for in, want := range map[string]string{
		"/run/vm 1.sock":        "/run/vm 1.sock",
		"\x00victim\x00x":       `@victim\x00x`,
		"/tmp/a\nb\\c":          `/tmp/a\x0ab\\c`,
		"/tmp/\xff\u202eé.sock": `/tmp/\xff\xe2\x80\xaeé.sock`,
	} {
		if got := dgramDisplayName(in); got != want {
			t.Errorf("dgramDisplayName(%q) = %q, want %q", in, got, want)
		}
	}
}

// Frames from a known datagram client allocate nothing on their way.
func TestDgramForwardingAllocatesNothing(t *testing.T) {
	s, lpath := newDgramSwitch(t)
	vm := dialDgram(t, t.TempDir(), "vm.sock", "")
	b := s.connect()
	frame := ethFrame(broadcast, mac(0x11), 0x0800, 60)
	vm.sendTo(t, lpath, frame)
	s.pump()
	b.recv(t)
	to := &unix.SockaddrUnix{Name: lpath}
	buf := make([]byte, 2048)
	allocs := testing.AllocsPerRun(300, func() {
		unix.Sendto(vm.fd, frame, 0, to)
		s.l.step(0)
		unix.Read(b.fd, buf)
	})
	if allocs != 0 {
		t.Fatalf("a datagram client's frame allocates %.1f times", allocs)
	}
	if p := s.dgramPeers()[vm.path]; p == nil || p.cnt.rxFrames < 300 {
		t.Fatal("the frames did not come from the datagram client's port")
	}
}

// Each way a path lookup fails is told apart, with what to do: a daemon
// that cannot reach the client's directory (run with --user, or a
// directory it may not search) says so, not "client disconnected".
func TestDgramRefusalsSayWhyAndWhatToDo(t *testing.T) {
	for errno, want := range map[unix.Errno][2]string{
		unix.EACCES: {"the daemon cannot reach its socket path", "searchable by the daemon"},
		unix.ELOOP:  {"symlink", "real path"},
		unix.ENOENT: {"does not exist as the daemon sees it", "PrivateTmp"},
		unix.ENOSYS: {"openat2", "Linux 5.6"},
	} {
		err := openRefusal(errno)
		if !strings.Contains(err.Error(), want[0]) || !strings.Contains(refusalHint(err), want[1]) {
			t.Errorf("%v: %q, hint %q; want %q and a hint with %q", errno, err, refusalHint(err), want[0], want[1])
		}
	}
	if err := connectRefusal(unix.EACCES); !strings.Contains(refusalHint(err), "write the client's socket") {
		t.Errorf("connect EACCES: %q, hint %q", err, refusalHint(err))
	}
}
