#!/bin/sh
# Installs the Debian packages the demo and the integration tests use,
# when any is missing. Needs root for apt-get; otherwise says what to run.
set -eu
need=""
command -v socat   >/dev/null 2>&1 || need="$need socat"
command -v tcpdump >/dev/null 2>&1 || need="$need tcpdump"
command -v iperf3  >/dev/null 2>&1 || need="$need iperf3"
command -v dnsmasq >/dev/null 2>&1 || need="$need dnsmasq-base"
command -v busybox >/dev/null 2>&1 || need="$need busybox"
command -v ip      >/dev/null 2>&1 || need="$need iproute2"
command -v ping    >/dev/null 2>&1 || need="$need iputils-ping"
# DPDK's testpmd: the multi-queue vhost-user guests of integration's
# TestTestpmdMultiQueueGuests (about 26 MB to download, 150 MB installed,
# for the one vhost-user guest in the suite not written here).
command -v dpdk-testpmd >/dev/null 2>&1 || need="$need dpdk-dev"
[ -z "$need" ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: missing$need; install them (Debian: apt-get install$need) or run as root" >&2
	echo "install-deps: continuing; tests that need them will skip" >&2
	exit 0
fi
echo "install-deps: apt-get install$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $need >/dev/null
