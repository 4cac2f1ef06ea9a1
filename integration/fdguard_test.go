//go:build linux

package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
	"github.com/vknetd/vknetd/metrics"
)

// metricsAddr is where the tests' daemons serve --metrics: the loopback of
// the namespace they run in, which nothing outside it reaches.
const metricsAddr = "127.0.0.1:9477"

// dialIn opens a TCP connection to addr from inside ns.
func dialIn(ns *testbed.Netns, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	})
	return c, err
}

// scrape GETs /metrics from inside ns and returns the body.
func scrape(ns *testbed.Netns, timeout time.Duration) (string, error) {
	c, err := dialIn(ns, metricsAddr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: vknetd\r\nConnection: close\r\n\r\n", metrics.Path); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return string(b), err
}

func openFds(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// TestMetricsFloodLeavesFdsForClients is the attack of issue 7, finding 6:
// a local user opens many idle connections to --metrics, more than the
// daemon has descriptors. VM clients must still connect and forward, the
// idle connections must be closed, and the endpoint must still answer.
func TestMetricsFloodLeavesFdsForClients(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	// 200 descriptors hold the budget of 4 clients with every cap (about
	// 150); the attacker's connections are far more than that.
	d := startDaemon(t, ns, testbed.DaemonConfig{
		Wrap: []string{"prlimit", "--nofile=200:200"},
		Args: []string{"-U", "--max-clients", "4", "--user-clients", "4", "--metrics", metricsAddr},
	})

	const flood = 400
	var attack []net.Conn
	t.Cleanup(func() {
		for _, c := range attack {
			c.Close()
		}
	})
	for range flood {
		c, err := dialIn(ns, metricsAddr)
		if err != nil {
			t.Fatalf("attacker's connection %d: %v", len(attack)+1, err)
		}
		attack = append(attack, c)
	}
	// Each reads until the daemon closes it, which idle ones must be.
	var closed atomic.Int64
	for _, c := range attack {
		go func() {
			c.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := io.Copy(io.Discard, c); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
				closed.Add(1)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // let the daemon take what it will
	fds := openFds(d.Pid())
	t.Logf("vknetd holds %d fds with %d idle metrics connections open", fds, flood)
	if limit := metrics.MaxConns + 40; fds > limit {
		t.Errorf("vknetd holds %d fds with %d idle metrics connections open, want at most %d: the metrics cap of %d is not holding",
			fds, flood, limit, metrics.MaxConns)
	}

	// VM clients still connect and forward.
	a, b := d.connect(testMAC(1)), d.connect(testMAC(2))
	a.send(rawFrame(testbed.Broadcast, a.mac, tagBroadcast, 1))
	if seq := b.expect(tagBroadcast, 2*time.Second); seq != 1 {
		t.Fatalf("broadcast under the metrics flood: got %d, want 1", seq)
	}
	b.send(rawFrame(a.mac, b.mac, tagUnicast, 2))
	if seq := a.expect(tagUnicast, 2*time.Second); seq != 2 {
		t.Fatalf("unicast under the metrics flood: got %d, want 2", seq)
	}
	if d.countLog("accept failed, pausing new connections") != 0 {
		t.Errorf("the client socket ran out of fds; log:\n%s", d.Stderr())
	}

	// Connections that send nothing are closed after the read-header
	// timeout, a cap's worth at a time.
	wait := metrics.DefaultLimits.ReadHeader + 5*time.Second
	if !waitFor(wait, func() bool { return closed.Load() >= metrics.MaxConns }) {
		t.Fatalf("%d of the attacker's idle connections closed within %v, want at least %d", closed.Load(), wait, metrics.MaxConns)
	}

	// Once the attacker leaves, the backlog drains and a scrape answers.
	for _, c := range attack {
		c.Close()
	}
	var body string
	var err error
	if !waitFor(15*time.Second, func() bool {
		body, err = scrape(ns, 2*time.Second)
		return err == nil
	}) {
		t.Fatalf("no scrape answered after the flood: %v; log:\n%s", err, d.Stderr())
	}
	if !strings.Contains(body, `vknetd_clients{kind="seqpacket"} 2`) {
		t.Errorf("the scrape after the flood does not count the 2 clients:\n%s", body)
	}
	d.requireRunning()
	if code := d.stop(); code != 0 {
		t.Errorf("vknetd exited with %d after SIGTERM; log:\n%s", code, d.Stderr())
	}
}

// A limit that cannot hold --max-clients refuses the start, before
// anything is created, and says what to change.
func TestTooFewFdsRefusesStart(t *testing.T) {
	needRoot(t)
	ns := testbed.NewNetns(t)
	_, err := tryStartDaemon(t, ns, testbed.DaemonConfig{
		Wrap: []string{"prlimit", "--nofile=512:512"},
		Args: []string{"-U", "--metrics", metricsAddr},
	})
	var se *testbed.StartError
	if !errors.As(err, &se) {
		t.Fatalf("vknetd started under a 512-fd limit with --max-clients 1024: %v", err)
	}
	if se.Code != 1 {
		t.Errorf("exit status %d, want 1", se.Code)
	}
	for _, want := range []string{"file descriptor limit 512", "--max-clients 1024", "LimitNOFILE=", "ulimit -n", "lower --max-clients to"} {
		if !strings.Contains(se.Stderr, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, se.Stderr)
		}
	}
	if show, _ := ns.Try("ip", "-o", "link", "show"); strings.Count(strings.TrimSpace(show), "\n") != 0 {
		t.Errorf("the refused daemon left interfaces behind:\n%s", show)
	}
	if _, err := dialIn(ns, metricsAddr); err == nil {
		t.Error("the refused daemon left --metrics listening")
	}
}
