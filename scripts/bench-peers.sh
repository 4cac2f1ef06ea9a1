#!/bin/bash
# vknetd against the switches users would pick instead, side by side in one
# run (`make bench-peers`). The machines are 2-core and noisy, so rounds
# alternate between targets and only numbers from the same run compare.
#
# Unix-socket transports (frames/s, 2 sender/receiver pairs of batched
# clients from bench/cmd/peerbench, which talk to the sockets directly;
# the DGRAM clients send to the listener without connecting, as QEMU's
# -netdev dgram does):
#   direct SEQPACKET socketpair (the transport's limit), vknetd -U on
#   SEQPACKET, STREAM and DGRAM, vde_switch (Debian vde2, VDE v3 protocol;
#   it drops frames above 1518 bytes, so 9000 B is n/a).
# vhost-user (frames/s between two DPDK testpmd guests on virtio-user ports,
# forwarding lcore on CPU 0, the switch on CPU 1, frames looping through the
# switch: `start tx_first`, mac forwarding):
#   testpmd's own vhost backend (io forwarding), OVS-DPDK (netdev bridge,
#   two dpdkvhostuser ports, NORMAL action: MAC learning), and vknetd
#   --vhost-user once `vknetd --help` lists it ("pending" otherwise), both
#   sleeping in epoll between kicks and with --busy-poll 1ms (polling, as the
#   two DPDK switches do, while frames flow).
# vhost-user, multi-queue (family vhost-mq): the same four, each guest port
#   with QUEUES queue pairs (4) and the first burst spread over 256 flows
#   (--txonly-multi-flow), still one guest lcore and one switch core: what
#   polling and spreading several rings costs each switch.
#
# Needs root: the daemons run in a network namespace of their own, DPDK
# needs 2 MiB hugepages (mounted and allocated here, put back at the end).
# Installs vde2, dpdk-dev and openvswitch-switch-dpdk with apt-get when
# missing. Writes bench/results/peers.{csv,md,svg} and peers-machine.txt.
#
# Environment: ROUNDS (3), DURATION seconds per point (3), OUT (bench/results),
# VHOST=0 to skip the DPDK part, QUEUES (4) queue pairs per guest port for the
# multi-queue rows, MQ=0 to skip them.
#
# Comparing two builds of vknetd side by side (a change against its base):
# VKNETD=path uses that binary instead of building the tree's, VKNETD_B=path
# adds the rows "vknetd B vhost-user" (and its --busy-poll) for a second one,
# in the same alternating rounds, and ONLY=regex (grep -E) keeps only the
# targets whose names match, e.g.
#   VKNETD=/tmp/base VKNETD_B=/tmp/new ONLY='^vknetd (B )?vhost-user$' MQ=0 \
#     ROUNDS=6 OUT=/tmp/ab scripts/bench-peers.sh
# (OUT elsewhere than bench/results: such a run is not the committed chart).
# VHOST_SIZES ("64 1514") narrows the vhost-user frame sizes the same way.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
VHOST=${VHOST:-1}
QUEUES=${QUEUES:-4}
MQ=${MQ:-1}
SOCKET_SIZES="64 1514 9000"
VHOST_SIZES=${VHOST_SIZES:-"64 1514"}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/bench/results}

