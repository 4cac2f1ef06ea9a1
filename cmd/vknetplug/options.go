package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/vknetd/vknetd/internal/cli"
)

// options is the parsed command line.
type options struct {
	socket    string       // -p: the daemon's SEQPACKET socket
	vhostUser string       // --vhost-user: the daemon's vhost-user socket; wins over -p
	tapName   string       // -t
	mtu       int          // --mtu
	prefix    netip.Prefix // ADDRESS/BITS; the zero Prefix leaves the TAP without one
	verbose   bool         // -v
	version   bool
}

const usageLine = "usage: vknetplug [-v] [-p socket | --vhost-user path] [-t name] [--mtu n] [address/bits]"

const (
	defaultSocket = "/var/run/vknet"
	defaultTAP    = "vkplug0"
)

func newFlagSet(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("vknetplug", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	fs.StringVarP(&o.socket, "socket", "p", defaultSocket, "connect over the daemon's SOCK_SEQPACKET socket (its -p)")
	fs.StringVar(&o.vhostUser, "vhost-user", "", "connect as a vhost-user guest to the daemon's --vhost-user socket instead: frames on shared-memory rings")
	fs.StringVarP(&o.tapName, "tap", "t", defaultTAP, "name of the TAP to create in this network namespace (an existing persistent TAP is attached and put back at exit)")
	fs.IntVar(&o.mtu, "mtu", 1500, "MTU of the TAP; give the daemon's --mtu")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "print the frame counters when the plug stops")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

// parseArgs turns the command line into options. Errors are cli.UsageError values
// naming the flag and the fix; --help prints to helpOut and returns
// pflag.ErrHelp.
func parseArgs(args []string, helpOut io.Writer) (*options, error) {
	o := &options{}
	fs := newFlagSet(o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			printUsage(helpOut, fs)
			return nil, err
		}
		return nil, cli.Usagef("%v", err)
	}
	if o.version {
		return o, nil
	}
	rest := fs.Args()
	switch {
	case len(rest) > 1:
		return nil, cli.Usagef("one address/bits argument expected, got %d: %s", len(rest), strings.Join(rest, " "))
	case len(rest) == 1:
		p, err := parsePrefix(rest[0])
		if err != nil {
			return nil, err
		}
		o.prefix = p
	}
	if fs.Changed("socket") && o.vhostUser != "" {
		return nil, cli.Usagef("-p %s and --vhost-user %s both name the switch: give one (--vhost-user where the daemon listens for vhost-user guests, -p otherwise)", o.socket, o.vhostUser)
	}
	if o.socket == "" {
		return nil, cli.Usagef("-p needs the path of the daemon's socket, e.g. %s", defaultSocket)
	}
	if fs.Changed("vhost-user") && o.vhostUser == "" {
		return nil, cli.Usagef("--vhost-user needs the path of the daemon's vhost-user socket (its --vhost-user)")
	}
	if o.tapName == "" {
		return nil, cli.Usagef("-t needs an interface name, e.g. %s", defaultTAP)
	}
	if o.mtu < 68 || o.mtu > 65535 {
		return nil, cli.Usagef("--mtu %d is out of range: use 68 to 65535 (Ethernet is 1500), the same as the daemon's", o.mtu)
	}
	return o, nil
}

// parsePrefix reads the TAP's address: IPv4 or IPv6, with the network's
// prefix length.
func parsePrefix(s string) (netip.Prefix, error) {
	addrPart, bitsPart, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, cli.Usagef("address %q has no /bits: write the TAP's address and the network's prefix length, e.g. 198.18.0.2/16", s)
	}
	addr, err := netip.ParseAddr(addrPart)
	if err != nil || addr.Zone() != "" {
		return netip.Prefix{}, cli.Usagef("%q is not an address/bits: write it like 198.18.0.2/16", s)
	}
	addr = addr.Unmap()
	bits, err := strconv.Atoi(bitsPart)
	if err != nil || bits < 1 || bits > addr.BitLen() {
		return netip.Prefix{}, cli.Usagef("prefix length /%s in %q: use 1 to %d, e.g. 198.18.0.2/16", bitsPart, s, addr.BitLen())
	}
	if addr.IsUnspecified() || addr.IsMulticast() || addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Prefix{}, cli.Usagef("address %s in %q cannot be an interface's address: give a unicast host address, e.g. 198.18.0.2/16", addr, s)
	}
	return netip.PrefixFrom(addr, bits), nil
}

func printUsage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "%s\n\nPlugs the network namespace it runs in into vknetd: creates a TAP (-t) with\naddress/bits, brings it up, and carries its frames to and from the switch,\nover the daemon's SEQPACKET socket (-p) or as a vhost-user guest on shared\nmemory (--vhost-user). Run it in a container's namespace with\n'ip netns exec NS vknetplug ...' or 'nsenter --net=/proc/PID/ns/net vknetplug ...'.\n\nOptions:\n", usageLine)
	cli.PrintFlags(w, fs, 24)
	fmt.Fprintf(w, "\nIt prints the TAP's name on stdout once frames flow. SIGTERM/SIGINT: the TAP\nis removed and the plug exits 0; if the daemon goes away it exits 1.\n")
}
