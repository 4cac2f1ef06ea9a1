//go:build linux

package integration

import (
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// daemon is a vknetd started with -d inside a namespace, with what the
// tests read from its log.
type daemon struct {
	*testbed.Daemon
	t *testing.T
}

// startDaemon starts vknetd -d and waits until it has printed its TAP name,
// that is until it is ready.
func startDaemon(t *testing.T, ns *testbed.Netns, c testbed.DaemonConfig) *daemon {
	t.Helper()
	return &daemon{Daemon: ns.StartDaemon(t, vknetd, c), t: t}
}

// tryStartDaemon is startDaemon for tests that expect a failure: a
// *testbed.StartError carries the daemon's exit status and stderr.
func tryStartDaemon(t *testing.T, ns *testbed.Netns, c testbed.DaemonConfig) (*daemon, error) {
	t.Helper()
	d, err := ns.TryStartDaemon(t, vknetd, c)
	if err != nil {
		return nil, err
	}
	return &daemon{Daemon: d, t: t}, nil
}

func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.Signal(sig); err != nil {
		d.t.Fatalf("sending %v to vknetd: %v", sig, err)
	}
}

// exitCode waits for the daemon to exit and returns its exit status.
func (d *daemon) exitCode(timeout time.Duration) int {
	d.t.Helper()
	err := d.Wait(timeout)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		d.t.Fatalf("vknetd still running after %v; stderr:\n%s", timeout, d.Stderr())
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		d.t.Fatalf("vknetd: %v", err)
	}
	return d.ExitCode()
}

// stop sends SIGTERM and returns the exit status.
func (d *daemon) stop() int {
	d.t.Helper()
	d.signal(syscall.SIGTERM)
	return d.exitCode(10 * time.Second)
}

// requireRunning fails t if the daemon has exited.
func (d *daemon) requireRunning() {
	d.t.Helper()
	if d.Exited() {
		d.t.Fatalf("vknetd exited (%v); stderr:\n%s", d.Wait(0), d.Stderr())
	}
}

// countLog counts log records with message msg.
func (d *daemon) countLog(msg string) int {
	n := 0
	for _, r := range d.Log() {
		if r["msg"] == msg {
			n++
		}
	}
	return n
}

// departed counts clients the daemon has let go: those that closed
// cleanly and those whose close reset the connection (frames were still
// unread on their side).
func (d *daemon) departed() int {
	return d.countLog("client disconnected") + d.countLog("client closed after error")
}

// waitDeparture waits until the daemon has let client port go.
func (d *daemon) waitDeparture(port int) {
	d.t.Helper()
	want := itoa(port)
	if !waitFor(5*time.Second, func() bool {
		for _, r := range d.Log() {
			if (r["msg"] == "client disconnected" || r["msg"] == "client closed after error") && r["port"] == want {
				return true
			}
		}
		return false
	}) {
		d.t.Fatalf("vknetd did not log port %d leaving within 5s; log:\n%s", port, d.Stderr())
	}
}

// waitLog waits for a record with message msg whose attributes include
// every key=value of want, and returns it.
func (d *daemon) waitLog(timeout time.Duration, msg string, want ...string) testbed.LogRecord {
	d.t.Helper()
	var found testbed.LogRecord
	ok := waitFor(timeout, func() bool {
		for _, r := range d.Log() {
			if r["msg"] == msg && r.Has(want...) {
				found = r
				return true
			}
		}
		return d.Exited()
	})
	if !ok || found == nil {
		d.t.Fatalf("vknetd logged no %q %v within %v (exited: %v); log:\n%s", msg, want, timeout, d.Exited(), d.Stderr())
	}
	return found
}

var portNumber = regexp.MustCompile(`^\d+$`)

// connect opens a raw SEQPACKET client and waits until the daemon has
// logged it, so the test knows its port number.
func (d *daemon) connect(mac [6]byte) *rawClient {
	d.t.Helper()
	before := d.countLog("client connected")
	c := dialRaw(d.t, d.Sock, mac)
	var rec testbed.LogRecord
	ok := waitFor(5*time.Second, func() bool {
		n := 0
		for _, r := range d.Log() {
			if r["msg"] == "client connected" {
				if n++; n == before+1 {
					rec = r
					return true
				}
			}
		}
		return false
	})
	if !ok {
		d.t.Fatalf("vknetd did not log the new client within 5s; log:\n%s", d.Stderr())
	}
	if !portNumber.MatchString(rec["port"]) {
		d.t.Fatalf("client connected line without a port number: %v", rec)
	}
	c.port, _ = strconv.Atoi(rec["port"])
	return c
}

// readPidfile returns the pid written in path.
func readPidfile(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading pidfile: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pidfile %s holds %q, not a pid", path, b)
	}
	return pid
}

func itoa(n int) string { return strconv.Itoa(n) }
