package vhostuser

import (
	"fmt"
	"testing"

	"github.com/vknetd/vknetd/internal/vhostguest"
)

// TestFramesBothWays moves batches of frames from guest to switch and
// back, at the sizes that matter, over the layouts guests use.
func TestFramesBothWays(t *testing.T) {
	layouts := []struct {
		name string
		o    vhostguest.Options
	}{
		{"mrg-eventidx", vhostguest.Options{}},
		{"no-mrg-big-buffers", vhostguest.Options{NoMergeRX: true, RXBufSize: 9216}},
		{"no-eventidx-no-protocol", vhostguest.Options{NoEventIdx: true, NoProtocolFeatures: true}},
		{"two-regions-split-tx", vhostguest.Options{TwoRegions: true, SplitTX: true}},
		{"mrg-small-buffers", vhostguest.Options{RXBufSize: 1526}},
	}
	for _, l := range layouts {
		for _, size := range []int{64, 1514, 9000} {
			t.Run(fmt.Sprintf("%s/%d", l.name, size), func(t *testing.T) {
				p := newPair(t, l.o)
				const batch = 32
				for round := 0; round < 20; round++ { // wrap the 256-entry rings
					want := frames(batch, size)
					if n := p.g.Send(want, nil); n != batch {
						t.Fatalf("guest sent %d of %d", n, batch)
					}
					p.d.DrainKick(TXQ)
					got, sizes := bufs(batch, 9216)
					n, more, err := p.d.ReadTX(got, sizes, nil)
					if err != nil || n != batch || more {
						t.Fatalf("ReadTX = %d, %v, %v; want %d, false, nil", n, more, err, batch)
					}
					sameFrames(t, "tx", want, got, sizes)

					p.g.PostRX(256)
					n, err = p.d.WriteRX(want, nil)
					if err != nil || n != batch {
						t.Fatalf("WriteRX = %d, %v; want %d (stats %+v)", n, err, batch, p.d.Stats())
					}
					got, sizes = bufs(batch, 9216)
					if n := p.g.Receive(got, sizes, nil); n != batch {
						t.Fatalf("guest received %d of %d", n, batch)
					}
					sameFrames(t, "rx", want, got, sizes)
				}
				st := p.d.Stats()
				if st.TXOversize+st.TXShort+st.RXOversize != 0 {
					t.Fatalf("drops: %+v", st)
				}
			})
		}
	}
}
