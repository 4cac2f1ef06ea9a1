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
// starts with. Each guest would make the daemon hold 49 fds where its
// budget counted 6: before, a few of them took the fds of the listeners
// and vknetctl (accepts failed with EMFILE). Now the guests asking past
// what the limit leaves them are closed with a refusal that says what to
// do, and vknetctl, a new SEQPACKET client and a guest of one queue pair
// still get in.
func TestVhostGuestsCannotExhaustFds(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	dir := testbed.ShortTempDir(t)
	os.Chmod(dir, 0o755)
	vpath := filepath.Join(dir, "v")
	const hostile = 4
	args := []string{"-U", "--max-clients", "6", "--user-clients", "6", "--vhost-user", vpath, "--supervise"}
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
	pidfile := filepath.Join(dir, "vknetd.pid")
	d := startDaemon(t, ns, testbed.DaemonConfig{Wrap: []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", need, need)},
		Args: args, Sock: filepath.Join(dir, "vknet"), Pidfile: pidfile})
	pid := readPid(t, pidfile)
	t.Logf("daemon (pid %d) under a limit of %d fds, --max-clients 6", pid, need)

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
	var st control.Stats
	if !waitFor(5*time.Second, func() bool {
		c, err := control.Dial(ctl)
		if err != nil {
			return false
		}
		defer c.Close()
		st, err = c.Stats()
		return err == nil
	}) {
		t.Fatalf("vknetctl got no answer after the guests' attack; log:\n%s", d.Stderr())
	}
	t.Logf("after the attack: %d fds open in the daemon, clients %v", openFds(pid), st.ClientsByKind)
	d.connect(testMAC(1)) // it waits for the daemon to log the client
	if _, err := dial(vhostguest.Options{}); err != nil {
		t.Errorf("a guest of one queue pair after the attack: %v", err)
	}
	// Up to --max-clients (6: the client and the guest above, 4 more),
	// then one more is refused by the client limit, not by EMFILE.
	for i := range 4 {
		d.connect(testMAC(byte(2 + i)))
	}
	dialRaw(t, d.Sock, testMAC(9))
	if !waitFor(5*time.Second, func() bool { return d.countLog("client refused: too many clients") == 1 }) {
		t.Errorf("a 7th client with --max-clients 6 was not refused by the client limit; log:\n%s", d.Stderr())
	}
	if n := openFds(pid); n >= need {
		t.Errorf("the daemon holds %d fds, its limit is %d", n, need)
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
