#!/bin/sh
# Builds the tiny QEMU guest that integration/qemu boots against vknetd, from
# Debian packages only: a Debian kernel (its virtio-net modules) and
# busybox-static in an initramfs whose /init gets a DHCP lease, pings what the
# kernel command line names, prints VKT-* result lines on the serial console
# and powers off.
#
#   scripts/qemu-guest.sh [--force]
#
# As root it first installs what booting the guest takes, when missing
# (qemu-system-x86, dnsmasq-base for the tests' DHCP), and what building it
# takes (dpkg, kmod, cpio). busybox-static and the kernel are only downloaded
# and unpacked, never installed on the host.
#
# Output, in ${VKNETD_QEMU_CACHE:-/var/cache/vknetd-qemu}:
#   vmlinuz            the kernel
#   initramfs.cpio.gz  busybox, the modules, /init, and the host's iperf3
#                      with the libraries it loads (when the host has
#                      iperf3: make deps installs it; 3.4 MB more,
#                      most of it libcrypto and libc)
# Nothing is rebuilt when both are there and were made by this version of the
# script (--force rebuilds anyway). The kernel package is
# ${VKNETD_QEMU_KERNEL:-linux-image-cloud-amd64}: any Debian kernel whose
# virtio_net is a module or built in will do; the cloud flavour is the smallest.
#
# Boot one by hand (TCG: KVM is not needed), here against vknetd --stream:
#   qemu-system-x86_64 -M q35 -accel tcg -m 256 -nodefaults -no-user-config \
#     -display none -serial stdio -no-reboot \
#     -kernel $CACHE/vmlinuz -initrd $CACHE/initramfs.cpio.gz \
#     -append "console=ttyS0 panic=-1 quiet vkt.ping=198.18.0.1" \
#     -netdev stream,id=n0,server=off,addr.type=unix,addr.path=/var/run/vknet.stream \
#     -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=
#
# Kernel command line parameters the guest's /init reads:
#   vkt.ping=IP[,IP...]  ping each until it answers or vkt.wait runs out
#   vkt.wait=SECONDS     per target (default 60): a peer guest may boot later
#   vkt.hold=SECONDS     stay up this long after the pings (default 0), so
#                        that a peer guest can ping this one
#   vkt.iperf=IP         after the pings, run iperf3 -c IP with vkt.streams
#                        (default 4) TCP streams for vkt.secs (default 3)
#                        seconds, to IP and then back (-R); the guest picks
#                        each stream's TX queue by its flow hash (XPS off)
# and the lines it prints, each with the guest's uptime in seconds:
#   VKT-BOOT <uptime> <kernel>      VKT-LEASE <ip> <uptime>
#   VKT-PING-OK <ip> <uptime> <rtt> VKT-PING-FAIL <ip> <uptime>
#   VKT-LEASE-FAIL <uptime>         VKT-DONE <uptime> ok|fail
#   VKT-IPERF <to|from> <stream> <amount> <unit> <Kbits/s>   what each
#                        stream's receiver got ("SUM" for all), then
#   VKT-IPERF-DONE <to|from> <uptime> ok|fail
set -eu

cache=${VKNETD_QEMU_CACHE:-/var/cache/vknetd-qemu}
kpkg=${VKNETD_QEMU_KERNEL:-linux-image-cloud-amd64}
force=
case ${1:-} in
--force) force=1 ;;
"") ;;
*) echo "usage: $0 [--force]   (cache: \$VKNETD_QEMU_CACHE, kernel package: \$VKNETD_QEMU_KERNEL)" >&2; exit 2 ;;
esac

die() { echo "qemu-guest: $*" >&2; exit 1; }

updated=
apt_update() {
	[ -n "$updated" ] && return 0
	updated=1
	apt-get update -qq || die "apt-get update failed"
}

