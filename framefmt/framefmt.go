// Package framefmt turns a raw Ethernet frame into one human-readable line, for
// `vknetd -c` and other tools that watch frames cross the switch.
//
// A line looks like
//
//	2026-01-02T03:04:05.000006Z 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 74: 198.18.0.1:40000 > 198.18.0.2:80 TCP [S]
//
// that is: the time, source > destination MAC, any VLAN tags, the ethertype, the frame
// length, then after the colon what the decoder understood of the payload. A frame that
// ends too early says "truncated" after whatever could be decoded; one whose headers
// contradict themselves says "malformed". The output is always a single line of ASCII,
// whatever the frame holds, so it can go straight to a terminal or a log.
//
// Decoding uses gopacket's DecodingLayerParser with layers allocated once per Decoder,
// so a Decoder formats a frame without allocating (see Decoder.Line for the exceptions).
package framefmt

import (
	"sync"
	"time"
)

// TimeLayout is the timestamp format at the start of every line: RFC 3339 with
// microseconds, because frames of one exchange are often microseconds apart.
const TimeLayout = "2006-01-02T15:04:05.000000Z07:00"

var pool = sync.Pool{New: func() any { return NewDecoder() }}

// Line appends one line (no trailing newline) describing frame to dst and returns the
// extended slice. ts is the time printed at the start of the line. It is safe for
// concurrent use; callers formatting many frames on one goroutine should keep their own
// Decoder.
func Line(dst []byte, ts time.Time, frame []byte) []byte {
	d := pool.Get().(*Decoder)
	dst = d.Line(dst, ts, frame)
	pool.Put(d)
	return dst
}
