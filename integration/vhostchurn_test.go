//go:build linux

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/internal/vhostguest"
)

// The memory bounds of vhost-user connection churn (README, "Limits"):
// once the collector has run (the warm-up), connect cycles leave RSS
// flat, and it never rises more than churnRSSRoom over its size at start.
// The room is the Go heap's: garbage is collected when it reaches the
// size of the live heap and the runtime's globals (about 10 MB with the
// defaults), and the pages it used stay resident for reuse. Before the
// frame buffers left the heap, the collector counted their 110 MB as
// live heap and let as much garbage build up first: RSS went from 20 MB
// to 73 MB in 3,000 cycles, and to 139 MB by 24,000.
const (
	churnWarmUp    = 1000
	churnCycles    = 3000
	churnRSSGrowth = 8 << 20  // after the warm-up
	churnRSSRoom   = 32 << 20 // over the RSS at start
)

// TestVhostUserChurnKeepsRSSFlat is issue 15, finding 7: thousands of
// vhost-user guests connect, set their device up (features, memory
// table, rings) and hang up, one after the other, and every fourth hangs
// up in the middle of its set-up instead. The daemon's resident memory,
// read from /proc, must stay within the bounds above.
func TestVhostUserChurnKeepsRSSFlat(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	vhost := filepath.Join(testbed.ShortTempDir(t), "vhost")
	d := startDaemon(t, ns, testbed.DaemonConfig{Args: []string{"--vhost-user", vhost, "198.18.0.1/16"}})
	if !waitFor(5*time.Second, func() bool { return fileExists(vhost) }) {
		t.Fatalf("vknetd did not create %s; stderr:\n%s", vhost, d.Stderr())
	}
	cycle := func(i int) {
		g, err := vhostguest.New(vhostguest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		fd, err := vhostguest.Dial(vhost)
		if err != nil {
			t.Fatalf("cycle %d: %v; stderr:\n%s", i, err, d.Stderr())
		}
		g.Attach(fd)
		if i%4 == 3 {
			// Gone after its first message: the daemon has its
			// connection, device and port, and no rings yet.
			if err := g.Message(vhostguest.ReqSetOwner, vhostguest.FlagVersion1, nil); err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			return
		}
		if err := g.Start(); err != nil {
			t.Fatalf("cycle %d: setting the device up: %v; stderr:\n%s", i, err, d.Stderr())
		}
	}
	// rss is the daemon's VmRSS and VmHWM in bytes, once it has served
	// the hang-ups (a client's end is the daemon's next loop iteration).
	rss := func() (now, peak int) {
		t.Helper()
		time.Sleep(20 * time.Millisecond)
		return vmStatus(t, d.Pid(), "VmRSS"), vmStatus(t, d.Pid(), "VmHWM")
	}

	start, _ := rss()
	for i := range churnWarmUp {
		cycle(i)
	}
	warm, _ := rss()
	high := warm
	for i := churnWarmUp; i < churnWarmUp+churnCycles; i++ {
		cycle(i)
		if (i+1)%250 == 0 {
			now, _ := rss()
			high = max(high, now)
		}
	}
	_, peak := rss()
	t.Logf("vknetd RSS %d KiB at start, %d KiB after %d cycles, at most %d KiB over %d more; peak %d KiB",
		start>>10, warm>>10, churnWarmUp, high>>10, churnCycles, peak>>10)
	if high-warm > churnRSSGrowth {
		t.Errorf("vknetd's RSS grew by %d KiB over %d vhost-user connect cycles after a warm-up of %d, want at most %d KiB",
			(high-warm)>>10, churnCycles, churnWarmUp, churnRSSGrowth>>10)
	}
	if peak-start > churnRSSRoom {
		t.Errorf("vknetd's RSS peaked %d KiB over its %d KiB at start in %d vhost-user connect cycles, want at most %d KiB",
			(peak-start)>>10, start>>10, churnWarmUp+churnCycles, churnRSSRoom>>10)
	}
	// And it still serves guests.
	g, err := vhostguest.New(vhostguest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	fd, err := vhostguest.Dial(vhost)
	if err != nil {
		t.Fatal(err)
	}
	g.Attach(fd)
	if err := g.Start(); err != nil {
		t.Fatalf("a guest after the churn: %v; stderr:\n%s", err, d.Stderr())
	}
}

// vmStatus reads field (VmRSS, VmHWM: kB) of /proc/pid/status, in bytes.
func vmStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading vknetd's memory use: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("/proc/%d/status: %q: %v", pid, line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}
