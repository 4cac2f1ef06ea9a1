//go:build dragonfly || freebsd

package tap

// RemoveCreated does nothing on the BSDs, where Open marks nothing
// (Config.Mark is Linux only) and Created is empty.
func RemoveCreated(c Created) error { return nil }
