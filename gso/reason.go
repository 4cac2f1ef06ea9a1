package gso

import "strconv"

// Reason is Check's verdict on a header and its frame: OK, or what the
// header lies about. Each one becomes a secure-mode drop reason, counted in
// arrays indexed by Reason, so the values are dense and small.
type Reason uint8

const (
	// OK: the header describes its frame.
	OK Reason = iota
	// FrameTooLong: the frame is longer than MaxFrameLen.
	FrameTooLong
	// FrameMalformed: a superframe, or a frame asking for a checksum,
	// whose Ethernet, IP or TCP/UDP headers do not parse: truncated, a bad
	// IP version or length, an IP fragment, a TCP data offset below 5,
	// bytes past the IP packet's end in a superframe longer than the
	// Ethernet minimum, or (in a frame asking for its UDP checksum) a UDP
	// length below 8 or past the IP packet.
	FrameMalformed
	// FlagsInvalid: flags other than NEEDS_CSUM and DATA_VALID.
	FlagsInvalid
	// GSOTypeUnknown: a gso_type that is not NONE, TCPV4, TCPV6, UDP or
	// UDP_L4, or the ECN bit on anything but TCP.
	GSOTypeUnknown
	// GSOTypeUnsupported: UFO (gso_type UDP), which nothing here offers;
	// see ErrUFO.
	GSOTypeUnsupported
	// GSOTypeMismatch: gso_type says TCPv4, TCPv6 or UDP and the frame is
	// something else (another IP version, another protocol, not IP).
	GSOTypeMismatch
	// GSOSizeInvalid: gso_size is 0 on a superframe, or a segment of
	// gso_size bytes of payload would not fit the MTU.
	GSOSizeInvalid
	// CsumMissing: a superframe without NEEDS_CSUM. Its checksum cannot be
	// complete (each segment needs its own), so the header is wrong.
	CsumMissing
	// CsumOffsetInvalid: NEEDS_CSUM with csum_start not at the TCP/UDP
	// header or csum_offset not at its checksum field (16 for TCP, 6 for
	// UDP), or on a frame that is not TCP or UDP over IP.
	CsumOffsetInvalid
	// NumReasons is the number of Reason values, OK included.
	NumReasons
)

var reasonNames = [NumReasons]string{
	OK:                 "ok",
	FrameTooLong:       "gso-frame-too-long",
	FrameMalformed:     "gso-frame-malformed",
	FlagsInvalid:       "vnet-flags-invalid",
	GSOTypeUnknown:     "gso-type-unknown",
	GSOTypeUnsupported: "gso-type-unsupported",
	GSOTypeMismatch:    "gso-type-mismatch",
	GSOSizeInvalid:     "gso-size-invalid",
	CsumMissing:        "csum-flag-missing",
	CsumOffsetInvalid:  "csum-offset-invalid",
}

// String returns the reason's kebab-case name, the drop counter's label.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "gso-reason-" + strconv.Itoa(int(r))
}
