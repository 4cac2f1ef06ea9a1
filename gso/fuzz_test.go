package gso

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// seedSuperframes are small superframes of every kind Split cuts, the
// starting points the fuzzer mutates into hostile ones.
func seedSuperframes(t testing.TB) []struct {
	frame []byte
	typ   GSOType
	size  uint16
} {
	type seed = struct {
		frame []byte
		typ   GSOType
		size  uint16
	}
	return []seed{
		{buildFrame(t, frameSpec{tcpOpts: true, flags: 0x99, seq: 0xfffffff0, payload: randomPayload(1, 1200)}), GSOTCPv4, 500},
		{buildFrame(t, frameSpec{ipOptions: true, vlans: 1, payload: randomPayload(2, 900)}), GSOTCPv4 | GSOECN, 333},
		{buildFrame(t, frameSpec{v6: true, hopByHop: true, payload: randomPayload(3, 1000)}), GSOTCPv6, 400},
		{buildFrame(t, frameSpec{v6: true, vlans: 2, flags: 0x18, payload: randomPayload(4, 100)}), GSOTCPv6, 1440},
		{buildFrame(t, frameSpec{udp: true, payload: randomPayload(5, 700)}), GSOUDPL4, 300},
		{buildFrame(t, frameSpec{v6: true, udp: true, payload: randomPayload(6, 501)}), GSOUDPL4, 167},
		{buildFrame(t, frameSpec{flags: 0x11}), GSOTCPv4, 1448},
	}
}

// FuzzSplit: whatever the frame and header, Split does not panic, and when
// it succeeds every segment is a valid packet (lengths and checksums verify
// in gopacket), the payloads concatenated are the superframe's, TCP
// sequence numbers are contiguous, and the input is untouched.
func FuzzSplit(f *testing.F) {
	for _, s := range seedSuperframes(f) {
		f.Add(s.frame, uint8(s.typ), s.size)
	}
	f.Fuzz(func(t *testing.T, frame []byte, typ uint8, size uint16) {
		hdr := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOType(typ), GSOSize: size}
		want, cntErr := Segments(frame, hdr)
		l, _ := parse(frame)
		// Give exactly enough buffers, up to a bound that keeps one run
		// cheap; a superframe needing more must say ErrTooManySegments.
		n, bufSize := min(want, 256), len(frame)
		if hdr.GSOType != GSONone && cntErr == nil {
			bufSize = min(bufSize, l.data+int(size))
		}
		out, sizes := segmentBuffers(n, bufSize)
		orig := bytes.Clone(frame)
		got, err := Split(frame, hdr, out, sizes, 0)
		if !bytes.Equal(frame, orig) {
			t.Fatal("Split modified its input")
		}
		if cntErr != nil {
			if err != cntErr {
				t.Fatalf("Segments says %v, Split %v", cntErr, err)
			}
			return
		}
		if want > n {
			if err != ErrTooManySegments {
				t.Fatalf("%d segments into %d buffers: %v", want, n, err)
			}
			return
		}
		if err != nil || got != want {
			if hdr.GSOType == GSONone && err != nil {
				return // CompleteChecksum's verdict on a frame that is not a superframe
			}
			t.Fatalf("Split = %d, %v; Segments said %d", got, err, want)
		}
		if hdr.GSOType == GSONone {
			return
		}
		in, _, inOK := decode(frame)
		var payload []byte
		for i := range got {
			seg := out[i][:sizes[i]]
			if len(seg) > l.data+int(size) {
				t.Fatalf("segment %d: %d bytes, more than headers %d + gso_size %d", i, len(seg), l.data, size)
			}
			if !inOK {
				// gopacket refuses the superframe's headers (IPv4 or TCP
				// options it cannot parse, say), so it refuses the copies
				// too: check the checksums by hand.
				verifyByHand(t, seg)
				payload = append(payload, seg[l.data:]...)
				continue
			}
			d := verifySegment(t, seg)
			if d.tcp != nil && d.tcp.Seq != in.tcp.Seq+uint32(len(payload)) {
				t.Fatalf("segment %d: seq %d, want %d", i, d.tcp.Seq, in.tcp.Seq+uint32(len(payload)))
			}
			payload = append(payload, d.payload...)
		}
		// The IP length says where the payload ends. gopacket believes a
		// UDP length instead, but a USO superframe's UDP length is
		// ignored (as the kernel ignores it): each segment gets its own.
		wantPayload := frame[l.data:l.end]
		if inOK && in.tcp != nil {
			wantPayload = in.payload
		}
		if !bytes.Equal(payload, wantPayload) {
			t.Fatalf("segments carry %d bytes of payload, the superframe %d", len(payload), len(wantPayload))
		}
	})
}

