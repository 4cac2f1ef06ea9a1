package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newTestLogger(burst int, every time.Duration) (*Logger, *bytes.Buffer, *fakeClock) {
	var buf bytes.Buffer
	l := NewWith(slog.New(slog.NewTextHandler(&buf, nil)), burst, every)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	l.now = clock.now
	return l, &buf, clock
}

func lines(buf *bytes.Buffer) []string {
	s := strings.TrimSpace(buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// A flood writes the burst, then nothing until time passes; the next line
// carries the count of what was suppressed.
func TestFloodIsBrakedAndCounted(t *testing.T) {
	l, buf, clock := newTestLogger(5, time.Second)
	for i := 0; i < 50000; i++ {
		l.Error("datagram client refused", "i", i)
	}
	if got := len(lines(buf)); got != 5 {
		t.Fatalf("50000 refusals wrote %d lines, want the burst of 5", got)
	}
	clock.t = clock.t.Add(time.Second)
	l.Error("datagram client refused", "i", -1)
	all := lines(buf)
	if len(all) != 6 || !strings.Contains(all[5], "suppressed=49995") {
		t.Fatalf("the line after the pause should report 49995 suppressed; got %q", all[len(all)-1])
	}
	// The count starts again from there.
	clock.t = clock.t.Add(time.Second)
	l.Error("datagram client refused")
	if last := lines(buf)[6]; strings.Contains(last, "suppressed") {
		t.Fatalf("nothing was suppressed since the last line, yet it says %q", last)
	}
}

// Each message has its own budget: a flood of one kind does not silence
// another.
func TestMessagesHaveSeparateBudgets(t *testing.T) {
	l, buf, _ := newTestLogger(2, time.Hour)
	for i := 0; i < 10; i++ {
		l.Warn("client refused")
	}
	l.Info("client connected")
	all := lines(buf)
	if len(all) != 3 || !strings.Contains(all[2], "client connected") {
		t.Fatalf("want 2 refusals and the connect line, got %q", all)
	}
}

// The bucket refills at the configured rate and never beyond the burst.
func TestRefillIsBounded(t *testing.T) {
	l, buf, clock := newTestLogger(3, time.Second)
	clock.t = clock.t.Add(time.Hour) // a long quiet time still allows only the burst
	for i := 0; i < 10; i++ {
		l.Info("m")
	}
	if got := len(lines(buf)); got != 3 {
		t.Fatalf("after a quiet hour %d lines went through, want the burst of 3", got)
	}
	clock.t = clock.t.Add(2500 * time.Millisecond)
	for i := 0; i < 10; i++ {
		l.Info("m")
	}
	if got := len(lines(buf)); got != 5 {
		t.Fatalf("2.5 s at one line a second allowed %d more lines, want 2", got-3)
	}
}

// A level the handler drops costs no token.
func TestDisabledLevelsTakeNoToken(t *testing.T) {
	var buf bytes.Buffer
	l := NewWith(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), 1, time.Hour)
	l.Info("m")
	l.Warn("m")
	if got := len(lines(&buf)); got != 1 {
		t.Fatalf("got %d lines, want the one warning", got)
	}
}

// A handler brakes records with varying messages as one kind.
func TestHandlerBrakesVaryingMessages(t *testing.T) {
	var buf bytes.Buffer
	h := NewHandler(slog.NewTextHandler(&buf, nil), "http", 3, time.Hour)
	log := slog.New(h)
	for i := 0; i < 100; i++ {
		log.Error("http: TLS handshake error from 198.18.0." + string(rune('0'+i%10)))
	}
	if got := len(lines(&buf)); got != 3 {
		t.Fatalf("100 varying records wrote %d lines, want the burst of 3", got)
	}
}
