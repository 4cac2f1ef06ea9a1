#!/bin/bash
# The demo: vknetd in its own network namespace with 198.18.0.1/16 on its
# TAP, two socat clients (each a "VM" in its own namespace with a TAP of its
# own), pings client to client and client to host, then the daemon's
# counters. Everything it creates is removed on exit, even on failure.
set -euo pipefail

VKNETD=${1:-bin/vknetd}
VKNETD=$(realpath "$VKNETD")
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
for t in socat ip ping; do
	command -v $t >/dev/null || { echo "demo: $t is missing: run scripts/install-deps.sh" >&2; exit 1; }
done

id=$$
SW=vkt-demo-$id-switch A=vkt-demo-$id-a B=vkt-demo-$id-b
DIR=$(mktemp -d /tmp/vknetd-demo.XXXXXX)
SOCK=$DIR/vknet
pids=()

cleanup() {
	set +e
	[ -n "${DAEMON:-}" ] && kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	for ns in $SW $A $B; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "$DIR"
}
trap cleanup EXIT

for ns in $SW $A $B; do ip netns add "$ns"; ip -n "$ns" link set lo up; done

# The demo uses root's group for the socket so it changes nothing on the
# host; a real installation creates the vknet group (see README).
echo "== starting vknetd in namespace $SW"
ip netns exec $SW "$VKNETD" -d -p "$SOCK" -i "$DIR/vknetd.pid" -t vkdemo0 --group root 198.18.0.1/16 \
	>"$DIR/tapname" 2>"$DIR/vknetd.log" &
DAEMON=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { echo "demo: vknetd did not start:"; cat "$DIR/vknetd.log"; exit 1; }
echo "   TAP $(cat "$DIR/tapname") carries 198.18.0.1/16; socket $SOCK"

client() { # namespace address
	ip netns exec "$1" socat TUN:"$2"/16,tun-type=tap,tun-name=vm0,iff-up,iff-no-pi \
		UNIX-CONNECT:"$SOCK",type=5 2>>"$DIR/socat.log" &
	pids+=($!)
	for _ in $(seq 100); do ip -n "$1" link show vm0 >/dev/null 2>&1 && return; sleep 0.05; done
	echo "demo: socat client in $1 did not come up"; cat "$DIR/socat.log"; exit 1
}
echo "== attaching two clients (socat, SOCK_SEQPACKET): 198.18.0.2 and 198.18.0.3"
client $A 198.18.0.2
client $B 198.18.0.3

fail=0
ping_from() { # namespace target label
	if out=$(ip netns exec "$1" ping -c 3 -i 0.2 -W 2 "$2" 2>&1); then
		echo "   $3: $(echo "$out" | grep -E 'packets transmitted|rtt' | tr '\n' ' ')"
	else
		echo "   $3: FAILED"; echo "$out"; fail=1
	fi
}
echo "== pings"
ping_from $A 198.18.0.3 "client 198.18.0.2 -> client 198.18.0.3"
ping_from $B 198.18.0.2 "client 198.18.0.3 -> client 198.18.0.2"
ping_from $A 198.18.0.1 "client 198.18.0.2 -> host (TAP) 198.18.0.1"
ping_from $SW 198.18.0.3 "host (TAP) 198.18.0.1 -> client 198.18.0.3"

echo "== daemon counters (SIGUSR1)"
kill -USR1 "$DAEMON"
sleep 0.3
grep -E 'counters' "$DIR/vknetd.log" | sed 's/^/   /'
echo "   (ipv6-disabled: the clients' kernels send IPv6 solicitations, which secure mode drops without --ipv6)"
VKNETCTL=$(dirname "$VKNETD")/vknetctl
if [ -x "$VKNETCTL" ]; then
	echo "== vknetctl ports and macs (the control socket beside -p)"
	"$VKNETCTL" --socket "$SOCK.ctl" ports | sed 's/^/   /'
	"$VKNETCTL" --socket "$SOCK.ctl" macs | sed 's/^/   /'
fi
if [ $fail -ne 0 ]; then
	echo "== demo FAILED; daemon log:"; cat "$DIR/vknetd.log"; exit 1
fi
echo "== demo passed; removing namespaces, daemon and socket"
