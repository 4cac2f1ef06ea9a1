//go:build !linux

package main

import "errors"

// Giving up root is Linux code (capabilities, AllThreadsSyscall); on the
// BSDs --user is refused before anything is created.

func checkCanDrop() error {
	return errors.New("--user is supported on Linux only: leave it out here")
}

func dropPrivileges(r *runAs) (string, error) { return "", checkCanDrop() }
