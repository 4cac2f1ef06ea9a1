//go:build !linux

package main

import "errors"

func loadMain([]string) error {
	return errors.New("load: the load generator uses recvmmsg/sendmmsg and runs on Linux only")
}
