package vhostuser

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/gso"
)

// FuzzMessages feeds the fuzzer's bytes to a device as the front-end's
// side of the socket, in two writes, then hangs up. The device must not
// panic, must end with an error (the hangup at the latest), and must keep
// working through anything it accepts.
func FuzzMessages(f *testing.F) {
	f.Add(msg(1, 1, nil), 6)
	f.Add(append(msg(2, 1, u64p(offeredFeatures(false))), msg(15, 1, nil)...), 13)
	f.Add(append(msg(2, 1, u64p(offeredFeatures(true))), msg(15, 1, nil)...), 14) // offloads: cut is even
	f.Add(append(msg(8, 1, statep(0, 256)), msg(9, 1, addrp(0, 1, 2, 3))...), 20)
	f.Add(append(msg(10, 1, statep(1, 7)), msg(11, 1, statep(1, 0))...), 0)
	f.Add(msg(5, 9, memTable(Region{Size: 4096})), 12)
	f.Add(msg(18, 1, statep(0, 1)), 3)
	f.Add(msg(77, 8, nil), 1)
	// Migration: LOG_SHMFD and RARP, SET_LOG_BASE (its fd cannot come
	// this way), LOG_ALL, a logged ring, SEND_RARP.
	migration := msg(16, 1, u64p(1<<protoFeatLogShmfd|1<<protoFeatRARP))
	f.Add(append(migration, msg(6, 1, logp(4096, 0))...), 7)
	f.Add(append(append(migration, msg(2, 1, u64p(1<<featLogAll|1<<featVersion1))...), msg(9, 1, loggedAddr(1, 1, 2, 3, 1<<20))...), 22)
	f.Add(append(migration, msg(19, 9, u64p(0x5634_1200_5452))...), 30)
	f.Fuzz(func(t *testing.T, in []byte, cut int) {
		a, b := socketpair(t)
		defer unix.Close(b)
		// An even cut offers offloads, with a Large that always answers.
		d, err := NewDevice(a, Config{Offloads: cut%2 == 0, Large: func(int) []byte { return make([]byte, gso.MaxFrameLen) }})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if cut < 0 || cut > len(in) {
			cut = len(in)
		}
		var last error
		for _, part := range [][]byte{in[:cut], in[cut:]} {
			if len(part) > 0 {
				if _, err := unix.Write(b, part); err != nil {
					t.Fatal(err)
				}
			}
			if _, last = d.HandleSocket(); last != nil {
				break
			}
		}
		if last == nil {
			unix.Shutdown(b, unix.SHUT_WR)
			_, last = d.HandleSocket()
		}
		if last == nil {
			t.Fatal("no error after hangup")
		}
		if !errors.Is(last, ErrViolation) && !errors.Is(last, ErrHangup) {
			t.Fatalf("unexpected error kind: %v", last)
		}
		// Whatever state it is in, the data path must not panic.
		bb, s := bufs(2, 2048)
		d.ReadTX(bb, s, make([]gso.VirtioNetHdr, 2))
		d.WriteRX(frames(1, 64), []gso.VirtioNetHdr{{Flags: gso.FlagNeedsCsum, CsumStart: 20, CsumOffset: 6}})
	})
}
