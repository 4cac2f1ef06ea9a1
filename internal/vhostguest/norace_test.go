//go:build !race

package vhostguest_test

const raceEnabled = false
