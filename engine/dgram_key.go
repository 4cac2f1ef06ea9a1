package engine

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// dgramKey appends to buf the identity of the datagram client at addr:
// its whole address, as long as addrLen says. An abstract name (leading
// NUL) is kept byte for byte, NULs included, so "\x00victim" and
// "\x00victim\x00x" are two clients. A pathname ends at its first NUL,
// which is where the kernel ends it too: whether the sender's address
// length counted a trailing NUL does not make a second client. An empty
// key is an unbound sender.
func dgramKey(buf []byte, addr *unix.RawSockaddrUnix, addrLen int) []byte {
	n := min(max(0, addrLen-2), len(addr.Path)) // 2: sun_family
	if n == 0 {
		return buf
	}
	abstract := addr.Path[0] == 0
	for _, c := range addr.Path[:n] {
		if c == 0 && !abstract {
			break
		}
		buf = append(buf, byte(c))
	}
	return buf
}

// isAbstract reports a key in the abstract namespace, which has no file.
func isAbstract(key string) bool { return len(key) > 0 && key[0] == 0 }

// dgramDisplayName renders a client's key for logs and listings: an
// abstract name as "@name"; every NUL, backslash, invalid byte and
// character that is not printable (controls, bidi overrides) escaped, and
// a path's leading "@" too, so a client's address can neither forge log
// lines nor pass for another client's.
func dgramDisplayName(key string) string {
	var b strings.Builder
	if isAbstract(key) {
		b.WriteByte('@')
		key = key[1:]
	} else if strings.HasPrefix(key, "@") {
		b.WriteString(`\x40`) // a (relative) path "@x" is not the abstract "@x"
		key = key[1:]
	}
	const hex = "0123456789abcdef"
	for i := 0; i < len(key); {
		r, size := utf8.DecodeRuneInString(key[i:])
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == utf8.RuneError && size <= 1, !unicode.IsPrint(r):
			for _, c := range []byte(key[i : i+size]) {
				b.WriteString(`\x`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&15])
			}
		default:
			b.WriteString(key[i : i+size])
		}
		i += size
	}
	return b.String()
}
