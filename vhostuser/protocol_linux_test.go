package vhostuser

import (
	"encoding/binary"
	"errors"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

func msg(req, flags uint32, payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, req)
	b = binary.LittleEndian.AppendUint32(b, flags)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

func send(t *testing.T, fd int, b []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, b, oob, nil, 0); err != nil {
		t.Fatal(err)
	}
}

func memfd(t *testing.T, size int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	return fd
}

func memTable(regs ...Region) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(regs)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range regs {
		for _, v := range []uint64{r.GuestAddr, r.Size, r.UserAddr, r.MmapOffset} {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
	}
	return b
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func u64p(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func statep(i, n uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, i), n)
}

func addrp(i uint32, desc, used, avail uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, i)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, v := range []uint64{desc, used, avail, 0} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

func logp(size, offset uint64) []byte {
	return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, size), offset)
}

// loggedAddr is SET_VRING_ADDR's payload asking for the used ring to be
// logged at guest address log.
func loggedAddr(i uint32, desc, used, avail, log uint64) []byte {
	b := addrp(i, desc, used, avail)
	binary.LittleEndian.PutUint32(b[4:], vringFLog)
	binary.LittleEndian.PutUint64(b[32:], log)
	return b
}

// TestHostileMessages: each malformed or unsupported message is refused
// with an error that names it, and every fd that came with it is closed.
func TestHostileMessages(t *testing.T) {
	const v1, need = 1, 1 | 8
	region := Region{GuestAddr: 0, Size: 1 << 20, UserAddr: 1 << 30}
	type step struct {
		b   []byte
		fds func(t *testing.T) []int
	}
	mem := func(n int, size int) func(t *testing.T) []int {
		return func(t *testing.T) []int {
			fds := make([]int, n)
			for i := range fds {
				fds[i] = memfd(t, size)
			}
			return fds
		}
	}
	goodMem := step{msg(5, v1, memTable(region)), mem(1, 1<<20)}
	logShm := step{b: msg(16, v1, u64p(1<<1))} // LOG_SHMFD
	efd := func(flags int) func(t *testing.T) []int {
		return func(t *testing.T) []int {
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|flags)
			if err != nil {
				t.Fatal(err)
			}
			return []int{fd}
		}
	}
	// Kick and call fds that are not eventfds (issue 15, finding 2): the
	// read end of a pipe whose writer is gone reads end of file forever.
	deadPipe := func(t *testing.T) []int {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(p[1])
		return p[:1]
	}
	socket := func(t *testing.T) []int {
		a, b := socketpair(t)
		unix.Close(b)
		return []int{a}
	}
	file := func(t *testing.T) []int {
		fd, err := unix.Open(t.TempDir(), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		return []int{fd}
	}
	cases := []struct {
		name  string
		steps []step
		want  string // "" means no error and nothing changed
	}{
		{"truncated SET_FEATURES", []step{{b: msg(2, v1, []byte{1, 2, 3, 4})}}, "SET_FEATURES (2): payload of 4 bytes, want 8"},
		{"truncated SET_VRING_ADDR", []step{{b: msg(9, v1, make([]byte, 20))}}, "payload of 20 bytes, want 40"},
		{"bad version", []step{{b: msg(1, 2, nil)}}, "protocol version 2"},
		{"reply flag from front-end", []step{{b: msg(1, v1|4, nil)}}, "front-end sent a reply"},
		{"huge payload", []step{{b: msg(2, v1, make([]byte, 5000))}}, "payload of 5000 bytes"},
		{"unknown with need_reply", []step{{b: msg(99, need, nil)}}, "request 99: not supported, and the front-end expects a reply"},
		{"GET_CONFIG", []step{{b: msg(24, v1, make([]byte, 12))}}, "GET_CONFIG (24): not supported"},
		{"SET_LOG_BASE", []step{{b: msg(6, v1, make([]byte, 16))}}, "SET_LOG_BASE (6)"},
		{"unknown without reply", []step{{b: msg(20, v1, make([]byte, 8))}}, ""},
		{"unknown without reply, with fd", []step{{msg(7, v1, nil), mem(1, 4096)}}, ""},
		{"unoffered feature", []step{{b: msg(2, v1, u64p(1|1<<32))}}, "features 0x1 were not offered"},
		{"unoffered protocol feature", []step{{b: msg(16, v1, u64p(1<<9))}}, "protocol features 0x200 were not offered"},
		{"queue 2", []step{{b: msg(8, v1, statep(2, 256))}}, "SET_VRING_NUM (8): queue 2"},
		{"queue size 3", []step{{b: msg(8, v1, statep(0, 3))}}, "size 3 is not a power of 2"},
		{"queue size 65536", []step{{b: msg(8, v1, statep(0, 65536))}}, "size 65536"},
		{"fd on SET_OWNER", []step{{msg(3, v1, nil), mem(1, 4096)}}, "came with 1 fds, takes none"},
		{"too many regions", []step{{msg(5, v1, memTable(make([]Region, 9)...)), mem(8, 4096)}}, "9 regions"},
		{"regions cut short", []step{{b: msg(5, v1, memTable(region, region)[:8+40])}}, "2 regions in a payload of 48 bytes"},
		{"message cut short waits", []step{{b: msg(5, v1, memTable(region))[:30]}}, ""},
		{"region count and fds differ", []step{{msg(5, v1, memTable(region, Region{GuestAddr: 1 << 20, Size: 4096, UserAddr: 1 << 20})), mem(1, 1<<20)}}, "2 regions, 1 fds"},
		{"overlapping regions", []step{{msg(5, v1, memTable(region, Region{GuestAddr: 4096, Size: 4096, UserAddr: 1 << 40})), mem(2, 1<<20)}}, "overlap in guest memory"},
		{"file shorter than region", []step{{msg(5, v1, memTable(region)), mem(1, 4096)}}, "file of 4096 bytes is shorter"},
		{"offset past file", []step{{msg(5, v1, memTable(Region{Size: 4096, UserAddr: 1, MmapOffset: 1 << 20})), mem(1, 1<<20)}}, "shorter than offset"},
		{"fd not mappable", []step{{msg(5, v1, memTable(region)), func(t *testing.T) []int {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			unix.Close(p[1])
			return p[:1]
		}}}, "not a regular file"},
		{"ring outside memory", []step{goodMem,
			{b: msg(8, v1, statep(1, 256))},
			{b: msg(9, v1, addrp(1, 1<<30+(1<<20)-100, 1<<30+8192, 1<<30+4096))},
			{msg(12, v1, u64p(1)), efd(0)}}, "queue 1: descriptor table 0x400fff9c+0x1000 is not inside one memory region"},
		{"used ring outside memory", []step{goodMem,
			{b: msg(8, v1, statep(0, 256))},
			{b: msg(9, v1, addrp(0, 1<<30, 1<<29, 1<<30+4096))},
			{msg(12, v1, u64p(0)), efd(0)}}, "used ring 0x20000000+0x806"},
		{"misaligned avail ring", []step{goodMem,
			{b: msg(8, v1, statep(0, 256))},
			{b: msg(9, v1, addrp(0, 1<<30, 1<<30+8192, 1<<30+4098))},
			{msg(12, v1, u64p(0)), efd(0)}}, "avail ring not 4-byte aligned"},
		{"kick before addresses", []step{{b: msg(8, v1, statep(0, 256))}, {msg(12, v1, u64p(0)), efd(0)}}, "queue 0 started before SET_VRING_ADDR"},
		{"kick fd a dead pipe", []step{{msg(12, v1, u64p(0)), deadPipe}}, "SET_VRING_KICK (12): queue 0: the kick fd is not an eventfd"},
		{"kick fd a socket", []step{{msg(12, v1, u64p(1)), socket}}, "queue 1: the kick fd is not an eventfd"},
		{"kick fd a file", []step{{msg(12, v1, u64p(0)), file}}, "the kick fd is not an eventfd"},
		{"kick fd a memfd", []step{{msg(12, v1, u64p(0)), mem(1, 8)}}, "the kick fd is not an eventfd"},
		{"kick fd a semaphore", []step{{msg(12, v1, u64p(0)), efd(unix.EFD_SEMAPHORE)}}, "the kick fd is an eventfd in semaphore mode"},
		{"call fd a dead pipe", []step{{msg(13, v1, u64p(0)), deadPipe}}, "SET_VRING_CALL (13): queue 0: the call fd is not an eventfd"},
		{"call fd a socket", []step{{msg(13, v1, u64p(1)), socket}}, "queue 1: the call fd is not an eventfd"},
		{"call fd a file", []step{{msg(13, v1, u64p(0)), file}}, "the call fd is not an eventfd"},
		{"call fd an eventfd", []step{{msg(13, v1, u64p(0)), efd(0)}}, ""},
		{"kick without fd", []step{{b: msg(12, v1, u64p(1|1<<8))}}, "polling without a kick fd is not supported"},
		{"kick with two fds", []step{{msg(12, v1, u64p(1)), mem(2, 8)}}, "2 fds came, want 1"},
		{"unknown ring flag", []step{{b: msg(9, v1, append(addrp(0, 0, 0, 0)[:4], append([]byte{2, 0, 0, 0}, addrp(0, 0, 0, 0)[8:]...)...))}}, "flags 0x2: only VHOST_VRING_F_LOG"},
		// Dirty logging (issue 18): SET_LOG_BASE's fd, size and offset.
		{"log without LOG_SHMFD", []step{{msg(6, v1, logp(4096, 0)), mem(1, 4096)}}, "LOG_SHMFD was not negotiated"},
		{"log payload short", []step{logShm, {b: msg(6, v1, u64p(4096))}}, "payload of 8 bytes, want 16"},
		{"log without fd", []step{logShm, {b: msg(6, v1, logp(4096, 0))}}, "0 fds came, want 1 (the log's memory)"},
		{"log with two fds", []step{logShm, {msg(6, v1, logp(4096, 0)), mem(2, 4096)}}, "2 fds came, want 1"},
		{"log of 0 bytes", []step{logShm, {msg(6, v1, logp(0, 0)), mem(1, 4096)}}, "log of 0 bytes"},
		{"log size huge", []step{logShm, {msg(6, v1, logp(1<<62, 0)), mem(1, 4096)}}, "log of 0x4000000000000000 bytes, more than"},
		{"log offset huge", []step{logShm, {msg(6, v1, logp(4096, 1<<63)), mem(1, 4096)}}, "log offset 0x8000000000000000 is over"},
		{"log size beyond the fd", []step{logShm, {msg(6, v1, logp(8192, 0)), mem(1, 4096)}}, "file of 4096 bytes is shorter than offset 0x0 + size 0x2000"},
		{"log offset beyond the fd", []step{logShm, {msg(6, v1, logp(16, 1<<20)), mem(1, 8192)}}, "shorter than offset 0x100000 + size 0x10"},
		{"log fd a pipe", []step{logShm, {msg(6, v1, logp(16, 0)), deadPipe}}, "the log's fd is not a regular file"},
		{"log fd a socket", []step{logShm, {msg(6, v1, logp(16, 0)), socket}}, "the log's fd is not a regular file"},
		{"log too small for memory", []step{goodMem, logShm, {msg(6, v1, logp(16, 0)), mem(1, 4096)}},
			"a log of 0x10 bytes covers guest memory up to 0x80000; memory region 0 ends at 0x100000"},
		{"memory past the log", []step{logShm, {msg(6, v1, logp(16, 0)), mem(1, 4096)}, {b: msg(2, v1, u64p(1<<26))}, goodMem},
			"SET_MEM_TABLE (5): a log of 0x10 bytes covers guest memory up to 0x80000"},
		{"logged used ring past the log", []step{goodMem, logShm, {b: msg(8, v1, statep(0, 256))},
			{b: msg(9, v1, loggedAddr(0, 1<<30, 1<<30+8192, 1<<30+4096, 1<<20))}, {msg(6, v1, logp(32, 0)), mem(1, 4096)}},
			"queue 0's used ring is logged at 0x100000+0x806, past what a log of 0x20 bytes covers"},
		{"logged used ring grown past the log", []step{logShm, {b: msg(8, v1, statep(0, 8))},
			{b: msg(9, v1, loggedAddr(0, 1<<30, 1<<30+8192, 1<<30+4096, 0x100000-100))}, {msg(6, v1, logp(32, 0)), mem(1, 4096)},
			{b: msg(2, v1, u64p(1<<26))}, {b: msg(8, v1, statep(0, 256))}},
			"SET_VRING_NUM (8): queue 0's used ring is logged at 0xfff9c+0x806"},
		{"log that fits", []step{goodMem, logShm, {msg(6, v1, logp(32, 100)), mem(1, 4096)}, {b: msg(2, v1, u64p(1<<26))}}, ""},
		{"announce without RARP", []step{{b: msg(19, v1, u64p(0x0200_0000_0002))}}, "RARP was not negotiated"},
		{"announce a multicast MAC", []step{{b: msg(16, v1, u64p(1<<2))}, {b: msg(19, v1, u64p(0x0200_0000_0001))}}, "is not a unicast MAC"},
		{"announce", []step{{b: msg(16, v1, u64p(1<<2))}, {b: msg(19, v1, u64p(0x0200_0000_0002))}}, ""},
		{"too many fds", []step{{msg(3, v1, nil), mem(12, 8)}}, "more than 8 fds"},
		{"enable 2", []step{{b: msg(18, v1, statep(0, 2))}}, "neither 0 nor 1"},
	}
	before := openFDs(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, b := socketpair(t)
			defer unix.Close(b)
			d, err := NewDevice(a, Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			for _, s := range c.steps {
				var fds []int
				if s.fds != nil {
					fds = s.fds(t)
				}
				send(t, b, s.b, fds...)
				for _, fd := range fds {
					unix.Close(fd) // ours; the device has its own copies
				}
				if _, err = d.HandleSocket(); err != nil {
					break
				}
			}
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("err = %v, want none", err)
			case c.want != "" && (!errors.Is(err, ErrViolation) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("err = %v, want a violation containing %q", err, c.want)
			}
		})
	}
	if after := openFDs(t); after != before {
		t.Fatalf("%d fds open before, %d after: leaked", before, after)
	}
}

