package gso

import "errors"

// Error is what Split, CompleteChecksum and PartialChecksum return for a
// frame or header that is wrong: the Reason Check gives the same fault, so
// the engine can count a failed Split under secure mode's names, and what
// exactly was wrong. The values are the package's variables below, compared
// with errors.Is; returning one allocates nothing.
type Error struct {
	reason Reason
	msg    string
}

func (e *Error) Error() string { return e.msg }

// Reason is the drop reason for this error.
func (e *Error) Reason() Reason { return e.reason }

// Faults in the frame or its header.
var (
	ErrTooLong         = &Error{FrameTooLong, "gso: frame longer than MaxFrameLen"}
	ErrTruncated       = &Error{FrameMalformed, "gso: a header ends past the frame or past its IP packet"}
	ErrIPHeader        = &Error{FrameMalformed, "gso: IP version, header length or packet length invalid"}
	ErrFragment        = &Error{FrameMalformed, "gso: IP fragment"}
	ErrUDPLength       = &Error{FrameMalformed, "gso: UDP length below 8 or past the IP packet"}
	ErrTrailingBytes   = &Error{FrameMalformed, "gso: bytes past the IP packet's end in a superframe"}
	ErrFlags           = &Error{FlagsInvalid, "gso: virtio_net_hdr flags other than NEEDS_CSUM and DATA_VALID"}
	ErrGSOType         = &Error{GSOTypeUnknown, "gso: unknown gso_type"}
	ErrGSOTypeMismatch = &Error{GSOTypeMismatch, "gso: gso_type does not match the frame's IP version and protocol"}
	ErrGSOSize         = &Error{GSOSizeInvalid, "gso: gso_size is 0, or a segment would exceed the MTU"}
	ErrCsumMissing     = &Error{CsumMissing, "gso: superframe without NEEDS_CSUM"}
	ErrCsumOffset      = &Error{CsumOffsetInvalid, "gso: csum_start/csum_offset do not point at a TCP or UDP checksum in the frame"}
	// ErrUFO: UFO (gso_type UDP) is refused rather than fragmented. The
	// kernel has not produced it since 4.14, a TAP cannot negotiate it
	// (TUN_F_UFO is refused), and vknetd never offers HOST_UFO to a guest,
	// so a UFO frame is a guest ignoring what it negotiated. Supporting it
	// would mean writing IPv4 fragments and inserting an IPv6 fragment
	// header: code for traffic that cannot legitimately arrive.
	ErrUFO = &Error{GSOTypeUnsupported, "gso: UFO (gso_type UDP) is not supported"}
)

// Faults in the caller's buffers, not in the frame.
var (
	// ErrTooManySegments: out has fewer buffers than the superframe has
	// segments (see Segments).
	ErrTooManySegments = errors.New("gso: more segments than output buffers")
	// ErrShortBuffer: an output buffer cannot hold its segment after offset.
	ErrShortBuffer = errors.New("gso: output buffer too short for its segment")
)
