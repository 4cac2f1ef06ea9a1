package control

// peerCred cannot ask DragonFly: x/sys/unix has no peer-credential call
// for it. The socket's mode 0660 and group are then the only check, as
// they are for the client socket.
func peerCred(fd int) (cred, error) { return cred{pid: -1, uid: -1}, nil }