say() { echo "bench-peers: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
	say "needs root (network namespaces, hugepages); run: sudo make bench-peers"
	exit 1
fi

# --- Debian packages ---------------------------------------------------------
install_deps() {
	local need=""
	command -v vde_switch >/dev/null 2>&1 || need="$need vde2"
	if [ "$VHOST" = 1 ]; then
		command -v dpdk-testpmd >/dev/null 2>&1 || need="$need dpdk-dev"
		[ -x /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk ] || need="$need openvswitch-switch-dpdk"
	fi
	[ -z "$need" ] && return 0
	if ! command -v apt-get >/dev/null 2>&1; then
		say "missing$need and no apt-get: those rows will be skipped"
		return 0
	fi
	say "apt-get install$need"
	# Installing Open vSwitch must not start the system's service: a
	# policy-rc.d that refuses every start, only while apt-get runs (and
	# only if the machine has none of its own).
	local policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >$policy
		chmod 755 $policy
	fi
	export DEBIAN_FRONTEND=noninteractive
	local rc=0
	{ apt-get update -qq && apt-get install -y -qq --no-install-recommends $need >/dev/null; } || rc=$?
	[ -n "$policy" ] && rm -f "$policy"
	[ $rc -eq 0 ] || say "apt-get failed ($rc): the rows needing$need will be skipped"
}
install_deps

# --- clean-up, also on failure --------------------------------------------------
work=$(mktemp -d /tmp/vknetd-peers.XXXXXX)
ns="vkpeers-$$"
huge_old=""
huge_set=""
pids=""        # processes started here, stopped at the end
huge_mounted=""

stop_pid() { # pid: SIGTERM, wait up to 5 s, then SIGKILL
	local p=$1 i=0
	kill -0 "$p" 2>/dev/null || return 0
	kill "$p" 2>/dev/null || true
	while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	kill -9 "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}

stop_tree() { # a wrapper started as `ip netns exec ... timeout CMD`, then CMD
	local kids k
	kids=$(pgrep -P "$1" 2>/dev/null || true)
	stop_pid "$1"
	for k in $kids; do stop_pid "$k"; done
}

forget_pid() { # take pid $1, and only it, out of $pids
	local p kept=""
	for p in $pids; do [ "$p" = "$1" ] || kept="$kept $p"; done
	pids=$kept
}

cleanup() {
	set +e
	for p in $pids; do stop_tree "$p"; done
	if [ -n "$huge_mounted" ]; then
		local i=0
		while ! umount "$work/huge" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	fi
	if [ -n "$huge_set" ]; then
		if [ "$(cat /proc/sys/vm/nr_hugepages)" = "$huge_set" ]; then
			echo "$huge_old" >/proc/sys/vm/nr_hugepages
		else
			say "nr_hugepages changed by someone else meanwhile; left at $(cat /proc/sys/vm/nr_hugepages) (was $huge_old)"
		fi
	fi
	ip netns del "$ns" 2>/dev/null
	# DPDK leaves its runtime files under its --file-prefix.
	rm -rf /var/run/dpdk/vkpsw$$-* /var/run/dpdk/vkpg$$-* /var/run/dpdk/vkpovs$$
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

total=$((ROUNDS * 400 + 600)) # an upper bound on the run, for every `timeout`

# --- build ------------------------------------------------------------------------
vknetd="$work/vknetd"
vknetd_b=""
for bin in "${VKNETD:-}" "${VKNETD_B:-}"; do
	if [ -n "$bin" ] && [ ! -x "$bin" ]; then
		say "VKNETD/VKNETD_B: $bin is not an executable vknetd binary (build one with: CGO_ENABLED=0 go build -o $bin ./cmd/vknetd)"
		exit 1
	fi
done
if [ -n "${VKNETD:-}" ]; then
	cp "$VKNETD" "$vknetd"
	say "building the load generator (vknetd: $VKNETD)"
else
	say "building vknetd and the load generator"
	(cd "$root" && CGO_ENABLED=0 go build -o "$work/vknetd" ./cmd/vknetd)
fi
if [ -n "${VKNETD_B:-}" ]; then
	vknetd_b="$work/vknetd-b"
	cp "$VKNETD_B" "$vknetd_b"
fi
(cd "$root" && go build -o "$work/peerbench" ./bench/cmd/peerbench && go build -o "$work/linertt" ./bench/cmd/linertt)
pb="$work/peerbench"

# selected TARGET: whether ONLY (if set) lets this target run.
selected() { [ -z "${ONLY:-}" ] || printf '%s\n' "$1" | grep -Eq -- "$ONLY"; }

# --- the machine --------------------------------------------------------------------
mkdir -p "$out"
machine="$out/peers-machine.txt"
# Before the machine file is written: it is tracked, and git describe
# --dirty would call the tree dirty once the redirect below truncates it.
version=$(cd "$root" && git describe --tags --always --dirty 2>/dev/null || echo dev)
pkgver() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo none; }
{
	echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
	echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
	echo "nproc=$(nproc)"
	echo "kernel=$(uname -r)"
	echo "go=$(go env GOVERSION)"
	if [ -n "${VKNETD:-}" ]; then
		echo "vknetd=$VKNETD"
	else
		echo "vknetd=$version"
	fi
	[ -n "$vknetd_b" ] && echo "vknetd B=$VKNETD_B"
	[ -n "${ONLY:-}" ] && echo "only targets matching=$ONLY"
	echo "rounds=$ROUNDS"
	echo "queues=$QUEUES queue pairs per guest port in the multi-queue rows"
	echo "duration=${DURATION} s per point"
	echo "load average at start=$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "vde2=$(pkgver vde2)"
	echo "dpdk=$(pkgver dpdk-dev)"
	echo "openvswitch=$(pkgver openvswitch-switch-dpdk)"
} >"$machine"

# --- switches for the socket rows ------------------------------------------------------
ip netns add "$ns"
ip -n "$ns" link set lo up
# Datagram queues as the README advises for busy dgram guests: 512, not
# the kernel's 10 (a per-namespace setting; the host's stays as it is).
# A QEMU dgram client does not connect its socket, so the kernel holds
# every datagram sent to it (and all the clients' datagrams to vknetd's
# one listener) to that length; vde_switch's clients connect to a socket
# of their port's, which lifts it.
ip netns exec "$ns" sysctl -qw net.unix.max_dgram_qlen=512
# vknetd -U with all three listeners; --mtu 9000 for the 9000-byte frames.
ip netns exec "$ns" timeout $total "$vknetd" -d -U --group root --mtu 9000 \
	-p "$work/vk.seqpacket" --stream "$work/vk.stream" --dgram "$work/vk.dgram" \
	-i "$work/vk.pid" >"$work/vknetd.log" 2>&1 &
pids="$pids $!"
vde_ok=0
if command -v vde_switch >/dev/null 2>&1; then
	# vde_switch reads console commands from stdin and exits on EOF: give
	# it a FIFO this script holds open.
	mkfifo "$work/vde.in"
	exec 4<>"$work/vde.in"
	ip netns exec "$ns" timeout $total vde_switch -s "$work/vde" -M "$work/vde.mgmt" <"$work/vde.in" >"$work/vde.log" 2>&1 &
	pids="$pids $!"
	vde_ok=1
fi
for i in $(seq 50); do
	[ -S "$work/vk.seqpacket" ] && [ -f "$work/vk.pid" ] && { [ $vde_ok = 0 ] || [ -S "$work/vde/ctl" ]; } && break
	sleep 0.1
done
[ -S "$work/vk.seqpacket" ] || { say "vknetd did not start:"; cat "$work/vknetd.log" >&2; exit 1; }
vk_pid=$(cat "$work/vk.pid")
vde_pid=""
[ $vde_ok = 1 ] && vde_pid=$(pgrep -P "$(echo $pids | awk '{print $2}')" vde_switch || true)

raw="$work/peers.csv"
echo "round,family,target,size,status,fps,sent_fps,switch_cpu,gen_cpu" >"$raw"

# socket_point ROUND TARGET SIZE
socket_point() {
	local round=$1 target=$2 size=$3 args pid="" line
	case $target in
	"direct SEQPACKET socketpair") args="-direct -transport seqpacket" ;;
	"vknetd SEQPACKET") args="-transport seqpacket -path $work/vk.seqpacket"; pid=$vk_pid ;;
	"vknetd STREAM") args="-transport stream -path $work/vk.stream"; pid=$vk_pid ;;
	"vknetd DGRAM") args="-transport dgram -path $work/vk.dgram"; pid=$vk_pid ;;
	vde_switch)
		if [ $vde_ok = 0 ]; then
			echo "$round,socket,$target,$size,failed,,,," >>"$raw"
			return
		fi
		if [ "$size" -gt 1518 ]; then
			echo "$round,socket,$target,$size,n/a,,,," >>"$raw"
			return
		fi
		args="-transport vde -path $work/vde"; pid=$vde_pid ;;
	esac
	# In the namespace too, so that the clients' sockets take its datagram
	# queue length (a socket's is fixed when it is made).
	if line=$(ip netns exec "$ns" timeout $((DURATION + 20)) "$pb" load $args -size "$size" -duration "${DURATION}s" ${pid:+-pid $pid} 2>"$work/load.err"); then
		echo "$round,socket,$target,$size,ok,$line" >>"$raw"
		say "round $round: $target $size B: $(cat "$work/load.err")"
	else
		echo "$round,socket,$target,$size,failed,,,," >>"$raw"
		say "round $round: $target $size B failed: $(cat "$work/load.err")"
	fi
}

