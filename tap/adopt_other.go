//go:build !linux

package tap

import (
	"errors"

	"github.com/vknetd/vknetd/internal/handover"
)

// Export describes the device for a successor daemon (Linux only).
func (d *Device) Export() handover.TAP { return handover.TAP{Fd: -1, Name: d.name} }

// Adopt is Linux only.
func Adopt(fd int, s handover.TAP) (*Device, error) {
	return nil, errors.New("tap: handing a TAP to a new daemon is not supported on this system")
}