// TestPartialMessage: a message that arrives in pieces is processed once
// whole; nothing is lost or wedged.
func TestPartialMessage(t *testing.T) {
	a, b := socketpair(t)
	defer unix.Close(b)
	d, _ := NewDevice(a, Config{})
	defer d.Close()
	m := msg(1, 1, nil)
	m = append(m, msg(15, 1, nil)...)
	for _, cut := range []int{5, 10, 4} { // inside, across and between headers
		send(t, b, m[:cut])
		if _, err := d.HandleSocket(); err != nil {
			t.Fatalf("after %d bytes: %v", cut, err)
		}
		m = m[cut:]
	}
	send(t, b, m)
	if _, err := d.HandleSocket(); err != nil {
		t.Fatal(err)
	}
	var r [40]byte
	n, _ := unix.Read(b, r[:])
	if n != 40 || binary.LittleEndian.Uint32(r[0:]) != 1 || binary.LittleEndian.Uint32(r[20:]) != 15 ||
		binary.LittleEndian.Uint64(r[12:]) != offeredFeatures(false) || binary.LittleEndian.Uint64(r[32:]) != offeredProtocolFeatures {
		t.Fatalf("replies % x", r[:n])
	}
	unix.Close(b)
	if _, err := d.HandleSocket(); !errors.Is(err, ErrHangup) {
		t.Fatalf("after close: %v, want ErrHangup", err)
	}
}

