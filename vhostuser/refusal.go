package vhostuser

import (
	"encoding/binary"
	"unicode/utf8"
)

// The refusal note. vhost-user has no way for a back-end to say why it
// closes a connection: the front-end only sees the socket close, and its
// user guesses. So before closing a connection it refuses (too many
// clients, a memory table over the caps, any other violation), the switch
// writes one message of its own: a vhost-user header whose request code
// is RefusalRequest, far outside the specification's numbers, with the
// reply flag set (the only messages a back-end writes on this socket are
// replies), and a payload of UTF-8 text saying why. A front-end that knows
// the note (internal/vhostguest, vknetplug) shows the text; any other
// (QEMU) reads a reply it did not expect on a connection that is closing,
// and fails as it would have on the close alone.
const (
	// RefusalRequest is the refusal note's request code: "vknd" in ASCII,
	// big-endian.
	RefusalRequest = 0x766b6e64
	// MaxRefusalLen bounds the note's text in bytes, well under the 4096
	// bytes front-ends accept as a payload.
	MaxRefusalLen = 1024
)

// appendRefusal encodes the refusal note for reason, cut to MaxRefusalLen
// bytes on a character boundary.
func appendRefusal(dst []byte, reason string) []byte {
	if len(reason) > MaxRefusalLen {
		cut := MaxRefusalLen
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	dst = binary.LittleEndian.AppendUint32(dst, RefusalRequest)
	dst = binary.LittleEndian.AppendUint32(dst, flagVersion1|flagReply)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(reason)))
	return append(dst, reason...)
}
