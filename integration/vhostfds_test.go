//go:build linux

package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

var needsFds = regexp.MustCompile(`needs up to (\d+)`)

// TestVhostGuestsCannotExhaustFds: vhost-user guests that ask for every
// queue pair (8) and memory slot (8 files) and leave a message with 8 fds
// half sent, against a --supervise daemon under the smallest fd limit it
// starts with, and under 100 more. Each guest would make the daemon hold
// 49 fds where its budget counted 6: before, a few of them took the fds
// of the listeners and vknetctl (accepts failed with EMFILE). Now the
// guests asking past what the limit leaves them are closed with a refusal
// that says what to do, a multi-queue guest within it keeps its
// connection, and vknetctl, a new SEQPACKET client and a guest of one
// queue pair still get in; the client after --max-clients is refused by
// the client limit.
func TestVhostGuestsCannotExhaustFds(t *testing.T) {
	needRoot(t)
	for _, slack := range []int{0, 100} {
		t.Run(fmt.Sprintf("limit+%d", slack), func(t *testing.T) { guestsAgainstFdLimit(t, slack) })
	}
}

func guestsAgainstFdLimit(t *testing.T, slack int) {
	ns := testbed.NewNetns(t)
	dir := testbed.ShortTempDir(t)
	os.Chmod(dir, 0o755)
	vpath := filepath.Join(dir, "v")
	const hostile, maxClients = 4, 6
	args := []string{"-U", "--max-clients", strconv.Itoa(maxClients), "--user-clients", strconv.Itoa(maxClients), "--vhost-user", vpath, "--supervise"}
	// The smallest limit the daemon starts with: what it says it needs.
	_, err := tryStartDaemon(t, ns, testbed.DaemonConfig{Wrap: []string{"prlimit", "--nofile=40:40"}, Args: args})
	var se *testbed.StartError
	if !errors.As(err, &se) {
		t.Fatalf("vknetd started under a 40-fd limit: %v", err)
	}
	m := needsFds.FindStringSubmatch(se.Stderr)
	if m == nil {
		t.Fatalf("the refusal names no need: %s", se.Stderr)
	}
	need, _ := strconv.Atoi(m[1])
	limit := need + slack
	pidfile := filepath.Join(dir, "vknetd.pid")
	d := startDaemon(t, ns, testbed.DaemonConfig{Wrap: []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", limit, limit)},
		Args: args, Sock: filepath.Join(dir, "vknet"), Pidfile: pidfile})
	pid := readPid(t, pidfile)
	t.Logf("daemon (pid %d) under a limit of %d fds, --max-clients %d", pid, limit, maxClients)

	var guests []*vhostguest.Guest
	t.Cleanup(func() {
		for _, g := range guests {
			g.Close()
		}
	})
	dial := func(o vhostguest.Options) (*vhostguest.Guest, error) {
		g, err := vhostguest.New(o)
		if err != nil {
			t.Fatal(err)
		}
		guests = append(guests, g)
		sock, err := vhostguest.Dial(vpath)
		if err != nil {
			return g, err
		}
		g.Attach(sock)
		return g, g.Start()
	}
	// With room to spare, a guest of 4 queue pairs (12 fds beyond a guest
	// of one) fits, and must keep fitting whatever the others do.
	var multi *vhostguest.Guest
	if slack > 0 {
		if multi, err = dial(vhostguest.Options{QueuePairs: 4, QueueSize: 64}); err != nil {
			t.Fatalf("a guest of 4 queue pairs under %d spare fds: %v", slack, err)
		}
	}
	for i := range hostile {
		g, err := dial(vhostguest.Options{QueuePairs: 8, MemoryFiles: 8, QueueSize: 64})
		t.Logf("hostile guest %d: set-up %v", i, err)
		if err != nil {
			continue
		}
		// A SET_MEM_TABLE with 8 fds of which only the header and part of
		// the payload come: the daemon holds the fds until the rest.
		var efds []int
		for range 8 {
			fd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC)
			efds = append(efds, fd)
		}
		hdr := binary.LittleEndian.AppendUint32(nil, vhostguest.ReqSetMemTable)
		hdr = binary.LittleEndian.AppendUint32(hdr, vhostguest.FlagVersion1)
		hdr = binary.LittleEndian.AppendUint32(hdr, 8+8*32)
		unix.Sendmsg(g.SocketFD(), append(hdr, 8, 0, 0, 0), unix.UnixRights(efds...), nil, unix.MSG_NOSIGNAL)
		for _, fd := range efds {
			unix.Close(fd)
		}
	}

	// Whatever the guests did, the daemon has fds for everyone else.
	ctl := d.Sock + ".ctl"
	stats := func() (st control.Stats, err error) {
		c, err := control.Dial(ctl)
		if err != nil {
			return st, err
		}
		defer c.Close()
		return c.Stats()
	}
	var st control.Stats
	if !waitFor(5*time.Second, func() bool { st, err = stats(); return err == nil }) {
		t.Fatalf("vknetctl got no answer after the guests' attack: %v; log:\n%s", err, d.Stderr())
	}
	t.Logf("after the attack: %d fds open in the daemon, clients %v", openFds(pid), st.ClientsByKind)
	d.connect(testMAC(1)) // it waits for the daemon to log the client
	if _, err := dial(vhostguest.Options{}); err != nil {
		t.Errorf("a guest of one queue pair after the attack: %v", err)
	}
	if multi != nil && socketClosedByPeer(multi.SocketFD()) {
		t.Errorf("the guest of 4 queue pairs within the spare fds was closed")
	}
	// Up to --max-clients, then one more is refused by the client limit,
	// not by EMFILE.
	if st, err = stats(); err != nil {
		t.Fatal(err)
	}
	clients := 0
	for _, n := range st.ClientsByKind {
		clients += int(n)
	}
	for i := range maxClients - clients {
		d.connect(testMAC(byte(2 + i)))
	}
	dialRaw(t, d.Sock, testMAC(9))
	if !waitFor(5*time.Second, func() bool { return d.countLog("client refused: too many clients") == 1 }) {
		t.Errorf("client %d with --max-clients %d was not refused by the client limit; log:\n%s", maxClients+1, maxClients, d.Stderr())
	}
	if n := openFds(pid); n >= limit {
		t.Errorf("the daemon holds %d fds, its limit is %d", n, limit)
	}
	log := d.Stderr()
	for _, bad := range []string{"too many open files", "accept failed"} {
		if strings.Contains(log, bad) {
			t.Errorf("the daemon or its supervisor ran out of fds (%q); log:\n%s", bad, log)
		}
	}
	if !strings.Contains(log, "raise the limit (LimitNOFILE=, ulimit -n) or lower --max-clients") {
		t.Errorf("no guest was refused with what to do; log:\n%s", log)
	}
	d.requireRunning()
}
