//go:build !race

package mactable

const raceEnabled = false
