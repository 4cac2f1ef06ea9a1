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
// Offloads come later, and fit here: the TAP opened with IFF_VNET_HDR
// (TUNSETVNETHDRSZ 12, TUNSETOFFLOAD) puts a virtio_net_hdr before every
// frame it reads and expects one before every frame written, and that is
// byte for byte the header a vhost-user ring carries before a frame. So the
// frames in a batch would start with their header, buffers sized for
// superframes; the vhost-user link would accept HOST_TSO4/6, CSUM and
// GUEST_* and pass the header through; the SEQPACKET link, whose protocol
// has no header, would cut superframes with package gso before sendmmsg
// and write a zero header before each frame it receives.
func plug(o *options, stdout, stderr io.Writer, sigs <-chan os.Signal) (err error) {
	var sw link
	if o.vhostUser != "" {
		if o.mtu > maxVhostMTU {
			return fmt.Errorf("--mtu %d is too big for --vhost-user: a TX buffer holds frames up to MTU %d; lower --mtu or use -p", o.mtu, maxVhostMTU)
		}
		sw, err = dialVhost(o.vhostUser)
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
	dev, err := tap.Open(tap.Config{Name: o.tapName, MTU: o.mtu, Prefix: o.prefix})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dev.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("removing TAP %s: %w", dev.Name(), cerr))
		}
	}()
	// A VLAN tag on top of the MTU and the Ethernet header.
	l, err := newLoop(dev.Fd(), dev.Name(), sw, o.mtu+18)
	if err != nil {
		return err
	}
	defer l.close()
	done := make(chan struct{})
	defer close(done)
	go func() {
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
		fmt.Fprintf(stderr, "vknetplug: %s: to the switch %d frames %d bytes; from it %d frames %d bytes; dropped %d (link) %d (TAP refused)\n",
			dev.Name(), st.upFrames, st.upBytes, st.downFrames, st.downBytes, sw.drops(), st.tapRefused)
	}
	if errors.Is(err, errStopped) {
		return nil
	}
	return err
}
