package metrics

import "syscall"

const errAddrInUse = syscall.EADDRINUSE
