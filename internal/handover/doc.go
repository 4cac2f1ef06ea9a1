// Package handover passes a running daemon's file descriptors and a
// versioned record of its state to the daemon that replaces it (vknetctl
// upgrade), over a unix SOCK_SEQPACKET socketpair.
//
// Why not github.com/cloudflare/tableflip: it hands over listeners (and
// readiness) by name, which is what a web server needs. A VM switch must
// hand over every connected client, the TAP, and each client's state (its
// port id, queued frames, a stream's half-read frame), and must be able
// to fall back to the old process when the new one does not come up.
// That is a different protocol; the fd passing itself is a few lines of
// SCM_RIGHTS.
//
// The wire: a record is one or more messages. Each message starts with a
// 2-byte header (kind, "more follows") and carries at most ChunkBytes of
// payload and at most MaxFdsPerMessage descriptors (the kernel's
// SCM_MAX_FD), so thousands of descriptors and a large record go through
// in pieces that the receiver puts together in order.
//
// The state record is JSON (encoding/json), for three reasons: a newer
// daemon may add fields without breaking an older reader (unknown fields
// are ignored; the Version changes only when meaning changes);
// encoding/json neither panics nor allocates beyond the size of its input
// on hostile input, unlike encoding/gob, whose decoder has had crashes on
// crafted streams; and it is read once per upgrade, so its cost (tens of
// milliseconds for a full MAC table) matters little beside the process
// start. Decode bounds the input size and checks the version, every count
// and every descriptor index before anyone uses the record.
package handover