// verifyByHand checks a segment's lengths and checksums with the naive
// checksum, for frames gopacket will not decode.
func verifyByHand(t *testing.T, seg []byte) {
	t.Helper()
	l, err := parse(seg)
	if err != nil || l.end != len(seg) {
		t.Fatalf("segment does not parse (%v) or has trailing bytes", err)
	}
	if !l.ipv6 && naiveChecksum(seg[l.l3:l.l4], 0) != 0 {
		t.Fatal("IPv4 header checksum does not verify")
	}
	if naiveChecksum(seg[l.l4:l.end], uint32(fold(l.pseudo(seg, l.end)))) != 0 {
		t.Fatal("L4 checksum does not verify")
	}
	if l.proto == protoUDP && int(binary.BigEndian.Uint16(seg[l.l4+4:])) != l.end-l.l4 {
		t.Fatal("UDP length does not cover the datagram")
	}
}

// FuzzCheck: Check does not panic, and a header it passes keeps its promise:
// a superframe is cut without error into segments that fit the MTU, a
// NEEDS_CSUM frame is completed into one whose L4 checksum verifies, and
// PartialChecksum prepares either into a frame Check passes again.
func FuzzCheck(f *testing.F) {
	for _, s := range seedSuperframes(f) {
		l, _ := parse(s.frame)
		f.Add(s.frame, FlagNeedsCsum, uint8(s.typ), s.size, uint16(l.l4), uint16(l.csumOffset()), uint16(1500))
		f.Add(s.frame, FlagNeedsCsum, uint8(GSONone), uint16(0), uint16(l.l4), uint16(l.csumOffset()), uint16(1500))
	}
	f.Add([]byte{1, 2, 3}, uint8(0), uint8(0), uint16(0), uint16(0), uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, frame []byte, flags, typ uint8, size, start, off, mtu uint16) {
		hdr := VirtioNetHdr{Flags: flags, GSOType: GSOType(typ), GSOSize: size, CsumStart: start, CsumOffset: off, HdrLen: 0xbeef}
		r := Check(frame, hdr, int(mtu))
		if r >= NumReasons {
			t.Fatalf("reason %d out of range", r)
		}
		if r != OK {
			return
		}
		if hdr.GSOType != GSONone {
			n, err := Segments(frame, hdr)
			if err != nil {
				t.Fatalf("Check passed, Segments says %v", err)
			}
			if n > 512 {
				return // tiny gso_size: legal, but too slow to cut in a fuzz run
			}
			out, sizes := segmentBuffers(n, len(frame))
			if _, err := Split(frame, hdr, out, sizes, 0); err != nil {
				t.Fatalf("Check passed, Split says %v", err)
			}
			l, _ := parse(frame)
			for i := range n {
				if mtu > 0 && sizes[i]-l.l3 > int(mtu) {
					t.Fatalf("segment %d: %d bytes of IP, MTU %d", i, sizes[i]-l.l3, mtu)
				}
			}
		} else if hdr.Flags&FlagNeedsCsum != 0 {
			done := bytes.Clone(frame)
			if err := CompleteChecksum(done, hdr); err != nil {
				t.Fatalf("Check passed, CompleteChecksum says %v", err)
			}
			if d, _, ok := decode(done); ok {
				verifyL4Checksum(t, d)
			}
		} else {
			return // an ordinary frame: nothing was promised
		}
		prepared, h := bytes.Clone(frame), hdr
		if err := PartialChecksum(prepared, &h); err != nil {
			t.Fatalf("Check passed, PartialChecksum says %v", err)
		}
		if r := Check(prepared, h, int(mtu)); r != OK {
			t.Fatalf("Check of PartialChecksum's output: %v", r)
		}
	})
}
