// Package vhostguest plays the front-end and the guest of a vhost-user
// virtio-net device, in Go, for tests and benchmarks: guest memory in a
// shared memfd, split virtqueues laid out in it the way Linux lays them
// out, eventfds for kicks and calls, and the front-end's side of the
// protocol as QEMU sends it. It is written from the specification, not
// from package vhostuser, so the two check each other.
//
// It is Linux-only (memfd, eventfd) and not safe for concurrent use.
package vhostguest
