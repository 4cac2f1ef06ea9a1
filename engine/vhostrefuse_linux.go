package engine

import "github.com/vknetd/vknetd/vhostuser"

// refuseVhost tells a vhost-user front-end why the switch closes its
// connection (vhostuser.Refuse: one note, never blocking), before the
// caller closes it: vknetplug shows the reason, QEMU just sees the close.
func refuseVhost(fd int, reason string) { vhostuser.Refuse(fd, reason) }
