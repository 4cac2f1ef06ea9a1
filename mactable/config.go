package mactable

import (
	"fmt"
	"time"
)

// Limits on Config. The value word gives a port 24 bits; the caps below
// keep the slot array (16 bytes per slot, two slots per entry) and the
// per-port counters to sizes a daemon can sensibly allocate at start.
const (
	MaxCapacity = 1 << 22 // 4M entries, 128 MiB of slots
	MaxMaxPorts = 1 << 20
	MinMaxAge   = time.Second
)

// Config sizes a Table. The flag names in the comments are the daemon's.
type Config struct {
	Capacity  int // max entries in the whole table (--mac-max)
	PortLimit int // max entries one port may hold (--port-macs); 0 means Capacity
	// OwnerLimit is the most entries the ports of one owner (the user who
	// connected them, see SetOwner) may hold together (--user-macs); 0
	// means Capacity. Owner 0, the default of every port, is not limited.
	OwnerLimit int
	// HostLimit is the most entries the host port (SetHostPort) may hold
	// (--remote-macs): what a bridged LAN or other hosts behind the TAP
	// may take, so that they cannot fill the table the clients need. 0
	// means Capacity.
	HostLimit int
	MaxAge    time.Duration // an entry ages out this long after it was last seen (--mac-age)
	MaxPorts  int           // ports are numbered 0..MaxPorts-1
}

func (c Config) validate() error {
	if c.Capacity < 1 || c.Capacity > MaxCapacity {
		return fmt.Errorf("mactable: Capacity (--mac-max) is %d; it must be between 1 and %d", c.Capacity, MaxCapacity)
	}
	if c.PortLimit < 0 || c.PortLimit > c.Capacity {
		return fmt.Errorf("mactable: PortLimit (--port-macs) is %d; it must be between 0 (no limit beyond --mac-max) and Capacity (--mac-max, %d)", c.PortLimit, c.Capacity)
	}
	if c.OwnerLimit < 0 || c.OwnerLimit > c.Capacity {
		return fmt.Errorf("mactable: OwnerLimit (--user-macs) is %d; it must be between 0 (no limit beyond --mac-max) and Capacity (--mac-max, %d)", c.OwnerLimit, c.Capacity)
	}
	if c.HostLimit < 0 || c.HostLimit > c.Capacity {
		return fmt.Errorf("mactable: HostLimit (--remote-macs) is %d; it must be between 0 (no limit beyond --mac-max) and Capacity (--mac-max, %d)", c.HostLimit, c.Capacity)
	}
	if c.MaxAge < MinMaxAge {
		return fmt.Errorf("mactable: MaxAge (--mac-age) is %v; it must be at least %v", c.MaxAge, MinMaxAge)
	}
	if c.MaxPorts < 1 || c.MaxPorts > MaxMaxPorts {
		return fmt.Errorf("mactable: MaxPorts is %d; it must be between 1 and %d", c.MaxPorts, MaxMaxPorts)
	}
	return nil
}
