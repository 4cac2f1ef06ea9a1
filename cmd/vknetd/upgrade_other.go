//go:build !linux

package main

import (
	"errors"
	"io"
	"sync"

	"github.com/vknetd/vknetd/engine"
)

// upgrade: vknetctl upgrade is Linux only for now.
type upgrade struct {
	mu        sync.Mutex
	kinds     []engine.ListenerKind
	metricsFd int
}

func (d *daemon) initUpgrade(args []string) {}

func (d *daemon) Upgrade(binary string) (int, error) {
	return 0, errors.New("upgrading in place is not supported on this system: restart the daemon")
}

func (d *daemon) Upgraded() {}

func runIfUpgrade(o *options, stdout, stderr io.Writer) (int, bool) { return 0, false }

// --supervise is Linux only: the flag is accepted and does nothing.
type supervisorLink struct{}

func runIfSupervisor(o *options, stdout, stderr io.Writer) (int, bool) { return 0, false }

func supervisorFd() int { return -1 }

func (d *daemon) attachSupervisor(fd int, setup bool) {}

func (d *daemon) tellSupervisor(kind byte, payload []byte) {}

const handoverKindStopping = 'x'
