package engine

import (
	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/secure"
)

// Drop is why the engine itself discarded a frame. Secure-mode verdicts are
// counted separately, by secure.Reason, so both sets of names stay owned by
// the package that decides them.
type Drop uint8

const (
	DropRunt                 Drop = iota // shorter than an Ethernet header (14 bytes)
	DropOversize                         // longer than the MTU's frame size
	DropQueueFull                        // destination port's transmit queue full (a slow or stuck receiver)
	DropPoolPressure                     // buffer pool nearly empty and this receiver already has a backlog
	DropNoBuffer                         // no free buffer to read into (the frame stays in the kernel)
	DropSendError                        // the kernel refused this one frame (e.g. EMSGSIZE)
	DropSamePort                         // destination is learned on the port the frame came from
	DropPortClosed                       // queued for a port that disconnected before it was sent
	DropMACInUse                         // secure mode: source MAC is live on another port
	DropPortMACLimit                     // secure mode: the client already holds --port-macs MACs
	DropBadLength                        // stream client sent a zero or oversize length (it is closed)
	DropMonitorInput                     // a monitor sent something; monitors only listen
	DropUserMACLimit                     // secure mode: the client's user already holds --user-macs MACs
	DropMACTableFull                     // secure mode: the table holds --mac-max MACs; a MAC it cannot learn does not speak
	DropWrongUser                        // dgram: sent under a client's address by another user than the one that registered it
	DropKernelFilter                     // secure mode: dropped in the client's sendmsg by the kernel filter (ClientFilter)
	DropGSOInvalid                       // offloads: a superframe gso.Check passed that could still not be cut or finished (never seen; counted, not trusted)
	DropGSOSegments                      // offloads: a superframe that would be cut into more frames than maxSegments (gso_size too small)
	DropOffloadNotNegotiated             // vhost-user: a virtio_net_hdr asking for an offload the guest did not negotiate
	DropVhostViolation                   // vhost-user: the guest broke the protocol or its rings and was closed (one per guest; the log says what it did)
	DropRemoteMACConflict                // from the TAP (a bridged LAN, other hosts over VXLAN): source MAC is live on a client port
	DropWorkerRingFull                   // --workers: the ring to the destination port's worker was full (it fell behind)
	numDrops
)

var dropNames = [numDrops]string{
	DropRunt:                 "runt",
	DropOversize:             "oversize",
	DropQueueFull:            "tx-queue-full",
	DropPoolPressure:         "pool-pressure",
	DropNoBuffer:             "no-buffer",
	DropSendError:            "send-error",
	DropSamePort:             "same-port",
	DropPortClosed:           "port-closed",
	DropMACInUse:             "src-mac-in-use",
	DropPortMACLimit:         "port-mac-limit",
	DropBadLength:            "bad-length",
	DropMonitorInput:         "monitor-input",
	DropUserMACLimit:         "user-mac-limit",
	DropMACTableFull:         "mac-table-full",
	DropWrongUser:            "wrong-user",
	DropKernelFilter:         "kernel-filter",
	DropGSOInvalid:           "gso-invalid",
	DropGSOSegments:          "gso-too-many-segments",
	DropOffloadNotNegotiated: "offload-not-negotiated",
	DropVhostViolation:       "vhost-violation",
	DropRemoteMACConflict:    "remote-mac-conflict",
	DropWorkerRingFull:       "worker-ring-full",
}

func (d Drop) String() string {
	if d < numDrops {
		return dropNames[d]
	}
	return "unknown"
}

// counters are one port's traffic counts. Only the event loop writes them;
// others get copies through Stats.
type counters struct {
	rxFrames, rxBytes uint64
	txFrames, txBytes uint64
	unlearned         uint64 // frames whose source MAC the full table (or port, or --remote-macs) could not learn
	drops             [numDrops]uint64
	secureDrops       [secure.NumReasons]uint64
	// gsoDrops counts superframes and NEEDS_CSUM frames whose
	// virtio_net_hdr lies about them, by what it lies about (gso.Check).
	gsoDrops [gso.NumReasons]uint64
}

func (c *counters) add(o *counters) {
	c.rxFrames += o.rxFrames
	c.rxBytes += o.rxBytes
	c.txFrames += o.txFrames
	c.txBytes += o.txBytes
	c.unlearned += o.unlearned
	for i := range c.drops {
		c.drops[i] += o.drops[i]
	}
	for i := range c.secureDrops {
		c.secureDrops[i] += o.secureDrops[i]
	}
	for i := range c.gsoDrops {
		c.gsoDrops[i] += o.gsoDrops[i]
	}
}

// DropCount is one non-zero drop counter.
type DropCount struct {
	Reason string
	Count  uint64
}

