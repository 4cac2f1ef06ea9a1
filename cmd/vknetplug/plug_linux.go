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
