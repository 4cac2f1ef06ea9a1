// Package vhostuser is the back-end side of the vhost-user protocol for one
// virtio-net device: the control messages a front-end such as QEMU or
// DPDK's virtio-user sends over a unix socket, the guest memory it shares
// with us, and the two split virtqueues (RX 0, TX 1) over that memory.
//
// It knows nothing of the switch. The engine owns the event loop: it polls
// the socket and the kick eventfds this package hands out, and calls
// [Device.HandleSocket], [Device.ReadTX] and [Device.WriteRX] when they fire.
// Nothing here blocks, starts goroutines or allocates per frame.
//
// The guest is not trusted. Everything it controls (descriptors, ring
// indices, the memory table, and the shared memory itself, which it may
// rewrite at any moment) is read once into locals, checked, and only then
// used; a violation is an error matching [ErrViolation] that names the
// queue, index or address at fault, and the engine closes that guest.
//
// The control and data paths assume a little-endian host (amd64, arm64),
// as virtio 1.0 rings are little-endian and their indices are accessed as
// native words.
package vhostuser
