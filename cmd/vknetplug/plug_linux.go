package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vknetd/vknetd/tap"
)

// plug connects to the switch, creates the TAP, tells stdout its name and
// moves frames until a signal (nil) or the daemon or TAP goes away.
//
// Over vhost-user the plug carries offloads: the TAP opened with
// IFF_VNET_HDR (tap.Config.Offload: TUNSETVNETHDRSZ, TUNSETOFFLOAD
// CSUM|TSO4|TSO6) puts a virtio_net_hdr before every frame it reads and
// expects one before every frame written, and that is the header a
// vhost-user ring carries before a frame. So the guest accepts CSUM,
// HOST_TSO4/6 and GUEST_CSUM/TSO4/6, and each frame, up to a 64 KiB
// superframe, goes across with its header: the host's TCP hands the TAP
// superframes, the switch cuts them for ports that cannot take them, and
// the host takes the superframes the switch passes. The SEQPACKET link,
// whose protocol has no header, opens the TAP without offloads.
//
// The link is dialled first, so a missing daemon is reported before any
// TAP exists: if the switch offers no offloads, the TAP is opened without
// them and nothing changes. If the TAP cannot carry headers (an old
// persistent TAP without IFF_VNET_HDR) after the switch accepted offloads,
// the plug connects again as a guest without them.
func plug(o *options, stdout, stderr io.Writer, sigs <-chan os.Signal) (err error) {
	var sw link
	var vhost *vhostLink
	if o.vhostUser != "" {
		vhost, err = dialVhost(o.vhostUser, true)
		sw = vhost
	} else {
		sw, err = dialSeqpacket(o.socket)
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := sw.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	offload := vhost != nil && vhost.offloads()
	dev, err := tap.Open(tap.Config{Name: o.tapName, MTU: o.mtu, Prefix: o.prefix, Offload: offload})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dev.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("removing TAP %s: %w", dev.Name(), cerr))
		}
	}()
	if vhost != nil && vhost.offloadsAny() && !(offload && dev.VnetHdr()) {
		if o.verbose {
			fmt.Fprintf(stderr, "vknetplug: %s: no offloads (%s): connecting again as a guest without them\n", dev.Name(), dev.OffloadNote())
		}
		sw.close() // closing it again on the way out is harmless
		if vhost, err = dialVhost(o.vhostUser, false); err != nil {
			return err
		}
		sw = vhost
	}
	vnet := offload && dev.VnetHdr()
	// A VLAN tag on top of the MTU and the Ethernet header.
	l, err := newLoop(dev.Fd(), dev.Name(), sw, o.mtu+18, vnet)
	if err != nil {
		return err
	}
	defer l.close()
	// The signal watcher is gone before l.close: a signal at the last
	// moment must not write to a closed (or reused) stop fd.
	done, watcherGone := make(chan struct{}), make(chan struct{})
	defer func() { close(done); <-watcherGone }()
	go func() {
		defer close(watcherGone)
		select {
		case <-sigs:
			l.stop()
		case <-done:
		}
	}()
	fmt.Fprintln(stdout, dev.Name())
	err = l.run()
	if o.verbose {
		st := l.st
		fmt.Fprintf(stderr, "vknetplug: %s: to the switch %d frames %d bytes; from it %d frames %d bytes; dropped %d (link) %d (TAP refused) %d (too long); offloads %v\n",
			dev.Name(), st.upFrames, st.upBytes, st.downFrames, st.downBytes, sw.drops(), st.tapRefused, st.tapTooLong, vnet)
	}
	if errors.Is(err, errStopped) {
		return nil
	}
	return err
}
