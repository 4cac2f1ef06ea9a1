//go:build race

package vhostuser

// The race detector makes some values escape that otherwise stay on the
// stack, so allocation counts are only asserted without it.
const raceEnabled = true
