//go:build race

package mactable

// The race detector slows the single-goroutine model tests tenfold
// without checking anything more in them.
const raceEnabled = true
