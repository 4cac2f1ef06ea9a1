package engine

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vknetd/vknetd/mactable"
)

// frameDroppedLines returns the "frame dropped" lines logged for port id.
func frameDroppedLines(log *bytes.Buffer, id uint32) []string {
	var out []string
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, `msg="frame dropped"`) && strings.Contains(line, fmt.Sprintf(" port=%d ", id)) {
			out = append(out, line)
		}
	}
	return out
}

// Each port's "frame dropped" lines are braked on their own: at most one
// a second per port, the next saying how many were not logged, whatever
// the other ports drop. The switch's clock (Engine.now) is the test's.
func TestDropLogIsBrakedPerPort(t *testing.T) {
	var logBuf bytes.Buffer
	s := newTestSwitch(t, true, mactable.Config{}, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	})
	a, b := s.connect(), s.connect()
	refused := ethFrame(broadcast, broadcast, 0x0800, 60) // multicast source: refused
	// One read, not the loop (pump): the loop reads the clock, and the
	// brake is held to the millisecond here.
	send := func(c *testClient, n int) {
		for i := 0; i < n; i++ {
			c.send(t, refused)
		}
		s.l.receive(c.port)
	}
	s.advance(time.Hour)
	send(a, 10)
	if got := frameDroppedLines(&logBuf, a.port.id); len(got) != 1 {
		t.Fatalf("10 drops on one port within a second wrote %d lines, want 1: %q", len(got), got)
	}
	s.advance(999 * time.Millisecond)
	send(a, 5)
	if got := frameDroppedLines(&logBuf, a.port.id); len(got) != 1 {
		t.Fatalf("15 drops within 999 ms wrote %d lines, want 1", len(got))
	}
	// Another port's brake is its own.
	send(b, 3)
	if got := frameDroppedLines(&logBuf, b.port.id); len(got) != 1 {
		t.Fatalf("3 drops on a second port wrote %d lines for it, want 1", len(got))
	}
	s.advance(time.Millisecond)
	send(a, 1)
	got := frameDroppedLines(&logBuf, a.port.id)
	if len(got) != 2 || !strings.Contains(got[1], "not_logged_since_last=14") {
		t.Fatalf("a second after its first line, the port's next drop should be logged saying 14 were not: %q", got)
	}
	if a.port.cnt.secureDrops == ([len(a.port.cnt.secureDrops)]uint64{}) {
		t.Fatal("the refused frames were not counted")
	}
}

// Secure mode's per-port MAC limit (--port-macs): a client's frames from
// one MAC more than its limit are dropped as port-mac-limit and counted,
// go nowhere, and bind nothing (the address stays free for its owner);
// the MACs within the limit and other ports are not affected.
func TestSecurePortMACLimit(t *testing.T) {
	var logBuf bytes.Buffer
	s := newTestSwitch(t, true, mactable.Config{PortLimit: 2}, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	})
	a, b := s.connect(), s.connect()
	ip := func(last byte) [4]byte { return [4]byte{198, 18, 1, last} }
	bcast := [4]byte{198, 18, 255, 255}
	var want [][]byte
	for i := byte(1); i <= 2; i++ {
		f := ipv4UDP(broadcast, mac(i), ip(i), bcast)
		a.send(t, f)
		want = append(want, f)
	}
	for i := byte(3); i <= 5; i++ {
		a.send(t, ipv4UDP(broadcast, mac(i), ip(i), bcast))
	}
	a.send(t, want[0]) // a MAC it holds still speaks
	want = append(want, want[0])
	s.pump()
	expectFrames(t, "b", b.recv(t), want...)
	if n := a.port.cnt.drops[DropPortMACLimit]; n != 3 {
		t.Fatalf("port-mac-limit drops %d, want 3 (one frame from each MAC over the limit of 2)", n)
	}
	if n := s.e.macs.PortLen(a.port.id); n != 2 {
		t.Fatalf("a holds %d MACs, limit 2", n)
	}
	if lines := frameDroppedLines(&logBuf, a.port.id); len(lines) != 1 || !strings.Contains(lines[0], "reason=port-mac-limit") {
		t.Fatalf("want one braked line saying port-mac-limit, got %q", lines)
	}
	// The refused MAC bound nothing on a: b may use it and its address.
	f := ipv4UDP(broadcast, mac(3), ip(3), bcast)
	b.send(t, f)
	s.pump()
	expectFrames(t, "a", a.recv(t), f)
	if n := b.port.cnt.drops[DropPortMACLimit]; n != 0 {
		t.Fatalf("b's first MAC dropped as port-mac-limit (%d)", n)
	}
}
