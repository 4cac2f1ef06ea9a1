// Package ratelog puts a brake on log lines that someone outside the
// daemon can trigger (a client connecting in a loop, a flood of refused
// datagrams): each kind of line gets a burst, then a steady trickle, and
// the next line that is written says how many were suppressed before it.
// An attacker cannot fill the disk or bury other lines, and the operator
// still sees that something is going on and how much of it.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults: enough for a host's VMs connecting at boot to be logged one
// by one, and few enough that a loop cannot write more than a couple of
// lines a second per kind.
const (
	DefaultBurst = 32
	DefaultEvery = 500 * time.Millisecond
)

// Logger writes through an slog.Logger, at most Burst lines of one message
// at once and then one per Every. It is safe for concurrent use.
type Logger struct {
	log   *slog.Logger
	burst float64
	every time.Duration
	now   func() time.Time // time.Now; tests replace it

	mu     sync.Mutex
	events map[string]*bucket // by message: a fixed set of constant strings
}

// bucket is a token bucket for one message, with the count of lines it
// refused since the last one it let through.
type bucket struct {
	tokens     float64
	last       time.Time
	suppressed uint64
}

// New returns a Logger writing to log with the default burst and rate.
func New(log *slog.Logger) *Logger {
	return NewWith(log, DefaultBurst, DefaultEvery)
}

// NewWith returns a Logger that lets burst lines of a message through at
// once and refills one every every.
func NewWith(log *slog.Logger, burst int, every time.Duration) *Logger {
	return &Logger{log: log, burst: float64(max(burst, 1)), every: every, now: time.Now,
		events: make(map[string]*bucket)}
}

// Unlimited is the underlying logger, for lines nobody outside can trigger.
func (l *Logger) Unlimited() *slog.Logger { return l.log }

// Allow takes a token for msg. When it returns true the caller writes the
// line, adding suppressed (the lines refused since the last one) when it is
// not zero. Callers that render costly attributes ask first.
func (l *Logger) Allow(msg string) (ok bool, suppressed uint64) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.events[msg]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.events[msg] = b
	}
	if l.every > 0 {
		b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.last))/float64(l.every))
	}
	b.last = now
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}

// Info, Warn and Error write msg with args unless msg is over its rate.
func (l *Logger) Info(msg string, args ...any)  { l.emit(slog.LevelInfo, msg, args) }
func (l *Logger) Warn(msg string, args ...any)  { l.emit(slog.LevelWarn, msg, args) }
func (l *Logger) Error(msg string, args ...any) { l.emit(slog.LevelError, msg, args) }

func (l *Logger) emit(level slog.Level, msg string, args []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	ok, suppressed := l.Allow(msg)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// handler is an slog.Handler that brakes every record it passes on as one
// kind of line, for loggers whose messages vary with what a peer did (the
// HTTP server's error log names the peer's address in its message).
type handler struct {
	next slog.Handler
	l    *Logger
	key  string
}

// NewHandler wraps next so that the records logged through it, whatever
// their message, share one burst and rate under name.
func NewHandler(next slog.Handler, name string, burst int, every time.Duration) slog.Handler {
	return &handler{next: next, l: NewWith(slog.New(next), burst, every), key: name}
}

func (h *handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	ok, suppressed := h.l.Allow(h.key)
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Uint64("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &handler{next: h.next.WithAttrs(attrs), l: h.l, key: h.key}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), l: h.l, key: h.key}
}
