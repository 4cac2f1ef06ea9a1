package main

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/metrics"
)

// startObservers serves the control socket (vknetctl) and, with
// --metrics, the Prometheus endpoint. Both run on goroutines of their own
// and reach the switch only through the engine's control calls.
func (d *daemon) startObservers(ctl *unixListener, gid int) error {
	ln, err := control.FileListener(ctl.fd)
	if err != nil {
		return err
	}
	cfg := control.ServerConfig{Engine: d.engine, Upgrader: d, GID: gid, Group: d.o.group, Log: d.log,
		Restarts: func() uint64 { return d.restarts }}
	if d.tap.VXLANDev() != "" {
		cfg.Remote = remoteView{d.tap}
	}
	d.control = control.NewServer(ln, cfg)
	if d.metricsLn != nil {
		if d.up.metricsFd < 0 {
			d.up.metricsFd = dupListener(d.metricsLn) // to hand over (upgrade_linux.go)
		}
		d.metrics = metrics.Serve(d.metricsLn, d.engine, d.log)
		d.metricsLn = nil // the server owns it now
	}
	return nil
}

// stopObservers ends the control and metrics servers before the sockets
// and the TAP go; the control socket's file is removed with the other
// listeners.
func (d *daemon) stopObservers() {
	if d.control != nil {
		d.control.Close()
		d.control = nil
	}
	if d.metrics != nil {
		d.metrics.Close()
		d.metrics = nil
	}
	if d.metricsLn != nil {
		d.metricsLn.Close()
		d.metricsLn = nil
	}
}

// dupListener is a close-on-exec duplicate of ln's fd, or -1.
func dupListener(ln net.Listener) int {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	dup := -1
	rc.Control(func(fd uintptr) {
		if d, err := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); err == nil {
			dup = d
		}
	})
	return dup
}
