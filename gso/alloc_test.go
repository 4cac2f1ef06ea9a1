package gso

import "testing"

// The segmentation path allocates nothing: not per segment, not per frame,
// not on errors (the error values are preallocated).
func TestNoAllocations(t *testing.T) {
	super := buildFrame(t, frameSpec{tcpOpts: true, payload: randomPayload(1, 65535-20-32)})
	tso := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	small := buildFrame(t, frameSpec{payload: randomPayload(2, 1460)})
	partial, csum := makePartial(t, small)
	out, sizes := segmentBuffers(64, 2048)
	for name, fn := range map[string]func(){
		"Split 64KiB into 46": func() {
			if n, err := Split(super, tso, out, sizes, 0); n != 46 || err != nil {
				t.Fatal(n, err)
			}
		},
		"Split error": func() {
			if _, err := Split(super[:100], tso, out, sizes, 0); err == nil {
				t.Fatal("no error")
			}
		},
		"Check":            func() { _ = Check(super, tso, 1500) },
		"CompleteChecksum": func() { _ = CompleteChecksum(partial, csum) },
		"PartialChecksum": func() {
			h := csum
			_ = PartialChecksum(small, &h)
		},
		"Decode+Encode": func() {
			var h VirtioNetHdr
			_ = h.Decode(out[0], HdrSize)
			_ = h.Encode(out[1], HdrSizeMrgRxbuf)
		},
	} {
		if a := testing.AllocsPerRun(200, fn); a != 0 {
			t.Errorf("%s: %v allocations per run", name, a)
		}
	}
}
