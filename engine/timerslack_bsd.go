//go:build dragonfly || freebsd

package engine

// preciseTimers: kqueue's timeouts have no per-thread slack to lower.
func preciseTimers() (restore func()) { return func() {} }