# --- vhost-user: hugepages, OVS-DPDK ----------------------------------------------------
vhost_ok=0
vhost_why=""
ovs_ok=0
vk_vhost=0
case $("$vknetd" --help 2>&1 || true) in *--vhost-user*) vk_vhost=1 ;; esac
vk_busy=0
case $("$vknetd" --help 2>&1 || true) in *--busy-poll*) vk_busy=1 ;; esac
if [ -n "$vknetd_b" ]; then
	case $("$vknetd_b" --help 2>&1 || true) in *--busy-poll*) ;; *)
		say "VKNETD_B: $VKNETD_B has no --vhost-user and --busy-poll"
		exit 1 ;;
	esac
fi
if [ "$VHOST" = 1 ]; then
	if ! command -v dpdk-testpmd >/dev/null 2>&1; then
		vhost_why="dpdk-testpmd missing (Debian dpdk-dev)"
	else
		mkdir "$work/huge"
		if mount -t hugetlbfs -o pagesize=2M nodev "$work/huge" 2>"$work/huge.err"; then
			huge_mounted=1
			huge_old=$(cat /proc/sys/vm/nr_hugepages)
			huge_set=$((huge_old + 768))
			echo "$huge_set" >/proc/sys/vm/nr_hugepages || true
			free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
			if [ "$free" -ge 384 ]; then
				vhost_ok=1
			else
				vhost_why="only $free free 2 MiB hugepages after asking for $huge_set"
			fi
		else
			vhost_why="mount -t hugetlbfs failed: $(cat "$work/huge.err")"
		fi
	fi
	[ -n "$vhost_why" ] && say "vhost-user rows skipped: $vhost_why"
