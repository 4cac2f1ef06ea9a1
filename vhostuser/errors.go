package vhostuser

import (
	"errors"
	"fmt"
)

// ErrViolation matches every error caused by the front-end or the guest
// breaking the protocol or the virtqueue rules. The device is unusable
// afterwards: close it and log the error, which says what was wrong.
var ErrViolation = errors.New("vhost-user protocol violation")

// ErrHangup is returned by HandleSocket when the front-end closed the
// connection. It is the ordinary end of a device, not a violation.
var ErrHangup = errors.New("vhost-user front-end closed the connection")

type violationError struct{ msg string }

func (e *violationError) Error() string        { return "vhost-user: " + e.msg }
func (e *violationError) Is(target error) bool { return target == ErrViolation }

// violation builds an error matching ErrViolation. It formats, so it
// allocates: it is only ever called on the way to closing a guest.
func violation(format string, args ...any) error {
	return &violationError{msg: fmt.Sprintf(format, args...)}
}
