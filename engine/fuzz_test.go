package engine

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/mactable"
)

// parseStream is the reference reading of a QEMU stream: the complete
// frames before the first invalid length, and whether one was met.
func parseStream(data []byte, maxFrame int) (frames [][]byte, bad bool) {
	for len(data) >= 4 {
		n := int(binary.BigEndian.Uint32(data))
		if n == 0 || n > maxFrame {
			return frames, true
		}
		if len(data) < 4+n {
			return frames, false
		}
		frames = append(frames, data[4:4+n])
		data = data[4+n:]
	}
	return frames, false
}

// FuzzStreamFraming feeds arbitrary bytes, cut into arbitrary pieces, to a
// stream client. The switch must not panic; what an observer receives is
// an in-order subsequence of the complete frames (some are dropped as runts
// or oversize, or go nowhere); an invalid length closes that client.
func FuzzStreamFraming(f *testing.F) {
	frame := func(dst byte, size int) []byte {
		return prefixed(ethFrame([6]byte{0x02, 0, 0, 0, 0, dst}, mac(7), 0x0800, size))
	}
	f.Add(frame(9, 60), uint8(3))
	f.Add(append(frame(9, 60), frame(0xff, 1514)...), uint8(7))
	f.Add(append(frame(9, 100), 0, 0, 0, 0), uint8(1))           // zero length
	f.Add(append(frame(9, 100), 0, 0, 0x06, 0x0b), uint8(200))   // 1547: oversize
	f.Add(append(frame(9, 100), 0, 0, 0, 10, 1, 2, 3), uint8(2)) // runt, cut short
	f.Add(bytes.Repeat(frame(9, 64), 40), uint8(0))              // many at once
	f.Fuzz(func(t *testing.T, data []byte, piece uint8) {
		if len(data) > 1<<16 {
			return
		}
		s := newTestSwitch(t, false, mactable.Config{}, func(c *Config) { c.Batch = 4 })
		q := s.connectStream()
		obs := s.connect()
		step := int(piece) + 1
		for off := 0; off < len(data); off += step {
			end := min(off+step, len(data))
			if _, err := unix.Write(q.fd, data[off:end]); err != nil {
				break // the switch closed the client after a bad length
			}
			s.pump()
		}
		s.pump()
		want, bad := parseStream(data, s.e.maxFrame)
		got := obs.recv(t)
		i := 0
		for _, g := range got {
			for i < len(want) && !bytes.Equal(want[i], g) {
				i++
			}
			if i == len(want) {
				t.Fatalf("observer got a frame that is not one of the stream's frames, in order: % x", g)
			}
			i++
		}
		if bad && !q.port.dead {
			t.Fatal("an invalid length did not close the stream client")
		}
		if !bad && q.port.dead {
			t.Fatal("a valid stream closed its client")
		}
	})
}

// FuzzDgramAddress gives the datagram path arbitrary sender addresses: no
// panic; a key is the whole address for an abstract name (NULs kept, so
// two names differing after a NUL are two clients) and a pathname up to
// its first NUL, never past the address length; a display name is "@"
// for abstract names and holds no raw NUL or control byte.
func FuzzDgramAddress(f *testing.F) {
	f.Add([]byte("/tmp/vm1.sock"), 15, []byte("VFKT"))
	f.Add([]byte{0, 'a', 'b', 's'}, 6, bytes.Repeat([]byte{1}, 60))
	f.Add([]byte{0, 'v', 'i', 'c', 't', 'i', 'm', 0, 'x'}, 11, bytes.Repeat([]byte{1}, 60))
	f.Add([]byte("/tmp/a\x00\n\x00b"), 20, []byte{})
	f.Add([]byte{}, 2, bytes.Repeat([]byte{1}, 60))
	f.Add(bytes.Repeat([]byte{'x'}, 120), 200, []byte{})
	f.Fuzz(func(t *testing.T, path []byte, addrLen int, frame []byte) {
		s, _ := newDgramSwitch(t)
		var addr unix.RawSockaddrUnix
		for i := 0; i < len(path) && i < len(addr.Path); i++ {
			addr.Path[i] = int8(path[i])
		}
		raw := make([]byte, len(addr.Path))
		for i := range raw {
			raw[i] = byte(addr.Path[i])
		}
		raw = raw[:min(max(0, addrLen-2), len(raw))]
		want := raw
		if len(raw) > 0 && raw[0] != 0 {
			if i := bytes.IndexByte(raw, 0); i >= 0 {
				want = raw[:i]
			}
		}
		if key := dgramKey(nil, &addr, addrLen); !bytes.Equal(key, want) {
			t.Fatalf("key %q for address %q (length %d), want %q", key, raw, addrLen, want)
		}
		name := dgramDisplayName(string(want))
		if isAbstract(string(want)) != strings.HasPrefix(name, "@") {
			t.Fatalf("display name %q of %q", name, want)
		}
		for _, c := range []byte(name) {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("display name %q holds a raw control byte", name)
			}
		}
		// A sender that owns nothing on this host: whatever the address,
		// nothing is registered but abstract names, which have no owner.
		p := s.l.dgramPort(&s.e.listeners[0], &addr, addrLen, senderCred{1, 4242}, frame)
		if p != nil && (p.dgram.key != string(want) || !isAbstract(p.dgram.key)) {
			t.Fatalf("registered %q for address %q", p.dgram.key, raw)
		}
	})
}
