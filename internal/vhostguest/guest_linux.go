package vhostguest

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
)

// Options shape a guest. Zero values pick what Linux's virtio-net does.
type Options struct {
	QueueSize  int  // entries per ring, a power of 2; 256
	RXBufSize  int  // bytes per posted RX buffer, header included; 2048
	NoMergeRX  bool // do not accept MRG_RXBUF: one RX buffer per frame
	NoEventIdx bool
	// NoProtocolFeatures: do not accept PROTOCOL_FEATURES, so no REPLY_ACK
	// and rings enabled as soon as they start.
	NoProtocolFeatures bool
	// TwoRegions splits guest memory into two regions, the second one
	// starting in the middle of the TX buffers, so frames cross regions.
	TwoRegions bool
	// SplitTX sends each frame as a header descriptor followed by data
	// descriptors of at most 4 KiB, instead of one descriptor.
	SplitTX bool
	// QuietTX: Send does not ask the device to call when it has used TX
	// frames; a driver that waits for TX room asks with TXRoom. Without
	// it every TX batch the device uses costs it a call (an eventfd
	// write) and the driver a wake-up.
	QuietTX bool
	// QueuePairs is how many RX/TX pairs the device is set up with (MQ,
	// which the device must offer); 0 or 1: one. Send, Receive and the
	// others use the pair Use chose, 0 at first.
	QueuePairs int
	// MemoryFiles, above 1, lists that many regions in the memory table,
	// each of its own memfd (at most 8): the guest's memory, then one page
	// each that nothing uses, as a VM with several memory backends.
	MemoryFiles int
	// Offloads accepts checksum and TSO offloads both ways when offered
	// (CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6): Send may then pass
	// superframes and partial checksums, and Receive may get them.
	Offloads bool
}

// offloadFeatures are what Options.Offloads accepts.
const offloadFeatures = FeatCsum | FeatGuestCsum | FeatGuestTSO4 | FeatGuestTSO6 | FeatHostTSO4 | FeatHostTSO6

const (
	txBufSize  = 16 << 10 // per TX descriptor: a 9000-byte frame and header fit in one, a superframe in a chain of 5
	splitChunk = 4 << 10
	guestBase  = 0x100000       // guest-physical address of memory offset 0
	userBase   = 0x7f3a00000000 // the "QEMU virtual" address of memory offset 0
)

// Guest is one guest with a virtio-net device over vhost-user.
type Guest struct {
	opts     Options
	memfd    int
	mem      []byte
	extra    []int // MemoryFiles' memfds after the first
	sock     int
	features uint64 // accepted
	protocol uint64
	hdrLen   int
	q        []ring       // pair k's RX ring is 2k, its TX ring 2k+1
	kick     []int        // eventfds: we write, the device reads
	callfd   []int        // eventfds: the device writes, we read
	iov      []unix.Iovec // SendFromFD's and ReceiveToFD's, for one frame
	pair     int          // the pair Send, Receive and the others use (Use)

	Kicks       [2]uint64 // kicks we sent, on RX rings (0) and TX rings (1)
	Calls       [2]uint64 // calls we saw (see Calls), the same way
	RXTruncated uint64    // frames Receive cut to the caller's buffer
}

// ring is one split virtqueue as the guest drives it. Descriptor i always
// uses buffer memory buf + i*bufSize.
type ring struct {
	num                int
	desc, avail, used  int // offsets in mem
	buf, bufSize       int
	free               []uint16 // free descriptors
	availIdx, lastUsed uint16
	base               uint16 // where the device resumes (SET_VRING_BASE)
	want               int    // TX: free descriptors the last short send needed
}

