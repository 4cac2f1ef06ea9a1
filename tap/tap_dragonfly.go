package tap

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DragonFly's tap has no TAPGIFNAME; FIODNAME from <sys/filio.h>
// (_IOW('f', 120, struct fiodname_args), what fdevname(3) uses) names the
// device behind a descriptor, and the tap interface carries the device's
// name.
const fiodNAME = 0x80106678

type fiodnameArgs struct {
	name unsafe.Pointer
	len  uint32
	_    uint32
}

// DragonFly destroys a cloned tap (unit 4 and up) when its descriptor is
// closed; tap0-tap3 are preallocated and stay, brought down and stripped of
// addresses by the driver.
const destroyOnClose = false

const loadDriverHint = "kldload if_tap"

func tapName(fd int) (string, error) {
	var buf [64]byte
	args := fiodnameArgs{name: unsafe.Pointer(&buf[0]), len: uint32(len(buf))}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fiodNAME, uintptr(unsafe.Pointer(&args)))
	runtime.KeepAlive(&buf)
	if errno != 0 {
		return "", errno
	}
	return unix.ByteSliceToString(buf[:]), nil
}
