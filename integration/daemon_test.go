//go:build linux

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vknetd/vknetd/internal/testbed"
)

// daemonSpec is how to start one vknetd in the foreground (-d).
type daemonSpec struct {
	ns      string   // namespace to run in (required)
	sock    string   // -p; default <tmp>/vknet
	pidfile string   // -i; default <tmp>/vknetd.pid
	group   string   // --group; default root
	args    []string // everything else: flags and address/cidrbits
	wrap    []string // a command the daemon runs under, e.g. prlimit
}

// daemon is a vknetd started with -d inside a namespace.
type daemon struct {
	t       *testing.T
	ns      string
	sock    string
	pidfile string
	tap     string
	p       *proc
}

// startDaemon starts vknetd -d and waits until it has printed its TAP name,
// that is until it is ready.
func startDaemon(t *testing.T, s daemonSpec) *daemon {
	t.Helper()
	d, err := tryStartDaemon(t, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// tryStartDaemon is startDaemon for tests that expect a failure: the error
// carries the daemon's exit status and stderr.
func tryStartDaemon(t *testing.T, s daemonSpec) (*daemon, error) {
	t.Helper()
	if s.ns == "" {
		t.Fatal("daemonSpec without a namespace: the daemon must never run in the host's")
	}
	dir := ""
	if s.sock == "" || s.pidfile == "" {
		dir = testbed.ShortTempDir(t)
	}
	if s.sock == "" {
		s.sock = filepath.Join(dir, "vknet")
	}
	if s.pidfile == "" {
		s.pidfile = filepath.Join(dir, "vknetd.pid")
	}
	if s.group == "" {
		s.group = "root"
	}
	args := []string{"netns", "exec", s.ns}
	args = append(args, s.wrap...)
	args = append(args, vknetd, "-d", "-p", s.sock, "-i", s.pidfile, "--group", s.group)
	args = append(args, s.args...)
	d := &daemon{t: t, ns: s.ns, sock: s.sock, pidfile: s.pidfile}
	d.p = startProc(t, "ip", args...)
	ok := waitFor(10*time.Second, func() bool {
		return strings.Contains(d.p.stdout.String(), "\n") || d.p.exited()
	})
	if line, _, found := strings.Cut(d.p.stdout.String(), "\n"); found {
		d.tap = strings.TrimSpace(line)
		return d, nil
	}
	if !ok {
		return nil, fmt.Errorf("vknetd %s printed no TAP name within 10s; stderr:\n%s", strings.Join(s.args, " "), d.p.stderr.String())
	}
	code := d.p.wait(t, time.Second)
	return nil, &startError{code: code, stderr: d.p.stderr.String()}
}

// startError is a daemon that exited instead of becoming ready.
type startError struct {
	code   int
	stderr string
}

func (e *startError) Error() string {
	return fmt.Sprintf("vknetd exited with status %d before it was ready; stderr:\n%s", e.code, e.stderr)
}

func (d *daemon) pid() int { return d.p.cmd.Process.Pid }

func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.p.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("sending %v to vknetd: %v", sig, err)
	}
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
	probe.close()
	d.waitDeparture(probe.port)
}

// stop sends SIGTERM and returns the exit status.
func (d *daemon) stop() int {
	d.t.Helper()
	d.waitServing()
	d.signal(syscall.SIGTERM)
	return d.p.wait(d.t, 10*time.Second)
}

// requireRunning fails t if the daemon has exited.
func (d *daemon) requireRunning() {
	d.t.Helper()
	if d.p.exited() {
		d.t.Fatalf("vknetd exited (%v); stderr:\n%s", d.p.err, d.p.stderr.String())
	}
}

// logLines returns the daemon's stderr log parsed into records.
func (d *daemon) logLines() []logRecord {
	var recs []logRecord
	for _, l := range strings.Split(d.p.stderr.String(), "\n") {
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
		d.t.Fatalf("vknetd did not log port %d leaving within 5s; log:\n%s", port, d.p.stderr.String())
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
		return d.p.exited()
	})
	if !ok || found == nil {
		d.t.Fatalf("vknetd logged no %q %v within %v (exited: %v); log:\n%s", msg, want, timeout, d.p.exited(), d.p.stderr.String())
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
		d.t.Fatalf("no complete counter report within 5s of SIGUSR1; log:\n%s", d.p.stderr.String())
	}
	return snap
}

var portNumber = regexp.MustCompile(`^\d+$`)

// connect opens a raw SEQPACKET client and waits until the daemon has
// logged it, so the test knows its port number.
func (d *daemon) connect(mac [6]byte) *rawClient {
	d.t.Helper()
	before := d.countLog("client connected")
	c := dialRaw(d.t, d.sock, mac)
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
		d.t.Fatalf("vknetd did not log the new client within 5s; log:\n%s", d.p.stderr.String())
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
