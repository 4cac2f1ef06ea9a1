package vhostguest

import (
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// Front-end requests this package sends (QEMU docs/interop/vhost-user.rst).
const (
	ReqGetFeatures         = 1
	ReqSetFeatures         = 2
	ReqSetOwner            = 3
	ReqResetOwner          = 4
	ReqSetMemTable         = 5
	ReqSetVringNum         = 8
	ReqSetVringAddr        = 9
	ReqSetVringBase        = 10
	ReqGetVringBase        = 11
	ReqSetVringKick        = 12
	ReqSetVringCall        = 13
	ReqSetVringErr         = 14
	ReqGetProtocolFeatures = 15
	ReqSetProtocolFeatures = 16
	ReqGetQueueNum         = 17
	ReqSetVringEnable      = 18
)

// Header flags.
const (
	FlagVersion1  = 0x1
	FlagReply     = 0x4
	FlagNeedReply = 0x8
)

// Feature bits the guest may accept.
const (
	FeatCsum            = 1 << 0  // the guest sends partial checksums
	FeatGuestCsum       = 1 << 1  // the guest takes partial checksums
	FeatGuestTSO4       = 1 << 7  // the guest takes TCPv4 superframes
	FeatGuestTSO6       = 1 << 8  // the guest takes TCPv6 superframes
	FeatHostTSO4        = 1 << 11 // the guest sends TCPv4 superframes
	FeatHostTSO6        = 1 << 12 // the guest sends TCPv6 superframes
	FeatMrgRxbuf        = 1 << 15
	FeatMQ              = 1 << 22 // several queue pairs (Options.QueuePairs)
	FeatEventIdx        = 1 << 29
	FeatProtocolFeature = 1 << 30
	FeatVersion1        = 1 << 32
	ProtoFeatMQ         = 1 << 0
	ProtoFeatReplyAck   = 1 << 3
)

// Message sends one front-end message: header, payload and fds in one
// sendmsg, as QEMU does.
func (g *Guest) Message(req, flags uint32, payload []byte, fds ...int) error {
	b := make([]byte, 12, 12+len(payload))
	binary.LittleEndian.PutUint32(b[0:], req)
	binary.LittleEndian.PutUint32(b[4:], flags)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(payload)))
	b = append(b, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(g.sock, b, oob, nil, unix.MSG_NOSIGNAL); err != nil {
		// A back-end that refused us may have closed before this request
		// went out (no REPLY_ACK to wait on): its note is still readable.
		if reason, ok := g.Refusal(); ok {
			return &RefusedError{Request: req, Reason: reason}
		}
		return fmt.Errorf("vhostguest: sending request %d: %w", req, err)
	}
	return nil
}

// RefusalRequest is the request code of vknetd's refusal note
// (vhostuser.RefusalRequest): a reply-flagged message the switch writes
// before closing a connection it refuses, its payload the reason in
// UTF-8. vhost-user itself has no way to say why.
const RefusalRequest = 0x766b6e64

// RefusedError is a refusal note: the back-end closed the connection and
// said why.
type RefusedError struct {
	Request uint32 // the request whose reply the note came in place of; 0 if none
	Reason  string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("vhostguest: request %d: the back-end refused this guest: %s", e.Request, e.Reason)
}

// Reply reads the back-end's reply to req and returns its payload. A
// refusal note in its place is a *RefusedError.
func (g *Guest) Reply(req uint32) ([]byte, error) {
	var h [12]byte
	if err := g.readFull(h[:]); err != nil {
		return nil, fmt.Errorf("vhostguest: reply to request %d: %w", req, err)
	}
	got := binary.LittleEndian.Uint32(h[0:])
	flags := binary.LittleEndian.Uint32(h[4:])
	size := binary.LittleEndian.Uint32(h[8:])
	if size > 4096 || flags != FlagVersion1|FlagReply || got != req && got != RefusalRequest {
		return nil, fmt.Errorf("vhostguest: reply to request %d: header req %d flags %#x size %d", req, got, flags, size)
	}
	p := make([]byte, size)
	if err := g.readFull(p); err != nil {
		return nil, fmt.Errorf("vhostguest: reply to request %d: %w", req, err)
	}
	if got == RefusalRequest {
		return nil, &RefusedError{Request: req, Reason: string(p)}
	}
	return p, nil
}

// Refusal reads a refusal note the back-end left on a connection it
// closed, without waiting: after a send failed (the back-end had closed
// before the request went out), or when the socket reports a hang-up.
// ok is false when none is there (a close without a note, or the
// connection is still up).
func (g *Guest) Refusal() (reason string, ok bool) {
	var b [12 + 4096]byte
	n := 0
	for n < len(b) {
		k, _, err := unix.Recvfrom(g.sock, b[n:], unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err != nil || k == 0 {
			break
		}
		n += k
	}
	if n < 12 || binary.LittleEndian.Uint32(b[0:]) != RefusalRequest {
		return "", false
	}
	size := int(binary.LittleEndian.Uint32(b[8:]))
	return string(b[12:min(n, 12+size)]), true
}

func (g *Guest) readFull(b []byte) error {
	for len(b) > 0 {
		n, err := unix.Read(g.sock, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b = b[n:]
	}
	return nil
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func state(index, num uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, index)
	return binary.LittleEndian.AppendUint32(b, num)
}

// call sends req and, when wantAck, waits for the REPLY_ACK answer.
func (g *Guest) call(req uint32, payload []byte, fds ...int) error {
	flags := uint32(FlagVersion1)
	ack := g.protocol&ProtoFeatReplyAck != 0
	if ack {
		flags |= FlagNeedReply
	}
	if err := g.Message(req, flags, payload, fds...); err != nil {
		return err
	}
	if !ack {
		return nil
	}
	p, err := g.Reply(req)
	if err != nil {
		return err
	}
	if len(p) != 8 || binary.LittleEndian.Uint64(p) != 0 {
		return fmt.Errorf("vhostguest: request %d refused (%x)", req, p)
	}
	return nil
}

// get sends a GET_* request and returns the u64 answer.
func (g *Guest) get(req uint32, payload []byte) ([]byte, error) {
	if err := g.Message(req, FlagVersion1, payload); err != nil {
		return nil, err
	}
	return g.Reply(req)
}