// New builds a guest's memory and rings; Attach connects it to a device.
func New(o Options) (*Guest, error) {
	if o.QueueSize == 0 {
		o.QueueSize = 256
	}
	if o.RXBufSize == 0 {
		o.RXBufSize = 2048
	}
	n := o.QueueSize
	rings := 2 * max(o.QueuePairs, 1)
	g := &Guest{opts: o, memfd: -1, sock: -1, q: make([]ring, rings), kick: make([]int, rings), callfd: make([]int, rings),
		iov: make([]unix.Iovec, 0, max(n, txChainBufs)+1)}
	for i := range rings {
		g.kick[i], g.callfd[i] = -1, -1
	}
	off := 0
	for i := range g.q {
		r := &g.q[i]
		r.num = n
		r.desc = off
		r.avail = off + 16*n
		r.used = align(r.avail+6+2*n, 4096)
		off = align(r.used+6+8*n, 4096)
	}
	for i := 0; i < rings; i += 2 {
		g.q[i].buf, g.q[i].bufSize = off, o.RXBufSize
		off = align(off+n*o.RXBufSize, 4096)
		g.q[i+1].buf, g.q[i+1].bufSize = off, txBufSize
		off = align(off+n*txBufSize, 1<<20)
	}
	for i := range g.q {
		r := &g.q[i]
		r.free = make([]uint16, n)
		for j := range r.free {
			r.free[j] = uint16(n - 1 - j)
		}
	}
	fd, err := unix.MemfdCreate("vhostguest", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("vhostguest: memfd_create: %w", err)
	}
	g.memfd = fd
	if err := unix.Ftruncate(fd, int64(off)); err != nil {
		g.Close()
		return nil, fmt.Errorf("vhostguest: ftruncate memfd: %w", err)
	}
	if g.mem, err = unix.Mmap(fd, 0, off, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		g.Close()
		return nil, fmt.Errorf("vhostguest: mmap memfd: %w", err)
	}
	for range max(o.MemoryFiles-1, 0) {
		fd, err := unix.MemfdCreate("vhostguest-extra", unix.MFD_CLOEXEC)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("vhostguest: memfd_create: %w", err)
		}
		g.extra = append(g.extra, fd)
		if err := unix.Ftruncate(fd, 4096); err != nil {
			g.Close()
			return nil, fmt.Errorf("vhostguest: ftruncate memfd: %w", err)
		}
	}
	for i := range g.kick {
		if g.kick[i], err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
			g.Close()
			return nil, fmt.Errorf("vhostguest: eventfd: %w", err)
		}
		if g.callfd[i], err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
			g.Close()
			return nil, fmt.Errorf("vhostguest: eventfd: %w", err)
		}
	}
	return g, nil
}

func align(v, a int) int { return (v + a - 1) &^ (a - 1) }

// Use makes Send, Receive, PostRX and the others work on queue pair k
// (below Options.QueuePairs), as a guest's vCPU k does.
func (g *Guest) Use(k int) { g.pair = k }

// Mem is the guest's memory; offset o is guest-physical address
// GuestAddr(o). Tests rewrite it to play a hostile guest.
func (g *Guest) Mem() []byte { return g.mem }

// GuestAddr is the guest-physical address of memory offset o.
func GuestAddr(o int) uint64 { return guestBase + uint64(o) }

// RingOffsets returns where queue q's descriptor table, avail and used
// rings sit in Mem.
func (g *Guest) RingOffsets(q int) (desc, avail, used int) {
	return g.q[q].desc, g.q[q].avail, g.q[q].used
}

// Buffers returns where queue q's buffers sit in Mem: n of size bytes
// each from off, buffer i at off+i*size. A test playing a hostile guest
// rewrites frames there while the device reads them.
func (g *Guest) Buffers(q int) (off, size, n int) {
	return g.q[q].buf, g.q[q].bufSize, g.q[q].num
}

// CallFD is the eventfd the device calls for queue q; KickFD the one we
// kick.
func (g *Guest) CallFD(q int) int { return g.callfd[q] }
func (g *Guest) KickFD(q int) int { return g.kick[q] }

// SocketFD is the vhost-user socket (-1 before Attach), for a driver
// that polls it to learn that the device hung up.
func (g *Guest) SocketFD() int { return g.sock }

// HeaderLen is the virtio-net header size negotiated.
func (g *Guest) HeaderLen() int { return g.hdrLen }

// Features is what the guest accepted.
func (g *Guest) Features() uint64 { return g.features }

