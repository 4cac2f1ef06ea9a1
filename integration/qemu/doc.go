// Package qemu boots real QEMU guests against a fresh build of vknetd: a Debian
// kernel and a busybox initramfs (built by scripts/qemu-guest.sh) attach over
// -netdev stream and -netdev dgram, get a DHCP lease from dnsmasq on the switch's
// TAP, ping the host and each other, and report on their serial consoles. The
// multi-queue vhost-user guest also runs iperf3 (the host's, copied into the
// image) with several streams to an iperf3 server on the TAP and back.
//
// The package holds only tests. They need root, qemu-system-x86_64, dnsmasq and the
// guest image, and skip with a message naming what is missing; `make test-qemu`
// installs all of it and runs them. The daemon, dnsmasq and every QEMU each run in a
// network namespace of their own, on 198.18.0.0/16 (QEMU reaches the switch through
// unix sockets, which namespaces do not separate); all are removed at cleanup.
package qemu
