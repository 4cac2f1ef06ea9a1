package tap

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// tapGIFNAME is TAPGIFNAME from <net/if_tap.h>: _IOR('t', 93, struct ifreq),
// with sizeof(struct ifreq) = 32 on every FreeBSD architecture.
const tapGIFNAME = 0x4020745d

// A tap FreeBSD cloned for /dev/tap stays after its descriptor is closed,
// until "ifconfig tapN destroy" (tap(4)).
const destroyOnClose = true

const loadDriverHint = "kldload if_tuntap"

// tapName asks the driver which tapN the descriptor is bound to; after
// opening the cloning device /dev/tap, nothing else says.
func tapName(fd int) (string, error) {
	var ifr [32]byte
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tapGIFNAME, uintptr(unsafe.Pointer(&ifr[0])))
	if errno != 0 {
		return "", errno
	}
	return unix.ByteSliceToString(ifr[:unix.IFNAMSIZ]), nil
}
