package vhostuser

import (
	"encoding/binary"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestRefusalNote: the note is one reply-flagged message with a request
// code outside the specification's, its text cut to MaxRefusalLen bytes
// on a character boundary.
func TestRefusalNote(t *testing.T) {
	b := appendRefusal(nil, "too many clients")
	if binary.LittleEndian.Uint32(b) != RefusalRequest || binary.LittleEndian.Uint32(b[4:]) != flagVersion1|flagReply ||
		binary.LittleEndian.Uint32(b[8:]) != 16 || string(b[12:]) != "too many clients" {
		t.Fatalf("note % x", b)
	}
	if int(RefusalRequest) < len(requestNames) {
		t.Fatalf("RefusalRequest %d is among the specification's requests", RefusalRequest)
	}
	long := strings.Repeat("é", MaxRefusalLen) // 2 bytes each: the cut falls inside one
	b = appendRefusal(nil, long)
	text := b[12:]
	if n := binary.LittleEndian.Uint32(b[8:]); int(n) != len(text) || len(text) > MaxRefusalLen || len(text) < MaxRefusalLen-1 || !utf8.Valid(text) {
		t.Fatalf("long note: size %d, %d bytes of text, valid UTF-8 %v", n, len(text), utf8.Valid(text))
	}
}
