package main

import "golang.org/x/sys/unix"

// pinThread keeps the calling thread on cpu.
func pinThread(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	return unix.SchedSetaffinity(0, &set)
}
