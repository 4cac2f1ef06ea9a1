//go:build !linux

package main

// addressSpace: vhost-user is Linux-only, so the guest memory caps are
// never used here; x86-64's 128 TiB keeps their defaults as on Linux.
func addressSpace() uint64 { return 128 << 40 }