fi

ovsdir="$work/ovs"
vsctl() { ovs-vsctl --db="unix:$ovsdir/db.sock" --timeout=20 "$@"; }
ovs_pid=""
if [ $vhost_ok = 1 ] && [ -x /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk ] && selected "OVS-DPDK"; then
	# A private ovsdb-server and ovs-vswitchd in the namespace, never the
	# system's service; the PMD thread on CPU 1 (it sleeps while the bridge
	# has no ports: ports are added for each point and removed after it).
	mkdir "$ovsdir"
	export OVS_RUNDIR=$ovsdir OVS_DBDIR=$ovsdir OVS_LOGDIR=$ovsdir OVS_SYSCONFDIR=$ovsdir
	ovsdb-tool create "$ovsdir/conf.db" /usr/share/openvswitch/vswitch.ovsschema
	ip netns exec "$ns" timeout $total ovsdb-server "$ovsdir/conf.db" --remote="punix:$ovsdir/db.sock" \
		--pidfile="$ovsdir/ovsdb-server.pid" --unixctl="$ovsdir/ovsdb-server.ctl" \
		--log-file="$ovsdir/ovsdb-server.log" --no-chdir >/dev/null 2>&1 &
	pids="$pids $!"
	for i in $(seq 50); do [ -S "$ovsdir/db.sock" ] && break; sleep 0.1; done
	vsctl --no-wait init
	vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true other_config:dpdk-socket-mem=256 \
		other_config:pmd-cpu-mask=0x2 other_config:dpdk-lcore-mask=0x2 \
		"other_config:dpdk-hugepage-dir=$work/huge" "other_config:dpdk-extra=--file-prefix=vkpovs$$ --no-pci"
	ip netns exec "$ns" taskset -c 1 timeout $total /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk \
		"unix:$ovsdir/db.sock" --pidfile="$ovsdir/ovs-vswitchd.pid" --unixctl="$ovsdir/ovs-vswitchd.ctl" \
		--log-file="$ovsdir/ovs-vswitchd.log" --no-chdir >/dev/null 2>&1 &
	pids="$pids $!"
	if vsctl add-br br0 -- set bridge br0 datapath_type=netdev 2>"$work/ovs.err"; then
		ovs_ok=1
		ovs_pid=$(cat "$ovsdir/ovs-vswitchd.pid")
	else
		say "OVS-DPDK rows skipped: $(cat "$work/ovs.err")"
	fi
