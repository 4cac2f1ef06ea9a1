// Command vknetctl asks a running vknetd what it is doing: its ports and
// their counters, the MAC table, secure mode's bindings, totals, and a
// live view of the frames it floods or forwards, as text, JSON or pcap.
//
// It talks to the daemon's control socket (package control); only root and
// members of the daemon's group may use it.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// DefaultSocket is vknetd's default -p path plus ".ctl".
const DefaultSocket = "/var/run/vknet.ctl"

const usageLine = "usage: vknetctl [--socket PATH] [--json] ports|macs|bindings|stats\n       vknetctl [--socket PATH] monitor [--all] [-w FILE] [-c COUNT]\n       vknetctl [--socket PATH] upgrade [BINARY]"

type options struct {
	socket  string
	json    bool
	all     bool
	write   string
	count   int
	version bool
	cmd     string
	binary  string // upgrade's program; "" for the daemon's own executable
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the exit status: 0 done, 1 the daemon could not be asked (or
// the output not written), 2 a command-line mistake.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stdout)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "vknetctl: %v\n%s\n(vknetctl --help lists every option)\n", err, usageLine)
		return 2
	}
	if o.version {
		fmt.Fprintf(stdout, "vknetctl %s (control protocol %d)\n", version, control.Version)
		return 0
	}
	if err := runCmd(o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "vknetctl: %v\n", err)
		return 1
	}
	return 0
}

func newFlagSet(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("vknetctl", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	fs.StringVarP(&o.socket, "socket", "s", DefaultSocket, "vknetd's control socket (the daemon's --control; by default its -p path plus .ctl)")
	fs.BoolVar(&o.json, "json", false, "print listings as JSON (field names are stable)")
	fs.BoolVarP(&o.all, "all", "a", false, "monitor: a copy of every frame the switch forwards, not only the flooded ones")
	fs.StringVarP(&o.write, "write", "w", "", "monitor: also write the frames to this pcap file (tcpdump -r, Wireshark); '-' writes pcap to stdout instead of lines")
	fs.IntVarP(&o.count, "count", "c", 0, "monitor: stop after this many frames")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

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
	if len(rest) == 2 && rest[0] == "upgrade" {
		o.binary, rest = rest[1], rest[:1]
		if !strings.HasPrefix(o.binary, "/") {
			return nil, cli.Usagef("upgrade %s: give the new binary's absolute path (the daemon runs it from /)", o.binary)
		}
	}
	if len(rest) != 1 {
		if len(rest) == 0 {
			return nil, cli.Usagef("which command? ports, macs, bindings, stats, monitor or upgrade")
		}
		return nil, cli.Usagef("one command expected, got %q", strings.Join(rest, " "))
	}
	o.cmd = rest[0]
	switch o.cmd {
	case "ports", "macs", "bindings", "stats":
		for _, f := range []string{"all", "write", "count"} {
			if fs.Changed(f) {
				return nil, cli.Usagef("--%s only goes with monitor, not %s", f, o.cmd)
			}
		}
	case "upgrade":
		for _, f := range []string{"all", "write", "count", "json"} {
			if fs.Changed(f) {
				return nil, cli.Usagef("--%s does not go with upgrade", f)
			}
		}
	case "monitor":
		if o.json {
			return nil, cli.Usagef("monitor prints one line per frame, not JSON: use -w FILE for a pcap that tools can read")
		}
		if o.count < 0 {
			return nil, cli.Usagef("-c %d: give a number of frames, 1 or more (or leave -c out to watch until Ctrl-C)", o.count)
		}
		if fs.Changed("count") && o.count == 0 {
			return nil, cli.Usagef("-c 0 would stop before the first frame: give 1 or more, or leave -c out")
		}
	default:
		return nil, cli.Usagef("unknown command %q: use ports, macs, bindings, stats, monitor or upgrade", o.cmd)
	}
	if o.socket == "" {
		return nil, cli.Usagef("--socket needs a path")
	}
	return o, nil
}

func printUsage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "%s\n\nAsk a running vknetd what it is doing, through its control socket\n(root and members of its group only).\n\n", usageLine)
	fmt.Fprint(w, `Commands:
  ports      every port: id, kind, peer pid/uid, MACs, rx/tx frames and bytes, drops by reason
  macs       the MAC table, like 'bridge fdb show'
  bindings   secure mode's IP-to-MAC bindings
  stats      totals: clients, MACs, buffers, traffic of the TAP and of all clients, drops by reason
  monitor    one line per flooded frame (broadcast, multicast, unknown unicast), or with
             --all per frame the switch forwards; Ctrl-C stops
  upgrade [BINARY]
             hand the running daemon over to BINARY (default: its own executable,
             read again from disk) with every client, the TAP and the tables; if the
             new daemon fails, the old one keeps serving and this says why (root only)

Options:
`)
	cli.PrintFlags(w, fs, 22)
	fmt.Fprint(w, "\nExit status: 0 done, 1 the daemon could not be asked or an upgrade failed (the old daemon serves on), 2 a command-line mistake.\n")
}

func runCmd(o *options, stdout, stderr io.Writer) error {
	c, err := control.Dial(o.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	var v any
	switch o.cmd {
	case "monitor":
		return monitor(c, o, stdout, stderr)
	case "upgrade":
		pid, err := c.Upgrade(o.binary)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "vknetd upgraded: pid %d serves now\n", pid)
		return nil
	case "ports":
		ports, err := c.Ports()
		if err != nil {
			return err
		}
		if o.json {
			v = nonNil(ports)
			break
		}
		return writePorts(stdout, ports)
	case "macs":
		macs, err := c.MACs()
		if err != nil {
			return err
		}
		if o.json {
			v = nonNil(macs)
			break
		}
		return writeMACs(stdout, macs)
	case "bindings":
		bs, err := c.Bindings()
		if err != nil {
			return err
		}
		if o.json {
			v = nonNil(bs)
			break
		}
		return writeBindings(stdout, bs)
	case "stats":
		st, err := c.Stats()
		if err != nil {
			return err
		}
		if o.json {
			v = st
			break
		}
		return writeStats(stdout, st)
	}
	return jsonEncoder(stdout).Encode(v)
}

func jsonEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc
}

// nonNil makes an empty listing print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func monitor(c *control.Client, o *options, stdout, stderr io.Writer) error {
	capture, err := control.NewCapture(stdout, o.write, "-w")
	if err != nil {
		return err
	}
	conn, err := c.Monitor(o.all)
	if err != nil {
		capture.Close()
		return err
	}
	what := "flooded frames (--all for every frame)"
	if o.all {
		what = "every frame the switch forwards"
	}
	fmt.Fprintf(stderr, "vknetctl: monitoring %s on %s; Ctrl-C stops\n", what, o.socket)

	stop := control.CloseOnSignal(conn)
	defer stop.Release()
	n, werr := control.Watch(conn, capture, o.count)
	cerr := capture.Close()
	fmt.Fprintf(stderr, "vknetctl: %d frames\n", n)
	switch {
	case stop.Stopped():
		return cerr
	case errors.Is(werr, io.EOF) && n == 0:
		return fmt.Errorf("vknetd closed the monitor on %s at once: it is stopping, or already has as many monitors as it allows (its log says which)", o.socket)
	case errors.Is(werr, io.EOF):
		return fmt.Errorf("vknetd closed the monitor on %s (is it stopping?)", o.socket)
	case werr != nil:
		return fmt.Errorf("monitor on %s: %w", o.socket, werr)
	}
	return cerr
}