// PortStats is a snapshot of one port.
type PortStats struct {
	ID        uint32
	Kind      string // "tap", "seqpacket", ...
	Name      string // TAP name, or how the client is known
	PID, UID  int32  // peer credentials of a client (-1 when unknown)
	RxFrames  uint64 // frames received from this port
	RxBytes   uint64
	TxFrames  uint64 // frames sent to this port
	TxBytes   uint64
	Drops     []DropCount // non-zero drop counters: engine reasons, secure-mode reasons, then lying offload headers
	Unlearned uint64      // frames forwarded without learning their source (table or port limit)
	MACs      int         // MAC table entries learned on this port
	Queued    int         // frames waiting in its transmit queue
	// Offloads is what the port takes whole (gso.Offloads.String): the
	// TAP's, a vhost-user guest's as negotiated; "-" for none.
	Offloads string
	// Workers is the loop (--workers, from 0) that serves the port; for a
	// guest whose queue pairs are spread over loops, the loop of each
	// pair in use, "1,0,1,0" (spread.go).
	Workers string
	// RxQueues and TxQueues are, for a vhost-user guest, the frames
	// received from each queue pair's TX ring and sent on each pair's RX
	// ring, as its device counted them (a superframe once; frames the
	// device dropped included), up to the last pair that moved any; nil
	// for other ports. They show whether a multi-queue guest's traffic
	// really used several pairs.
	RxQueues, TxQueues []uint64
	// Kicks is, for a vhost-user guest, how often its kicks woke the
	// switch: reads of its rings' kick eventfds that found it had kicked
	// (kicks made before a read count once). Each is a system call or a
	// VM exit in the guest; --coalesce keeps them few while it sends. 0
	// for other ports.
	Kicks uint64
}

// pairCounts are a vhost-user port's frames by queue pair, and the kicks
// of its rings (pairCounter).
type pairCounts struct {
	rx, tx [maxPairs]uint64
	kicks  uint64
}

func (c *pairCounts) add(o *pairCounts) {
	for k := range c.rx {
		c.rx[k] += o.rx[k]
		c.tx[k] += o.tx[k]
	}
	c.kicks += o.kicks
}

// list puts c in s's RxQueues and TxQueues, up to the last pair that
// moved a frame either way, and in its Kicks.
func (c *pairCounts) list(s *PortStats) {
	s.Kicks = c.kicks
	n := 0
	for k := range c.rx {
		if c.rx[k] != 0 || c.tx[k] != 0 {
			n = k + 1
		}
	}
	if n == 0 {
		s.RxQueues, s.TxQueues = nil, nil
		return
	}
	s.RxQueues, s.TxQueues = append([]uint64(nil), c.rx[:n]...), append([]uint64(nil), c.tx[:n]...)
}

// pairCounter counts a transport's frames by queue pair (vhost-user,
// transportCaps.pairs): the pairs it serves, a queue handle's or the
// port's own.
type pairCounter interface {
	pairFrames() pairCounts
}

// Stats is a snapshot of the whole switch.
type Stats struct {
	Ports    []PortStats // live ports, the TAP first
	Departed PortStats   // totals of clients that have disconnected
	MACs     int         // MAC table entries
	Clients  int         // connected clients
	Accepted uint64      // clients accepted since start
	// ListenerKernelDrops is what the kernel filter dropped on datagram
	// listeners, whose senders it cannot name (not in any port's Drops).
	ListenerKernelDrops uint64
	// MACMoves counts MACs that moved to a new port with their VM, with
	// their secure-mode bindings (live migration, migrate.go).
	MACMoves uint64
	PoolFree int // free frame buffers
	PoolCap  int
}

func (c *counters) snapshot(s *PortStats) {
	s.RxFrames, s.RxBytes = c.rxFrames, c.rxBytes
	s.TxFrames, s.TxBytes = c.txFrames, c.txBytes
	s.Unlearned = c.unlearned
	s.Drops = s.Drops[:0]
	for i, n := range c.drops {
		if n != 0 {
			s.Drops = append(s.Drops, DropCount{Drop(i).String(), n})
		}
	}
	for i, n := range c.secureDrops {
		if n != 0 {
			s.Drops = append(s.Drops, DropCount{secure.Reason(i).String(), n})
		}
	}
	for i, n := range c.gsoDrops {
		if n != 0 {
			s.Drops = append(s.Drops, DropCount{gso.Reason(i).String(), n})
		}
	}
}

// count adds what a transport's call dropped (see tally).
func (c *counters) count(t *tally) {
	if !t.any {
		return
	}
	c.rxFrames += uint64(t.received)
	for d, n := range t.drops {
		c.drops[d] += uint64(n)
	}
	for r, n := range t.gso {
		c.gsoDrops[r] += uint64(n)
	}
}
