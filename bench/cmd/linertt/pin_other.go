//go:build !linux

package main

import "errors"

// pinThread: only Linux is done here; the measurement then runs where
// the scheduler puts the two sides.
func pinThread(cpu int) error { return errors.New("pinning threads to CPUs is done on Linux only") }
