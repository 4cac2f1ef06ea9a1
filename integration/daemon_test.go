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

// waitServing makes sure the daemon's event loop has served a client
// before a test signals it: vknetd reports ready before it installs its
// signal handlers, and a signal in between kills it without clean-up
// (TestSIGTERMRightAfterStartIsHandled). A probe client that is accepted
// and let go proves the loop, started after the handlers, is running.
func (d *daemon) waitServing() {
	d.t.Helper()
	if d.countLog("client connected") > 0 {
		return
	}
	probe := d.connect([6]byte{0x02, 0, 0, 0, 0, 0xfe})
	probe.Close()
	d.waitDeparture(probe.port)
}

// stop sends SIGTERM and returns the exit status.
func (d *daemon) stop() int {
	d.t.Helper()
	d.waitServing()
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

// logLines returns the daemon's stderr log parsed into records.
func (d *daemon) logLines() []logRecord {
	var recs []logRecord
	for _, l := range strings.Split(d.Stderr(), "\n") {
		if l != "" {
			recs = append(recs, parseLogLine(l))
		}
	}
	return recs
}

// countLog counts log records with message msg.
func (d *daemon) countLog(msg string) int {
	n := 0
	for _, r := range d.logLines() {
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
		for _, r := range d.logLines() {
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
func (d *daemon) waitLog(timeout time.Duration, msg string, want ...string) logRecord {
	d.t.Helper()
	var found logRecord
	ok := waitFor(timeout, func() bool {
		for _, r := range d.logLines() {
			if r["msg"] == msg && r.has(want...) {
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

// logRecord is one line of slog's text format, by key.
type logRecord map[string]string

func (r logRecord) has(kv ...string) bool {
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		if r[k] != v {
			return false
		}
	}
	return true
}

func (r logRecord) uint(t *testing.T, key string) uint64 {
	t.Helper()
	s, ok := r[key]
	if !ok {
		if strings.HasPrefix(key, "drop_") {
			return 0 // drop counters are only logged when non-zero
		}
		t.Fatalf("log record has no %s: %v", key, r)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("log attribute %s=%q is not a number in %v", key, s, r)
	}
	return n
}

// parseLogLine splits a slog text line (key=value, values quoted when they
// hold spaces or quotes) into its attributes.
func parseLogLine(line string) logRecord {
	r := logRecord{}
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			break
		}
		key := line[:eq]
		line = line[eq+1:]
		var val string
		if strings.HasPrefix(line, `"`) {
			end := 1
			for end < len(line) && line[end] != '"' {
				if line[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(line) {
				end = len(line) - 1
			}
			if v, err := strconv.Unquote(line[:end+1]); err == nil {
				val = v
			} else {
				val = line[1:end]
			}
			line = line[end+1:]
		} else {
			sp := strings.IndexByte(line, ' ')
			if sp < 0 {
				sp = len(line)
			}
			val = line[:sp]
			line = line[sp:]
		}
		r[key] = val
	}
	return r
}

// snapshot is one SIGUSR1 report: the switch line and one line per port.
type snapshot struct {
	global   logRecord
	ports    []logRecord // live ports, the TAP first
	departed logRecord
}

// port returns the counters of live port id.
func (s snapshot) port(t *testing.T, id int) logRecord {
	t.Helper()
	for _, p := range s.ports {
		if p["port"] == strconv.Itoa(id) {
			return p
		}
	}
	t.Fatalf("no live port %d in the counters: %v", id, s.ports)
	return nil
}

// counters sends SIGUSR1 and returns the report it logs.
func (d *daemon) counters() snapshot {
	d.t.Helper()
	d.waitServing()
	before := d.countLog("counters")
	d.signal(syscall.SIGUSR1)
	var snap snapshot
	ok := waitFor(5*time.Second, func() bool {
		recs := d.logLines()
		seen := 0
		for i, r := range recs {
			if r["msg"] != "counters" {
				continue
			}
			if seen++; seen <= before {
				continue
			}
			clients, err := strconv.Atoi(r["clients"])
			if err != nil {
				return false
			}
			// The report is the TAP, every client and the departed totals,
			// written in one go after the "counters" line (other lines may
			// come in between).
			snap = snapshot{global: r}
			for _, p := range recs[i+1:] {
				if p["msg"] != "port counters" {
					continue
				}
				if p["kind"] == "departed" {
					snap.departed = p
					break
				}
				snap.ports = append(snap.ports, p)
			}
			return snap.departed != nil && len(snap.ports) == clients+1
		}
		return false
	})
	if !ok {
		d.t.Fatalf("no complete counter report within 5s of SIGUSR1; log:\n%s", d.Stderr())
	}
	return snap
}

var portNumber = regexp.MustCompile(`^\d+$`)

// connect opens a raw SEQPACKET client and waits until the daemon has
// logged it, so the test knows its port number.
func (d *daemon) connect(mac [6]byte) *rawClient {
	d.t.Helper()
	before := d.countLog("client connected")
	c := dialRaw(d.t, d.Sock, mac)
	var rec logRecord
	ok := waitFor(5*time.Second, func() bool {
		n := 0
		for _, r := range d.logLines() {
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
