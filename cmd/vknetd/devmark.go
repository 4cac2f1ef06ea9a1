package main

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"

	"github.com/vknetd/vknetd/tap"
)

// deviceMark is the alias the daemon gives the devices it creates (the
// bridge and VXLAN device of --vxlan, see tap.Config.Mark): it names the
// pidfile, whose lock lets one daemon at a time hold it. A daemon started
// after one that was killed takes the lock and so knows the devices with
// its mark as leftovers of a daemon that is gone, and removes them; one
// with another pidfile leaves them alone. A pidfile path too long for an
// interface alias is named by its hash instead.
func deviceMark(pidfile string) string {
	const prefix = "vknetd:"
	if abs, err := filepath.Abs(pidfile); err == nil {
		pidfile = abs
	}
	if len(prefix)+len(pidfile) <= tap.MaxMarkLen {
		return prefix + pidfile
	}
	sum := sha256.Sum256([]byte(pidfile))
	return prefix + "sha256:" + hex.EncodeToString(sum[:16])
}