fi

# vhost_point ROUND FAMILY TARGET SIZE: family vhost (one queue pair per
# guest port) or vhost-mq ($QUEUES pairs).
vhost_point() {
	local round=$1 family=$2 target=$3 size=$4 sock0 sock1 sw="" swpid="" fifo="$work/sw.in"
	local q=1 mq=() rtt0 rtt1
	# How long a cache line takes between the guests' CPU and the
	# switch's and back, before and after the point: on a VM it moves as
	# the host places the vCPUs, and so does every switch's rate, some
	# more than others (README, "How vknetd compares").
	rtt0=$("$work/linertt" 0 1 2>/dev/null || echo "?")
	if [ "$family" = vhost-mq ]; then
		q=$QUEUES
		# One stream per queue of each port on the one lcore, and a
		# first burst of many flows for the switches to spread.
		mq=(--rxq="$q" --txq="$q" --nb-cores=1 --txonly-multi-flow)
	fi
	case $target in
	"vknetd vhost-user" | "vknetd vhost-user --busy-poll")
		if [ $vk_vhost = 0 ] || { [ "$target" != "vknetd vhost-user" ] && [ $vk_busy = 0 ]; }; then
			echo "$round,$family,$target,$size,pending,,,," >>"$raw"
			return
		fi ;;
	"OVS-DPDK")
		if [ $ovs_ok = 0 ]; then
			echo "$round,$family,$target,$size,failed,,,," >>"$raw"
			return
		fi ;;
	esac
	rm -f "$work"/vh*.sock "$fifo"
	case $target in
	"testpmd vhost")
		sock0=$work/vh0.sock sock1=$work/vh1.sock
		# Interactive, so that its main lcore (CPU 0) sleeps in read(2)
		# instead of spinning; the forwarding lcore is on CPU 1.
		mkfifo "$fifo"
		ip netns exec "$ns" timeout $((DURATION + 40)) dpdk-testpmd -l 0,1 --main-lcore 0 --no-pci \
			--file-prefix "vkpsw$$-$round-$size" --huge-dir "$work/huge" -m 256 \
			--vdev "net_vhost0,iface=$sock0,queues=$q" --vdev "net_vhost1,iface=$sock1,queues=$q" -- \
			-i --forward-mode=io --total-num-mbufs=16384 "${mq[@]}" <"$fifo" >"$work/sw.log" 2>&1 &
		sw=$!
		pids="$pids $sw"
		exec 3>"$fifo"
		echo start >&3
		;;
	"OVS-DPDK")
		# A dpdkvhostuser port takes as many queue pairs as the guest
		# enables; the one PMD thread polls them all.
		sock0=$ovsdir/vhu0 sock1=$ovsdir/vhu1
		vsctl add-port br0 vhu0 -- set Interface vhu0 type=dpdkvhostuser \
			-- add-port br0 vhu1 -- set Interface vhu1 type=dpdkvhostuser
		swpid=$ovs_pid
		;;
	"vknetd vhost-user"* | "vknetd B vhost-user"*)
		sock0=$work/vkv.vhost sock1=$work/vkv.vhost
		rm -f "$work/vkv.pid"
		# The busy-poll point polls for as long as frames flow, as the
		# two DPDK switches do; the other sleeps in epoll between kicks.
		local busy=() bin=$vknetd
		case $target in *--busy-poll) busy=(--busy-poll 1ms) ;; esac
		case $target in "vknetd B "*) bin=$vknetd_b ;; esac
		ip netns exec "$ns" taskset -c 1 timeout $((DURATION + 40)) "$bin" -d -U --group root "${busy[@]}" \
			-p "$work/vkv.seqpacket" -i "$work/vkv.pid" --vhost-user "$sock0" >"$work/vkv.log" 2>&1 &
		sw=$!
		pids="$pids $sw"
		;;
	esac
	for i in $(seq 100); do [ -S "$sock0" ] && [ -S "$sock1" ] && break; sleep 0.1; done
	[ -n "$sw" ] && [ -z "$swpid" ] && swpid=$(pgrep -P "$sw" | head -1 || true)
	ticks() { [ -n "$swpid" ] && awk '{print $14 + $15}' "/proc/$swpid/stat" 2>/dev/null || echo ""; }
	# The guests: one testpmd, two virtio-user ports, frames looping
	# port 0 -> switch -> port 1 -> switch -> port 0 with MAC addresses a
	# learning switch can follow.
	local m0=02:70:62:00:01:01 m1=02:70:62:00:01:02
	(
		sleep 3
		echo "start tx_first 32"
		sleep 1
		echo "show port stats all"
		ticks >"$work/t0"
		sleep "$DURATION"
		echo "show port stats all"
		ticks >"$work/t1"
		echo stop
		echo quit
	) | ip netns exec "$ns" timeout $((DURATION + 30)) dpdk-testpmd -l 0,1 --main-lcore 1 --no-pci \
		--single-file-segments --file-prefix "vkpg$$-$round-$size-$q-${target//[^a-zA-Z]/}" --huge-dir "$work/huge" -m 256 \
		--vdev "net_virtio_user0,path=$sock0,mac=$m0,queues=$q" \
		--vdev "net_virtio_user1,path=$sock1,mac=$m1,queues=$q" -- \
		-i --forward-mode=mac --eth-peer=0,$m1 --eth-peer=1,$m0 --txpkts="$size" \
		--total-num-mbufs=16384 "${mq[@]}" >"$work/guest.log" 2>&1 || true
	case $target in
	"testpmd vhost")
		echo quit >&3 || true
		exec 3>&-
		;;
	"OVS-DPDK") vsctl del-port br0 vhu0 -- del-port br0 vhu1 || true ;;
	esac
	if [ -n "$sw" ]; then
		stop_tree "$sw"
		forget_pid "$sw"
	fi
	rtt1=$("$work/linertt" 0 1 2>/dev/null || echo "?")
	# The second "show port stats all" holds the rates over DURATION.
	local rx tx cpu=""
	rx=$(grep 'Rx-pps:' "$work/guest.log" | tail -2 | awk '{s += $2} END {if (NR == 2) print s}' || true)
	tx=$(grep 'Tx-pps:' "$work/guest.log" | tail -2 | awk '{s += $2} END {if (NR == 2) print s}' || true)
	if [ -s "$work/t0" ] && [ -s "$work/t1" ]; then
		cpu=$(awk -v a="$(cat "$work/t0")" -v b="$(cat "$work/t1")" -v d="$DURATION" 'BEGIN {printf "%.3f", (b - a) / 100 / d}')
	fi
	rm -f "$work/t0" "$work/t1"
	if [ -n "$rx" ] && [ "$rx" -gt 0 ]; then
		echo "$round,$family,$target,$size,ok,$rx,$tx,$cpu," >>"$raw"
		say "round $round: $target $size B, $q queue pair(s): received $rx frames/s (sent $tx), switch CPU ${cpu:-?}, line round trip ${rtt0}/${rtt1} ns before/after"
	else
		echo "$round,$family,$target,$size,failed,,,," >>"$raw"
		say "round $round: $target $size B, $q queue pair(s) failed; guest log:"
		grep -v '^VHOST_CONFIG' "$work/guest.log" | tail -15 >&2
		if [ "$target" = "testpmd vhost" ]; then
			say "vhost backend log:"
			grep -v '^VHOST_CONFIG' "$work/sw.log" | tail -15 >&2
		fi
	fi
}

