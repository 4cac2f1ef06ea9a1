package engine

import "errors"

// clientRefused is why a datagram client is not made a port, with what
// the person running it can do about it.
type clientRefused struct {
	reason string
	hint   string
	err    error
}

func (r *clientRefused) Error() string {
	if r.err != nil {
		return r.reason + ": " + r.err.Error()
	}
	return r.reason
}

func (r *clientRefused) Unwrap() error { return r.err }

// refusalHint is the hint of a refusal, if it has one.
func refusalHint(err error) string {
	var r *clientRefused
	if errors.As(err, &r) {
		return r.hint
	}
	return ""
}
