package vhostuser

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vknetd/vknetd/internal/hang"
)

// TestHostileRings: every way a guest can lie in its rings is an error
// naming the lie, never a panic or an access outside its memory, with the
// smallest queues and the largest.
func TestHostileRings(t *testing.T) {
	for _, num := range []int{8, maxQueueSize} {
		t.Run(fmt.Sprint(num), func(t *testing.T) { hostileRings(t, num) })
	}
}

func hostileRings(t *testing.T, num int) {
	// A loop shows once a chain is longer than the queue. In a large
	// queue a loop of descriptors with bytes in them carries more than a
	// frame first: "" wants the frame dropped (TX) or written (RX) after
	// a bounded walk; one of empty descriptors is cut short by their cap.
	loop, selfLoop := fmt.Sprintf("longer than the queue (%d): a loop", num), "a loop"
	if num > 2*maxEmptyDescs {
		loop, selfLoop = "", "zero-length descriptors"
	}
	cases := []struct {
		name  string
		rx    bool
		setup func(im *image)
		want  string
	}{
		{"address outside memory", false, func(im *image) {
			im.setDesc(0, 0x9000000, 100, 0, 0)
			im.post(0)
		}, "descriptor 0 points outside guest memory: 0x9000000+0x64"},
		{"address below memory", false, func(im *image) {
			im.setDesc(0, imageBase-4, 100, 0, 0)
			im.post(0)
		}, "outside guest memory"},
		{"length past the end", false, func(im *image) {
			im.setDesc(0, im.addr(0), 1<<20, 0, 0)
			im.post(0)
		}, "outside guest memory"},
		{"addr+len overflows", false, func(im *image) {
			im.setDesc(0, 0xffffffffffffff00, 0x200, 0, 0)
			im.post(0)
		}, "outside guest memory"},
		{"loop", false, func(im *image) {
			im.setDesc(0, im.addr(0), 100, descFNext, 1)
			im.setDesc(1, im.addr(0), 100, descFNext, 0)
			im.post(0)
		}, loop},
		{"self loop", false, func(im *image) {
			im.setDesc(3, im.addr(0), 0, descFNext, 3)
			im.post(3)
		}, selfLoop},
		{"next out of range", false, func(im *image) {
			im.setDesc(0, im.addr(0), 100, descFNext, uint16(num+192))
			im.post(0)
		}, fmt.Sprintf("descriptor 0 chains to %d, queue size %d", num+192, num)},
		{"head out of range", false, func(im *image) {
			im.post(uint16(num + 91))
		}, fmt.Sprintf("names descriptor %d", num+91)},
		{"head out of range after a good one", false, func(im *image) {
			im.setDesc(0, im.addr(0), 12+60, 0, 0)
			im.post(0)
			im.post(uint16(num + 91))
		}, fmt.Sprintf("names descriptor %d", num+91)},
		{"rx head out of range", true, func(im *image) {
			im.post(uint16(num + 91))
		}, fmt.Sprintf("names descriptor %d", num+91)},
		{"avail idx jumps", false, func(im *image) {
			im.setAvailIdx(uint16(num + 1))
		}, fmt.Sprintf("avail idx %d is %d entries past our 0", num+1, num+1)},
		{"avail idx runs backwards", false, func(im *image) {
			im.setAvailIdx(0xffff)
		}, "entries past"},
		{"indirect", false, func(im *image) {
			im.setDesc(0, im.addr(0), 16, 4, 0)
			im.post(0)
		}, "flags 0x4: indirect or unknown"},
		{"unknown flag", false, func(im *image) {
			im.setDesc(0, im.addr(0), 16, 0x80, 0)
			im.post(0)
		}, "flags 0x80"},
		{"writable descriptor in tx", false, func(im *image) {
			im.setDesc(0, im.addr(0), 100, descFWrite, 0)
			im.post(0)
		}, "device-writable"},
		{"readable descriptor in rx", true, func(im *image) {
			im.setDesc(0, im.addr(0), 2048, 0, 0)
			im.post(0)
		}, "not device-writable"},
		{"rx outside memory", true, func(im *image) {
			im.setDesc(0, 0x100, 2048, descFWrite, 0)
			im.post(0)
		}, "outside guest memory"},
		{"rx loop", true, func(im *image) {
			im.setDesc(0, im.addr(0), 4, descFWrite|descFNext, 0)
			im.post(0)
		}, loop},
		{"rx avail idx jumps", true, func(im *image) {
			im.setAvailIdx(uint16(num + 1))
		}, "entries past"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer hang.Guard(t, hang.Ring)()
			im := newImage(t, num, 26*num+(64<<10))
			c.setup(im)
			var err error
			if c.rx {
				_, _, err = im.q.writeBatch(&im.m, 12, true, frames(4, 1514), nil, &Stats{})
			} else {
				b, s := bufs(4, 2048)
				_, _, _, err = im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &Stats{})
			}
			if c.want == "" {
				if err != nil || im.q.walked > uint64(num) {
					t.Fatalf("err = %v after %d descriptors, want the frame taken after at most %d", err, im.q.walked, num)
				}
				return
			}
			if !errors.Is(err, ErrViolation) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want a violation containing %q", err, c.want)
			}
			if !strings.Contains(err.Error(), "queue 1") {
				t.Errorf("error %q does not name the queue", err)
			}
			if !im.canariesIntact() {
				t.Fatal("wrote outside guest memory")
			}
		})
	}
}