# --- the rounds ---------------------------------------------------------------------------
socket_targets=("direct SEQPACKET socketpair" "vknetd SEQPACKET" "vknetd STREAM" "vknetd DGRAM" "vde_switch")
vhost_targets=("testpmd vhost" "OVS-DPDK" "vknetd vhost-user" "vknetd vhost-user --busy-poll")
[ -n "$vknetd_b" ] && vhost_targets+=("vknetd B vhost-user" "vknetd B vhost-user --busy-poll")
# only_selected NAME...: the names ONLY lets run, one per line.
only_selected() { local t; for t in "$@"; do selected "$t" && printf '%s\n' "$t"; done; return 0; }
mapfile -t socket_targets < <(only_selected "${socket_targets[@]}")
mapfile -t vhost_targets < <(only_selected "${vhost_targets[@]}")
if [ ${#socket_targets[@]} = 0 ] && [ ${#vhost_targets[@]} = 0 ]; then
	say "ONLY='$ONLY' matches no target"
	exit 1
fi
vhost_families=(vhost)
[ "$MQ" = 1 ] && vhost_families+=(vhost-mq)
# OVS-DPDK runs for the whole benchmark, and its first point after the
# start forwarded a fraction of its rate or one way only in every run of
# 2026-12-07 (1.4 M or 0.1 M frames/s against 5.4-7.8 M in the rounds
# after): one point of it before the rounds, not counted, warms it up.
for t in "${vhost_targets[@]}"; do
	if [ "$t" = OVS-DPDK ] && [ $vhost_ok = 1 ]; then
		say "warm-up: one OVS-DPDK point, not counted"
		raw=/dev/null vhost_point 0 vhost OVS-DPDK 64
		echo "warm-up=one OVS-DPDK point before the rounds, not counted" >>"$machine"
	fi
done
for round in $(seq "$ROUNDS"); do
	# Each round starts at a different target, so none is always first.
	for size in $SOCKET_SIZES; do
		n=${#socket_targets[@]}
		[ "$n" = 0 ] && break
		for k in $(seq 0 $((n - 1))); do
			socket_point "$round" "${socket_targets[$(((k + round - 1) % n))]}" "$size"
		done
	done
	for family in "${vhost_families[@]}"; do
		if [ ${#vhost_targets[@]} = 0 ]; then
			:
		elif [ $vhost_ok = 1 ]; then
			for size in $VHOST_SIZES; do
				n=${#vhost_targets[@]}
				for k in $(seq 0 $((n - 1))); do
					vhost_point "$round" "$family" "${vhost_targets[$(((k + round - 1) % n))]}" "$size"
				done
			done
		elif [ "$VHOST" = 1 ]; then
			for size in $VHOST_SIZES; do
				for t in "${vhost_targets[@]}"; do
					st=failed
					case $t in "vknetd vhost-user"*) [ $vk_vhost = 0 ] && st=pending ;; esac
					echo "$round,$family,$t,$size,$st,,,," >>"$raw"
				done
			done
		fi
	done
done
echo "load average at end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$machine"
if [ -n "$vhost_why" ]; then echo "vhost-user=not measured: $vhost_why" >>"$machine"; fi

cp "$raw" "$out/peers.csv"
"$pb" report -in "$out/peers.csv" -machine "$machine" -md "$out/peers.md" -svg "$out/peers.svg"
say "wrote $out/peers.md, $out/peers.svg, $out/peers.csv"
cat "$out/peers.md"
