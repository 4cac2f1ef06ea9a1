package testbed

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// LogRecord is one line of vknetd's log, which is slog's text format, by key.
type LogRecord map[string]string

// ParseLogLine splits one line of slog's text format (key=value, values quoted when
// they hold spaces or quotes) into its attributes, unquoting quoted values.
func ParseLogLine(line string) LogRecord {
	r := LogRecord{}
	for s := strings.TrimSpace(line); s != ""; s = strings.TrimLeft(s, " ") {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			break
		}
		key, rest := s[:eq], s[eq+1:]
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			r[key], _ = strconv.Unquote(q)
			s = rest[len(q):]
			continue
		}
		end := strings.IndexByte(rest, ' ')
		if end < 0 {
			end = len(rest)
		}
		r[key], s = rest[:end], rest[end:]
	}
	return r
}

// Has reports whether r holds every key=value of kv.
func (r LogRecord) Has(kv ...string) bool {
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		if r[k] != v {
			return false
		}
	}
	return true
}

// Uint returns attribute key as a number, failing the test if it is missing or not a
// number. A missing drop_* counter is 0: vknetd logs those only when they are not.
func (r LogRecord) Uint(t testing.TB, key string) uint64 {
	t.Helper()
	s, ok := r[key]
	if !ok {
		if strings.HasPrefix(key, "drop_") {
			return 0
		}
		t.Fatalf("log record has no %s: %v", key, r)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("log attribute %s=%q is not a number in %v", key, s, r)
	}
	return n
}

// Log returns the daemon's log so far (its stderr), one record a line.
func (d *Daemon) Log() []LogRecord {
	var recs []LogRecord
	for _, l := range strings.Split(d.Stderr(), "\n") {
		if l != "" {
			recs = append(recs, ParseLogLine(l))
		}
	}
	return recs
}

// Counters is one SIGUSR1 report: the switch's line and one line per port.
type Counters struct {
	Global   LogRecord   // the "counters" line
	Ports    []LogRecord // live ports, the TAP first
	Departed LogRecord   // the totals of ports that have gone
}

// Port returns the counters of live port id, failing the test if there is none.
func (c Counters) Port(t testing.TB, id int) LogRecord {
	t.Helper()
	for _, p := range c.Ports {
		if p["port"] == strconv.Itoa(id) {
			return p
		}
	}
	t.Fatalf("no live port %d in the counters: %v", id, c.Ports)
	return nil
}

// Counters sends SIGUSR1 and returns the complete report the daemon logs for it.
func (d *Daemon) Counters(t testing.TB) Counters {
	t.Helper()
	before := 0
	for _, r := range d.Log() {
		if r["msg"] == "counters" {
			before++
		}
	}
	if err := d.Signal(syscall.SIGUSR1); err != nil {
		t.Fatalf("sending SIGUSR1 to vknetd: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, ok := d.report(before); ok {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("no complete counter report within 5s of SIGUSR1; log:\n%s", d.Stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// report returns the report after the first before ones, if the daemon has logged
// all of it: the TAP, every client and the departed totals, written in one go after
// the "counters" line (lines of other goroutines may come in between).
func (d *Daemon) report(before int) (Counters, bool) {
	recs := d.Log()
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
			return Counters{}, false
		}
		c := Counters{Global: r}
		for _, p := range recs[i+1:] {
			if p["msg"] != "port counters" {
				continue
			}
			if p["kind"] == "departed" {
				c.Departed = p
				break
			}
			c.Ports = append(c.Ports, p)
		}
		return c, c.Departed != nil && len(c.Ports) == clients+1
	}
	return Counters{}, false
}