// TestOversizeAndShort: frames that do not fit are dropped and counted,
// chains without a frame too, and neither stops the ring.
func TestOversizeAndShort(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	im := newImage(t, 8, 64<<10)
	im.setDesc(0, im.addr(0), 12+3000, 0, 0) // too big for a 2048 buffer
	im.setDesc(1, im.addr(0), 12, 0, 0)      // header only
	im.setDesc(2, im.addr(0), 6, 0, 0)       // not even a header
	im.setDesc(3, im.addr(0), 12+60, 0, 0)   // fine
	for i := uint16(0); i < 4; i++ {
		im.post(i)
	}
	b, s := bufs(4, 2048)
	var st Stats
	n, more, _, err := im.q.readBatch(&im.m, &txRules{hdrLen: 12}, b, s, nil, &st)
	if n != 1 || more || err != nil || s[0] != 60 {
		t.Fatalf("readBatch = %d, %v, %v, size %d", n, more, err, s[0])
	}
	if st.TXOversize != 1 || st.TXShort != 2 {
		t.Fatalf("stats %+v", st)
	}
	if used := im.q.usedIdx; used != 4 {
		t.Fatalf("used idx %d, want all 4 chains returned", used)
	}

	// RX without MRG_RXBUF: a frame larger than the chain is dropped and
	// the chain kept for the next frame.
	rx := newImage(t, 8, 64<<10)
	rx.q.index = RXQ
	rx.setDesc(0, rx.addr(0), 1526, descFWrite, 0)
	rx.post(0)
	fs := [][]byte{frame(9000, 0), frame(1514, 1)}
	n, _, err = rx.q.writeBatch(&rx.m, 12, false, fs, nil, &st)
	if n != 2 || err != nil || st.RXOversize != 1 || st.RXFrames != 1 || rx.q.usedIdx != 1 {
		t.Fatalf("writeBatch = %d, %v, stats %+v, used %d", n, err, st, rx.q.usedIdx)
	}
}

func TestRegions(t *testing.T) {
	defer hang.Guard(t, hang.Ring)()
	ok := Region{GuestAddr: 0, Size: 1 << 20, UserAddr: 1 << 30}
	cases := []struct {
		name string
		regs []Region
		want string
	}{
		{"none", nil, "0 regions"},
		{"too many", make([]Region, 9), "9 regions"},
		{"zero size", []Region{{Size: 0}}, "size 0x0"},
		{"guest overflow", []Region{{GuestAddr: 1<<64 - 4096, Size: 8192}}, "overflows"},
		{"user overflow", []Region{{UserAddr: 1<<64 - 4096, Size: 8192}}, "overflows"},
		{"guest overlap", []Region{ok, {GuestAddr: 4096, Size: 4096, UserAddr: 1 << 40}}, "overlap in guest memory"},
		{"user overlap", []Region{ok, {GuestAddr: 1 << 30, Size: 4096, UserAddr: 1<<30 + 8192}}, "overlap in front-end memory"},
		{"huge", []Region{{Size: 1 << 50}}, "is 0 or over"},
	}
	for _, c := range cases {
		err := validateRegions(c.regs)
		if !errors.Is(err, ErrViolation) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	if err := validateRegions([]Region{ok, {GuestAddr: 1 << 20, Size: 4096, UserAddr: 1 << 20}}); err != nil {
		t.Errorf("adjacent regions refused: %v", err)
	}

	// A range across two adjacent regions is mapped and copied piecewise;
	// a ring must sit in one region.
	var m memory
	a, b := make([]byte, 4096), make([]byte, 4096)
	m.add(Region{GuestAddr: 0x1000, Size: 4096, UserAddr: 0x50000}, a)
	m.add(Region{GuestAddr: 0x2000, Size: 4096, UserAddr: 0x60000}, b)
	if !m.mapped(0x1ff0, 32) || m.mapped(0x2ff0, 32) || m.mapped(0xff0, 32) {
		t.Fatal("mapped wrong across regions")
	}
	if !m.copyTo(0x1ffe, []byte{1, 2, 3, 4}) || a[4094] != 1 || a[4095] != 2 || b[0] != 3 || b[1] != 4 {
		t.Fatal("piecewise copy wrong")
	}
	if m.user(0x50ff0, 32) != nil || m.user(0x50000, 4096) == nil || m.user(1<<64-8, 16) != nil {
		t.Fatal("user range translation wrong")
	}
}
