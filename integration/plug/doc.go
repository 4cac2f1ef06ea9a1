// Package plug tests vknetplug against vknetd in network namespaces: a
// daemon in secure mode, namespaces plugged over SEQPACKET and over
// vhost-user, pings between them and the host, iperf3 host <-> plugged
// namespace (rates logged, never asserted), and what a stop leaves
// behind. The tests need root; they skip with a message otherwise.
package plug
