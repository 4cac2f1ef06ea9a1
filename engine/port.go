package engine

import "github.com/vknetd/vknetd/ring"

// portKind says how a port's fd carries frames.
type portKind uint8

const (
	kindTap       portKind = iota // one frame per read/write on a TAP fd
	kindSeqpacket                 // one frame per message: recvmmsg/sendmmsg
)

func (k portKind) String() string {
	switch k {
	case kindTap:
		return "tap"
	case kindSeqpacket:
		return "seqpacket"
	}
	return "unknown"
}

// port is one side of the switch: the TAP or a connected client.
type port struct {
	id       uint32
	kind     portKind
	fd       int
	name     string
	pid, uid int32

	txq        ring.Queue // frames waiting to be sent to this port
	dirty      bool       // in Engine.dirty: has frames queued during this batch
	writeArmed bool       // poller reports writability: the kernel pushed back
	hangup     bool       // the peer closed; read what is left, then close
	dead       bool       // closed at the end of this loop iteration

	cnt counters

	// Drop logging is rate limited per port: at most one line per second,
	// with the number of drops that were not logged in between.
	logNext    int64
	logSkipped uint64
}