// Offloads says what the guest negotiated to send (CSUM, HOST_TSO4/6)
// and to receive (GUEST_CSUM, GUEST_TSO4/6).
func (g *Guest) Offloads() (send, receive gso.Offloads) {
	f := g.features
	for _, m := range [...]struct {
		feat uint64
		send bool
		o    gso.Offloads
	}{
		{FeatCsum, true, gso.OffloadCsum}, {FeatHostTSO4, true, gso.OffloadTSO4}, {FeatHostTSO6, true, gso.OffloadTSO6},
		{FeatGuestCsum, false, gso.OffloadCsum}, {FeatGuestTSO4, false, gso.OffloadTSO4}, {FeatGuestTSO6, false, gso.OffloadTSO6},
	} {
		switch {
		case f&m.feat == 0:
		case m.send:
			send |= m.o
		default:
			receive |= m.o
		}
	}
	return send, receive
}

// Attach sets the socket to the device (connected, blocking); the guest
// owns and closes it.
func (g *Guest) Attach(sock int) {
	if g.sock >= 0 {
		unix.Close(g.sock)
	}
	g.sock = sock
}

// Close releases the guest's socket, eventfds and memory.
func (g *Guest) Close() {
	fds := []*int{&g.sock, &g.memfd}
	for i := range g.kick {
		fds = append(fds, &g.kick[i], &g.callfd[i])
	}
	for i := range g.extra {
		fds = append(fds, &g.extra[i])
	}
	for _, fd := range fds {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	if g.mem != nil {
		unix.Munmap(g.mem)
		g.mem = nil
	}
}

// Start negotiates and sets the device up as QEMU 7.2 does for a
// virtio-net device: features, protocol features, owner, the call fds at
// init, then on start features, memory table, each ring's size, base,
// addresses, kick and call, and finally enables the rings.
func (g *Guest) Start() error {
	p, err := g.get(ReqGetFeatures, nil)
	if err != nil {
		return err
	}
	offered := binary.LittleEndian.Uint64(p)
	want := uint64(FeatVersion1 | FeatMrgRxbuf | FeatEventIdx | FeatProtocolFeature)
	if g.opts.Offloads {
		want |= offloadFeatures
	}
	if g.opts.NoMergeRX {
		want &^= FeatMrgRxbuf
	}
	if g.opts.NoEventIdx {
		want &^= FeatEventIdx
	}
	if g.opts.NoProtocolFeatures {
		want &^= FeatProtocolFeature
	}
	if g.opts.QueuePairs > 1 {
		want |= FeatMQ
	}
	g.features = offered & want
	g.protocol = 0
	if g.features&FeatProtocolFeature != 0 {
		p, err := g.get(ReqGetProtocolFeatures, nil)
		if err != nil {
			return err
		}
		proto := binary.LittleEndian.Uint64(p) & (ProtoFeatReplyAck | ProtoFeatMQ)
		if g.opts.QueuePairs <= 1 {
			proto &^= ProtoFeatMQ
		}
		if err := g.Message(ReqSetProtocolFeatures, FlagVersion1, u64(proto)); err != nil {
			return err
		}
		g.protocol = proto
		if proto&ProtoFeatMQ != 0 {
			// As QEMU: more pairs than the device has fail the start.
			p, err := g.get(ReqGetQueueNum, nil)
			if err != nil {
				return err
			}
			if most := binary.LittleEndian.Uint64(p); uint64(g.opts.QueuePairs) > most {
				return fmt.Errorf("vhostguest: %d queue pairs asked, the device has %d", g.opts.QueuePairs, most)
			}
		}
	}
	if g.opts.QueuePairs > 1 && (g.features&FeatMQ == 0 || g.protocol&ProtoFeatMQ == 0) {
		return fmt.Errorf("vhostguest: %d queue pairs asked, the device offers no multi-queue", g.opts.QueuePairs)
	}
	if err := g.call(ReqSetOwner, nil); err != nil {
		return err
	}
	for i := range g.q {
		if err := g.call(ReqSetVringCall, u64(uint64(i)), g.callfd[i]); err != nil {
			return err
		}
	}
	if err := g.call(ReqSetFeatures, u64(g.features)); err != nil {
		return err
	}
	g.hdrLen = 10
	if g.features&(FeatVersion1|FeatMrgRxbuf) != 0 {
		g.hdrLen = 12
	}
	if err := g.call(ReqSetMemTable, g.memTable(), g.memFDs()...); err != nil {
		return err
	}
	for i := range g.q {
		r := &g.q[i]
		if err := g.call(ReqSetVringNum, state(uint32(i), uint32(r.num))); err != nil {
			return err
		}
		if err := g.call(ReqSetVringBase, state(uint32(i), uint32(r.base))); err != nil {
			return err
		}
		a := binary.LittleEndian.AppendUint32(nil, uint32(i))
		a = binary.LittleEndian.AppendUint32(a, 0)
		a = binary.LittleEndian.AppendUint64(a, userBase+uint64(r.desc))
		a = binary.LittleEndian.AppendUint64(a, userBase+uint64(r.used))
		a = binary.LittleEndian.AppendUint64(a, userBase+uint64(r.avail))
		a = binary.LittleEndian.AppendUint64(a, 0)
		if err := g.call(ReqSetVringAddr, a); err != nil {
			return err
		}
		if err := g.call(ReqSetVringKick, u64(uint64(i)), g.kick[i]); err != nil {
			return err
		}
		if err := g.call(ReqSetVringCall, u64(uint64(i)), g.callfd[i]); err != nil {
			return err
		}
	}
	if g.features&FeatProtocolFeature != 0 {
		for i := range g.q {
			if err := g.call(ReqSetVringEnable, state(uint32(i), 1)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Stop stops every ring as QEMU does (disable, then GET_VRING_BASE) and
// remembers where the device stopped, for the next Start; it returns the
// first pair's bases.
func (g *Guest) Stop() ([2]uint16, error) {
	var bases [2]uint16
	for i := range g.q {
		if g.features&FeatProtocolFeature != 0 {
			if err := g.call(ReqSetVringEnable, state(uint32(i), 0)); err != nil {
				return bases, err
			}
		}
	}
	for i := range g.q {
		p, err := g.get(ReqGetVringBase, state(uint32(i), 0))
		if err != nil {
			return bases, err
		}
		if len(p) != 8 || binary.LittleEndian.Uint32(p) != uint32(i) {
			return bases, fmt.Errorf("vhostguest: GET_VRING_BASE %d answered %x", i, p)
		}
		g.q[i].base = uint16(binary.LittleEndian.Uint32(p[4:]))
		if i < len(bases) {
			bases[i] = g.q[i].base
		}
	}
	return bases, nil
}

// memTable is the SET_MEM_TABLE payload: one region, or two split in the
// middle of the TX buffers.
func (g *Guest) memTable() []byte {
	type reg struct{ off, size int }
	regs := []reg{{0, len(g.mem)}}
	if g.opts.TwoRegions {
		// 8 KiB into a 16 KiB buffer: that buffer straddles the regions.
		mid := g.q[1].buf + g.q[1].num*txBufSize/2 + 8192
		regs = []reg{{0, mid}, {mid, len(g.mem) - mid}}
	}
	for i := range g.extra {
		regs = append(regs, reg{len(g.mem) + i*4096, 4096})
	}
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(regs)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range regs {
		b = binary.LittleEndian.AppendUint64(b, GuestAddr(r.off))
		b = binary.LittleEndian.AppendUint64(b, uint64(r.size))
		b = binary.LittleEndian.AppendUint64(b, userBase+uint64(r.off))
		if r.off >= len(g.mem) {
			b = binary.LittleEndian.AppendUint64(b, 0) // its own file, from its start
			continue
		}
		b = binary.LittleEndian.AppendUint64(b, uint64(r.off))
	}
	return b
}

func (g *Guest) memFDs() []int {
	if g.opts.TwoRegions {
		return append([]int{g.memfd, g.memfd}, g.extra...)
	}
	return append([]int{g.memfd}, g.extra...)
}

// Dial connects to a vhost-user back-end listening on path and returns the
// socket, for Attach.
func Dial(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("vhostguest: socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("vhostguest: connecting to %s: %w", path, err)
	}
	return fd, nil
}

// Remap sends the memory table again (SET_MEM_TABLE, the same memory), as
// a front-end does when the guest's memory changes: the device maps it
// anew and lets go of its old mapping while the rings run. With
// REPLY_ACK it waits for the device's answer.
func (g *Guest) Remap() error {
	return g.call(ReqSetMemTable, g.memTable(), g.memFDs()...)
}
