package gso

import "testing"

// BenchmarkSplitTCPv4 cuts a 64 KiB TSO superframe (timestamps, MSS 1448:
// 46 segments) into 1514-byte frames; bytes/s count the payload.
func BenchmarkSplitTCPv4(b *testing.B) {
	payload := randomPayload(1, 65535-20-32)
	super := buildFrame(b, frameSpec{tcpOpts: true, payload: payload})
	hdr := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	out, sizes := segmentBuffers(64, 2048)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Split(super, hdr, out, sizes, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/46, "ns/segment")
}

// BenchmarkCompleteChecksum finishes the TCP checksum of a 1514-byte frame.
func BenchmarkCompleteChecksum(b *testing.B) {
	full := buildFrame(b, frameSpec{tcpOpts: true, payload: randomPayload(2, 1448)})
	l, _ := parse(full)
	hdr := VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: uint16(l.l4), CsumOffset: tcpCsumOffset}
	b.SetBytes(int64(len(full)))
	b.ReportAllocs()
	for b.Loop() {
		if err := CompleteChecksum(full, hdr); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	super := buildFrame(b, frameSpec{tcpOpts: true, payload: randomPayload(1, 65535-20-32)})
	hdr := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	b.ReportAllocs()
	for b.Loop() {
		if r := Check(super, hdr, 1500); r != OK {
			b.Fatal(r)
		}
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	buf := randomPayload(3, 1500)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		_ = Checksum(buf, 0)
	}
}
