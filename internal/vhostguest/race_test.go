//go:build race

package vhostguest_test

const raceEnabled = true
