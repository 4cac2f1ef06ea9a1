package engine

import (
	"errors"
	"fmt"
)

// AttachMonitor makes fd, a connected SOCK_SEQPACKET socket, a monitor
// port: it receives one message per frame and anything it sends is
// discarded. With mirror it gets a copy of every frame the switch
// forwards; otherwise only what is flooded (what an ordinary client sees
// without owning a MAC: broadcast, multicast, unknown unicast). A monitor
// that reads too slowly loses frames (tx-queue-full), never slows the
// switch. The engine owns fd from here on and closes it.
func (e *Engine) AttachMonitor(fd int, mirror bool, name string) (uint32, error) {
	var id uint32
	var err error
	derr := e.do(func() { id, err = e.attachMonitor(e.loops[0], fd, mirror, name) })
	if derr != nil {
		return 0, errors.Join(derr, err)
	}
	return id, err
}

// attachMonitor is AttachMonitor on the goroutine of l, which gets the
// monitor.
func (e *Engine) attachMonitor(l *loop, fd int, mirror bool, name string) (uint32, error) {
	id, ok := e.ports.reserve(0, true)
	if !ok {
		return 0, fmt.Errorf("too many monitors (at most %d)", maxMonitors)
	}
	if err := l.poll.add(fd, id); err != nil {
		e.ports.unreserve(id, true)
		return 0, err
	}
	setSndbuf(fd, clientSndbuf)
	p := l.openPort(id, newMonitorTransport(&l.io, fd), fd, name)
	p.observer = true
	p.pid, p.uid = peerCred(fd)
	p.mirror = mirror
	if mirror {
		l.mirrors = append(l.mirrors, p)
		e.mirrored.Add(1)
	}
	l.join(p)
	e.clientLog.Info("monitor attached", "port", id, "monitor", name, "all", mirror)
	return id, nil
}
