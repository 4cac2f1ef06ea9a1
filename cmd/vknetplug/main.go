// Command vknetplug plugs the network namespace it runs in into vknetd:
// it creates a TAP there with the address it is given and carries the
// TAP's frames to and from the switch, over the daemon's SEQPACKET socket
// or as a vhost-user guest on shared-memory rings. It is the client a
// container or a test namespace runs instead of socat: batched, one epoll
// loop, no allocation per frame.
//
// This file is the command line and the exit status; the plug itself is
// Linux-only (plug_linux.go).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stdout)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "vknetplug: %v\n%s\n(vknetplug --help lists every option)\n", err, usageLine)
		return 2
	}
	if o.version {
		fmt.Fprintf(stdout, "vknetplug %s\n", version)
		return 0
	}
	// Ours before the TAP exists, so a signal at any moment removes it.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := plug(o, stdout, stderr, sigs); err != nil {
		fmt.Fprintf(stderr, "vknetplug: %v\n", err)
		return 1
	}
	return 0
}
