package superframe

import (
	"testing"

	"github.com/vknetd/vknetd/gso"
)

// What the builders make is what a kernel sends: the header describes the
// frame (gso.Check), and the frame cuts into segments that fit the MTU.
func TestBuildersMakeHonestSuperframes(t *testing.T) {
	f := Flow{SrcIP: [4]byte{198, 18, 0, 1}, DstIP: [4]byte{198, 18, 0, 2}, SrcPort: 1, DstPort: 2, MSS: 1448}
	tcp, th := f.TCP(65535-40, 1000)
	f.MSS = 1200
	udp, uh := f.UDP(10000)
	f.MSS = 0
	plain, ph := f.TCP(300, 1)
	for _, c := range []struct {
		name  string
		frame []byte
		hdr   gso.VirtioNetHdr
		segs  int
	}{{"tcp", tcp, th, 46}, {"udp", udp, uh, 9}, {"needs-csum", plain, ph, 1}} {
		if r := gso.Check(c.frame, c.hdr, 1500); r != gso.OK {
			t.Errorf("%s: gso.Check = %v", c.name, r)
		}
		n, err := gso.Segments(c.frame, c.hdr)
		if err != nil || n != c.segs {
			t.Errorf("%s: %d segments (%v), want %d", c.name, n, err, c.segs)
		}
	}
	if ph.GSOType != gso.GSONone || ph.Flags != gso.FlagNeedsCsum {
		t.Errorf("MSS 0: header %+v, want a plain frame with a checksum to finish", ph)
	}
}
