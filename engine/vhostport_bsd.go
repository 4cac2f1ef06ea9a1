//go:build dragonfly || freebsd

package engine

import "errors"

// vhost-user needs eventfds and memfd-shared guest memory: Linux only.
func (e *Engine) newVhostTransport(int, uint32, string) (transport, error) {
	return nil, errors.New("vhost-user ports are Linux-only")
}
