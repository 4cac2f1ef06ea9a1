//go:build dragonfly || freebsd

package engine

import "errors"

// vhost-user needs eventfds and memfd-shared guest memory: Linux only.
func (e *Engine) newVhostTransport(*portIO, int, uint32, string, *guestMemory, *guestFds) (transport, error) {
	return nil, errors.New("vhost-user ports are Linux-only")
}

// refuseVhost has nothing to say on a platform without vhost-user.
func refuseVhost(int, string) {}