// TestShrunkMemory: a front-end that truncates its memory file after we
// mapped it gets a violation, not a crashed daemon, when the engine's
// goroutine has SetPanicOnFault.
func TestShrunkMemory(t *testing.T) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	p := newPair(t, vhostguest.Options{})
	p.g.Send(frames(4, 64), nil)
	unix.Ftruncate(guestMemfd(t), 0)
	b, s := bufs(4, 2048)
	_, _, err := p.d.ReadTX(b, s, nil)
	if !errors.Is(err, ErrViolation) || !strings.Contains(err.Error(), "fault on guest memory") {
		t.Fatalf("err = %v", err)
	}
}

// guestMemfd finds the test guest's memfd among our fds.
func guestMemfd(t *testing.T) int {
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(l, "/memfd:vhostguest") {
			var fd int
			for _, c := range e.Name() {
				fd = fd*10 + int(c-'0')
			}
			return fd
		}
	}
	t.Fatal("no guest memfd")
	return -1
}

// TestDrainKick: a kick fd that reads end of file or fails closes the
// device instead of being reported readable again and again (issue 15,
// finding 2); an eventfd read empty is no error.
func TestDrainKick(t *testing.T) {
	a, b := socketpair(t)
	defer unix.Close(b)
	d, err := NewDevice(a, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	d.q[TXQ].kick = efd
	unix.Write(efd, u64p(3))
	if err := d.DrainKick(TXQ); err != nil || d.Stats().Kicks != 1 {
		t.Fatalf("kicked eventfd: %v, stats %+v", err, d.Stats())
	}
	if err := d.DrainKick(TXQ); err != nil || d.Stats().Kicks != 1 {
		t.Fatalf("empty eventfd: %v, stats %+v", err, d.Stats())
	}

	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	d.q[RXQ].kick = p[0] // as if SET_VRING_KICK had let it through
	if err := d.DrainKick(RXQ); !isViolation(err) || !strings.Contains(err.Error(), "queue 0: the kick fd reads end of file") {
		t.Fatalf("dead pipe: %v", err)
	}
}