# apt_install PKG... installs the packages, as root; otherwise says what to run.
apt_install() {
	[ $# -gt 0 ] || return 0
	if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		die "missing $*: apt-get install $*, or run as root"
	fi
	echo "qemu-guest: apt-get install $*" >&2
	apt_update
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
		die "apt-get install $* failed"
}

need=
command -v qemu-system-x86_64 >/dev/null 2>&1 || need="$need qemu-system-x86"
command -v dnsmasq >/dev/null 2>&1 || need="$need dnsmasq-base"
if [ -n "$need" ] && [ "$(id -u)" -ne 0 ]; then
	echo "qemu-guest: booting the guest needs$need (apt-get install$need as root); building it anyway" >&2
elif [ -n "$need" ]; then
	# shellcheck disable=SC2086 # a list of package names
	apt_install $need
fi

# The stamp ties the image to this script, so that an edited /init is never
# tested with an initramfs built by an older one.
stamp=$(sha256sum <"$0" | cut -d' ' -f1)
if [ -z "$force" ] && [ -s "$cache/vmlinuz" ] && [ -s "$cache/initramfs.cpio.gz" ] &&
	[ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp" ]; then
	echo "$cache"
	exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "needs apt-get (Debian or Ubuntu) to fetch the kernel and busybox-static"
need=
command -v dpkg-deb >/dev/null 2>&1 || need="$need dpkg"
command -v depmod >/dev/null 2>&1 || need="$need kmod"
command -v cpio >/dev/null 2>&1 || need="$need cpio"
# shellcheck disable=SC2086
apt_install $need

mkdir -p "$cache" || die "cannot create $cache: set VKNETD_QEMU_CACHE to a writable directory"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A metapackage names the versioned kernel it stands for; download that one.
# Downloads run as root (the work directory is private), which apt notes.
resolve() {
	pkg=$kpkg
	for _ in 1 2 3; do
		dep=$(apt-cache depends "$pkg" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
		[ -n "$dep" ] || break
		pkg=$dep
	done
	case $pkg in linux-image-[0-9]*) return 0 ;; esac
	return 1
}
download() {
	(cd "$work" && apt-get -qq -o APT::Sandbox::User=root download "$pkg" busybox-static)
}
# Package lists may be missing (a fresh machine) or name versions the mirror no
# longer has: update them once, and only then.
if ! resolve || ! download; then
	[ "$(id -u)" -eq 0 ] || die "cannot download $kpkg and busybox-static: run apt-get update as root, or this script as root"
	apt_update
	resolve || die "$kpkg does not lead to a linux-image-<version> package: set VKNETD_QEMU_KERNEL to a Debian kernel package"
	download || die "apt-get download $pkg busybox-static failed"
fi
dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/bb"

kver=${pkg#linux-image-}
mods=$work/k/lib/modules/$kver
[ -d "$mods" ] || die "$pkg has no lib/modules/$kver"
[ -s "$work/k/boot/vmlinuz-$kver" ] || die "$pkg has no boot/vmlinuz-$kver"
# The package ships no modules.dep (its postinst runs depmod): make one.
depmod -b "$work/k" "$kver"

# virtio_pci finds the device, virtio_net drives it. Everything they need comes
# from modules.dep, dependencies first; a driver built into this kernel is
# simply not there to load.
order=$(awk -v want="virtio_pci virtio_net" '
	function base(p) { sub(/.*\//, "", p); sub(/\.ko(\.[a-z]+)?$/, "", p); return p }
	function visit(m,   n, i, d) {
		if (m in seen || !(m in path)) return
		seen[m] = 1
		n = split(deps[m], d, " ")
		for (i = 1; i <= n; i++) visit(base(d[i]))
		print path[m]
	}
	{ m = $1; sub(/:$/, "", m); path[base(m)] = m; $1 = ""; deps[base(m)] = $0 }
	END { n = split(want, w, " "); for (i = 1; i <= n; i++) visit(w[i]) }
' "$mods/modules.dep")
for m in virtio_pci virtio_net; do
	echo "$order" | grep -q "/$m\.ko" || grep -q "/$m\.ko" "$mods/modules.builtin" ||
		die "$pkg has virtio_net support neither as a module nor built in ($m missing)"
done

root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/etc" "$root/proc" "$root/sys" "$root/dev" \
	"$root/tmp" "$root/run" "$root/lib/modules"
cp "$work/bb/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
	[ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
: >"$root/etc/modules"
for m in $order; do
	f=$(basename "$m")
	case $f in
	*.ko.xz) xz -dc "$mods/$m" >"$root/lib/modules/${f%.xz}"; f=${f%.xz} ;;
	*.ko.zst) zstd -qdc "$mods/$m" >"$root/lib/modules/${f%.zst}"; f=${f%.zst} ;;
	*.ko.gz) gzip -dc "$mods/$m" >"$root/lib/modules/${f%.gz}"; f=${f%.gz} ;;
	*) cp "$mods/$m" "$root/lib/modules/$f" ;;
	esac
	echo "$f" >>"$root/etc/modules"
done

# iperf3 comes from the host, with the libraries and loader ldd names, at
# the same paths: both are Debian's amd64, and a guest without it reports
# VKT-IPERF-DONE ... fail (the tests skip, saying why, before they boot it).
if iperf=$(command -v iperf3); then
	for f in "$iperf" $(ldd "$iperf" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
		mkdir -p "$root${f%/*}"
		cp -L "$f" "$root$f"
	done
else
	echo "qemu-guest: no iperf3 on this host (apt-get install iperf3, or make deps): the guest has none" >&2
fi

cat >"$root/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc calls this with the lease in its environment.
case $1 in
deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-16}" dev "$interface"
	echo "$ip" >/run/lease ;;
esac
exit 0
EOF

cat >"$root/init" <<'EOF'
#!/bin/sh
# The vknetd test guest: lease, ping, report, power off. See scripts/qemu-guest.sh.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "VKT-$*"; }
arg() {
	for w in $(cat /proc/cmdline); do
		case $w in "vkt.$1="*) echo "${w#*=}"; return ;; esac
	done
	echo "$2"
}
finish() {
	say DONE "$(up)" "$1"
	hold=$(arg hold 0)
	[ "$hold" -gt 0 ] 2>/dev/null && sleep "$hold"
	poweroff -f
}

say BOOT "$(up)" "$(uname -r)"
while read -r m; do
	insmod "/lib/modules/$m" || say MODULE-FAIL "$m"
done </etc/modules
# Router solicitations and the like would only be counted as drops by a
# secure-mode switch: keep the guest to ARP, DHCP and ICMP.
echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null
echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null
ip link set lo up

i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -e /sys/class/net/eth0 ]; then
	say NO-ETH0 "$(up)" "$(ls /sys/class/net)"
	finish fail
fi
say MAC "$(cat /sys/class/net/eth0/address)"
ip link set eth0 up

if udhcpc -i eth0 -s /etc/udhcpc.script -f -q -n -t 30 -T 1 -A 1 >/run/udhcpc.log 2>&1 && [ -s /run/lease ]; then
	say LEASE "$(cat /run/lease)" "$(up)"
else
	say LEASE-FAIL "$(up)"
	cat /run/udhcpc.log
	finish fail
fi

result=ok
wait=$(arg wait 60)
for target in $(arg ping "" | tr , ' '); do
	deadline=$(($(cut -d. -f1 /proc/uptime) + wait))
	while :; do
		if out=$(ping -c 1 -W 1 "$target" 2>&1); then
			rtt=$(echo "$out" | sed -n 's/.*time=\([0-9.]* *ms\).*/\1/p' | tr -d ' ')
			say PING-OK "$target" "$(up)" "$rtt"
			break
		fi
		if [ "$(cut -d. -f1 /proc/uptime)" -ge "$deadline" ]; then
			say PING-FAIL "$target" "$(up)"
			echo "$out"
			ip addr show eth0
			ip neigh show
			result=fail
			break
		fi
		sleep 0.2
	done
done

# iperf DIR [-R]: one iperf3 run, its receivers' lines as VKT-IPERF.
iperf() {
	dir=$1
	shift
	if [ ! -x /usr/bin/iperf3 ]; then
		say IPERF-DONE "$dir" "$(up)" fail
		return 1
	fi
	# The server may not listen yet (a test starts it once the switch is
	# ready for the streams): a refused connection is tried again, until
	# vkt.wait runs out.
	deadline=$(($(cut -d. -f1 /proc/uptime) + wait))
	while ! /usr/bin/iperf3 -c "$server" -P "$(arg streams 4)" -t "$(arg secs 3)" -f k "$@" >/run/iperf.log 2>&1; do
		if [ "$(cut -d. -f1 /proc/uptime)" -ge "$deadline" ]; then
			cat /run/iperf.log
			say IPERF-DONE "$dir" "$(up)" fail
			return 1
		fi
		sleep 1
	done
	# "[  5]   0.00-3.04  sec   412 KBytes  1109 Kbits/sec   receiver"
	sed -n 's/^\[ *\([0-9A-Z]*\)\] .* \([0-9.]*\) \([KMG]*Bytes\) *\([0-9.]*\) Kbits\/sec .*receiver.*/\1 \2 \3 \4/p' /run/iperf.log |
		while read -r stream amount unit kbits; do say IPERF "$dir" "$stream" "$amount" "$unit" "$kbits"; done
	say IPERF-DONE "$dir" "$(up)" ok
}
server=$(arg iperf "")
if [ -n "$server" ]; then
	# iperf3 before 3.16 (Debian 12 has 3.12) sends every stream from one
	# thread, and virtio_net's XPS maps a CPU to one TX queue, so with XPS
	# the queues used are wherever the scheduler ran it and the ACKs (2 and
	# 4 of 4 in two runs). With XPS off each stream's queue is its own
	# flow hash's, whatever CPU sends it.
	for x in /sys/class/net/eth0/queues/tx-*/xps_cpus; do echo 0 >"$x" 2>/dev/null; done
	iperf to || result=fail
	iperf from -R || result=fail
fi
finish $result
EOF
chmod 0755 "$root/init" "$root/etc/udhcpc.script"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$work/initramfs.cpio.gz"
cp "$work/k/boot/vmlinuz-$kver" "$work/vmlinuz"
echo "$pkg" >"$work/kernel"
# Renames are atomic, so a test never boots half an image.
mv "$work/vmlinuz" "$cache/vmlinuz"
mv "$work/initramfs.cpio.gz" "$cache/initramfs.cpio.gz"
mv "$work/kernel" "$cache/kernel"
echo "$stamp" >"$cache/stamp"
echo "qemu-guest: built $cache/vmlinuz ($pkg) and $cache/initramfs.cpio.gz ($(echo "$order" | wc -l) modules)" >&2
echo "$cache"
