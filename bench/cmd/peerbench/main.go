// Command peerbench measures vknetd against the switches users would pick
// instead (scripts/bench-peers.sh, `make bench-peers`). It has two parts:
//
//	peerbench load -transport seqpacket|stream|dgram|dgram-connected|vde -path P -size N [-pid PID] [-direct]
//
// drives one target for a few seconds with two sender/receiver pairs of
// batched clients (sendmmsg/recvmmsg, poll on EAGAIN) that talk to the
// switch's socket directly, and prints one CSV line: frames/s received,
// frames/s sent, the switch's CPU (cores, from /proc/PID/stat) and the load
// generator's own CPU. With -direct there is no switch: each pair is a
// socketpair of the transport's type, the transport's own limit.
//
//	peerbench report -in RAW.csv -machine MACHINE.txt -md OUT.md -svg OUT.svg
//
// turns the raw rounds into medians, a markdown table and an SVG chart.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "load":
		err = loadMain(os.Args[2:])
	case "report":
		err = reportMain(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "peerbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: peerbench load [flags] | peerbench report [flags]")
	os.Exit(2)
}
