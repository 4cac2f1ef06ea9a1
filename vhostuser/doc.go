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
// With [Config.Offloads] the guest may negotiate checksum and TSO
// offloads both ways, and each frame travels with its virtio_net_hdr as
// a [gso.VirtioNetHdr]: [Device.ReadTX] hands out what the guest wrote
// (dropping headers that ask for an offload the guest did not negotiate:
// that breaks the protocol), [Device.WriteRX] writes what the engine
// gives, and [Device.Offloads] says what the guest takes whole. Whether a
// header fits its frame is the engine's to check ([gso.Check]), as is
// cutting superframes for a guest that does not take them.
//
// A front-end may migrate the guest live: the device then keeps the dirty
// log the vhost-user specification describes (dirtylog.go), stops its
// rings on GET_VRING_BASE where the destination resumes ([Device.Stopped]
// says so afterwards), and on SEND_RARP hands the engine a RARP announcing
// the guest's MAC as its next TX frame ([TXResult.Announce]).
//
// The control and data paths assume a little-endian host (amd64, arm64),
// as virtio 1.0 rings are little-endian and their indices are accessed as
// native words.
package vhostuser

// How the engine drives a Device (one per accepted connection):
//
//	d, err := vhostuser.NewDevice(conn, vhostuser.Config{Note: logf, Offloads: true, Large: bigBuf})
//	poll d.SocketFD() for reading
//
//	socket readable:
//		ch, err := d.HandleSocket()   // err: close d, log err
//		if ch&vhostuser.KickChanged != 0 {
//			re-register d.KickFD(vhostuser.RXQ) and d.KickFD(vhostuser.TXQ) (-1: none)
//		}
//		if ch&vhostuser.StateChanged != 0 && d.Ready() {
//			read TX once and flush the RX queue: a resumed guest may not kick
//		}
//	TX kick readable, or TX marked busy:
//		d.DrainKick(vhostuser.TXQ)
//		n, more, err := d.ReadTX(bufs, sizes, hdrs)   // forward bufs[:n], gso.Check hdrs[:n]
//		more: the guest will not kick; come back after serving other ports
//	frames queued for the guest, or RX kick readable:
//		d.DrainKick(vhostuser.RXQ)
//		n, err := d.WriteRX(frames, hdrs)   // drop frames[:n] from the queue
//		(hdrs: only headers d.Offloads() Takes; nil for none)
//		n < len(frames): out of buffers; wait for the RX kick
//
// The loop's goroutine must call debug.SetPanicOnFault(true) once: a
// front-end that truncates a shared memory file makes our next access
// fault, and that turns the fault into an error closing that guest instead
// of a crash of the daemon.
