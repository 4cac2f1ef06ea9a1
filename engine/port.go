package engine

import (
	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/ring"
)

// portKind says how a port's fd carries frames.
type portKind uint8

const (
	kindTap       portKind = iota // one frame per read/write on a TAP fd
	kindSeqpacket                 // one frame per message: recvmmsg/sendmmsg
	kindStream                    // QEMU -netdev stream: 4-byte big-endian length, then the frame
	kindDgram                     // QEMU -netdev dgram: one frame per datagram, keyed by source path
	kindMonitor                   // receives copies of frames; whatever it sends is discarded
)

var kindNames = [...]string{
	kindTap:       "tap",
	kindSeqpacket: "seqpacket",
	kindStream:    "stream",
	kindDgram:     "dgram",
	kindMonitor:   "monitor",
}

func (k portKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// port is one side of the switch: the TAP, a connected client, or a monitor.
type port struct {
	id       uint32
	kind     portKind
	fd       int // -1 for a dgram client reached only through its listener
	name     string
	pid, uid int32
	user     *user // the user who connected it (users.go); nil for the TAP and monitors

	txq        ring.Queue // frames waiting to be sent to this port
	dirty      bool       // in Engine.dirty: has frames queued during this batch
	writeArmed bool       // poller reports writability: the kernel pushed back
	hangup     bool       // the peer closed; read what is left, then close
	txClosed   bool       // sending failed because the peer is gone; read what is left, then close
	dead       bool       // closed at the end of this loop iteration

	cnt counters

	// Drop logging is rate limited per port: at most one line per second,
	// with the number of drops that were not logged in between.
	logNext    int64
	logSkipped uint64

	stream *streamState // kindStream only
	dgram  *dgramState  // kindDgram only
	mirror bool         // kindMonitor: every forwarded frame, not only floods
}

// streamState reassembles length-prefixed frames from a byte stream and
// remembers how much of the head frame a short write left unsent.
type streamState struct {
	buf        []byte
	start, end int  // unread bytes are buf[start:end]
	buffered   bool // complete frames may be waiting in buf: read again without polling
	txOff      int  // bytes of the head frame (length prefix included) already written
}

// dgramState is what the switch knows of a datagram client: its address,
// and how to reach it.
type dgramState struct {
	key string // the client's whole address (dgramKey): its identity
	// pathFd is an O_PATH fd of the client's socket file, looked up once
	// and checked at registration (-1 for an abstract name); the switch
	// reaches the client only through it, never by its path again.
	pathFd   int
	dev, ino uint64               // of that file: a path naming another is another socket
	addr     unix.RawSockaddrUnix // via only: /proc/self/fd/<pathFd>
	addrLen  int
	lastSeen int64
	listener *listenerState // where the client sends its frames
	// via is set when frames go out through the listener with the client's
	// address on every message, because the client connected its socket to
	// ours and refuses datagrams from anywhere else.
	via     *listenerState
	retryAt int64 // via only: when to retry after the client's queue was full
}
