package testbed

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseLogLine(t *testing.T) {
	line := `time=2026-11-26T21:51:13.000Z level=INFO msg="port counters" port=3 name="a \"b\" c" empty="" drop_tx-queue-full=7`
	want := LogRecord{"time": "2026-11-26T21:51:13.000Z", "level": "INFO", "msg": "port counters", "port": "3",
		"name": `a "b" c`, "empty": "", "drop_tx-queue-full": "7"}
	r := ParseLogLine(line)
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("ParseLogLine(%q)\n got %v\nwant %v", line, r, want)
	}
	if !r.Has("msg=port counters", "port=3") || r.Has("port=4") {
		t.Errorf("Has disagrees with %v", r)
	}
	if r.Uint(t, "drop_tx-queue-full") != 7 || r.Uint(t, "drop_not-logged") != 0 {
		t.Errorf("Uint of %v: drop_tx-queue-full %d, drop_not-logged %d", r, r.Uint(t, "drop_tx-queue-full"), r.Uint(t, "drop_not-logged"))
	}
	if msg := mustFail(t, func(tb testing.TB) { r.Uint(tb, "macs") }); !strings.Contains(msg, "no macs") {
		t.Errorf("Uint of a missing counter: %s", msg)
	}
	if msg := mustFail(t, func(tb testing.TB) { r.Uint(tb, "name") }); !strings.Contains(msg, "not a number") {
		t.Errorf("Uint of a string: %s", msg)
	}
}

// TestCounters has a fake vknetd answer each SIGUSR1 with a report whose port lines
// come one by one, with another line in between: Counters returns only complete
// reports, and only the one its signal caused.
func TestCounters(t *testing.T) {
	bin := fakeDaemon(t, `n=0
report() {
	n=$((n+1))
	echo "msg=counters clients=1 macs=$n" >&2
	sleep 0.1
	echo "msg=\"port counters\" port=0 kind=tap" >&2
	echo "msg=\"client connected\" port=9" >&2
	sleep 0.1
	echo "msg=\"port counters\" port=2 kind=client rx_frames=$n" >&2
	echo "msg=\"port counters\" port=-1 kind=departed" >&2
}
trap report USR1
echo vkt-tap9
while :; do sleep 0.02; done`)
	d := NewNetns(t).StartDaemon(t, bin, DaemonConfig{})
	for want := uint64(1); want <= 2; want++ {
		c := d.Counters(t)
		if got := c.Global.Uint(t, "macs"); got != want {
			t.Errorf("report %d: got the switch line of report %d", want, got)
		}
		if len(c.Ports) != 2 || c.Ports[0]["kind"] != "tap" || c.Departed["kind"] != "departed" {
			t.Errorf("report %d: ports %v, departed %v", want, c.Ports, c.Departed)
		}
		if got := c.Port(t, 2).Uint(t, "rx_frames"); got != want {
			t.Errorf("report %d: port 2 from report %d", want, got)
		}
	}
	if msg := mustFail(t, func(tb testing.TB) { d.Counters(t).Port(tb, 5) }); !strings.Contains(msg, "no live port 5") {
		t.Errorf("Port of a port not in the report: %s", msg)
	}
}
