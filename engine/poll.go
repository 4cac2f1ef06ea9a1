package engine

import "time"

// event is one readiness report from the poller, for the port or
// endpoint registered under token.
type event struct {
	token    uint32
	readable bool
	writable bool
	hangup   bool // peer closed or the fd is in error: read to drain, then close
}

// A port's transport may poll fds of its own besides the port's (vhost-user
// polls its socket and the guest's kick eventfds): they are registered as
// the port's id with a sub-number in the token's top byte. Port ids stay
// below 1<<subShift; sub 0 is the port's own fd.
const subShift = 24

func subToken(id uint32, sub uint8) uint32 { return id | uint32(sub)<<subShift }

func splitToken(token uint32) (id uint32, sub uint8) {
	return token & (1<<subShift - 1), uint8(token >> subShift)
}

// Tokens above every port number name the engine's own fds (their top
// byte, 0xff, is no sub-number a transport uses).
const (
	tokenWake     = ^uint32(0)     // the wake-up fd used by control requests
	tokenListener = ^uint32(0) - 1 // listener i is tokenListener - i
)

// poller is the one thing the loop needs from epoll or kqueue: level-triggered
// readiness for a handful of fds, with write interest switched on only while
// a port has a backlog.
type poller interface {
	add(fd int, token uint32) error
	setWrite(fd int, token uint32, on bool) error
	remove(fd int) error
	// wait waits up to timeout (0: not at all) for readiness; to the
	// microsecond where the kernel can (epoll_pwait2, kqueue), else
	// rounded up to the millisecond.
	wait(events []event, timeout time.Duration) (int, error)
	// wake interrupts a wait from another goroutine.
	wake() error
	// drainWake consumes pending wake-ups after tokenWake was reported.
	drainWake()
	close() error
}
