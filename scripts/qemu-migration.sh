#!/bin/sh
# Prints the QEMU that integration/qemu's live migrations of Linux guests
# run (VKNETD_MIGRATION_QEMU), fetching one first when the machine's own
# cannot migrate a TCG guest soundly.
#
# Why: QEMU 7.2 (Debian 12's) under TCG corrupts a migrated guest's memory
# now and then: the destination's kernel crashed a few seconds after the
# switch-over ("BUG: unable to handle page fault", "kernel BUG at
# mm/slub.c", list_add corruption) in about 1 migration in 6 to 1 in 3,
# over -netdev stream too, where vknetd never touches guest memory, and
# whether the guest had settled for 10 s first or not. QEMU 10.0 (Debian
# 13's, and bookworm-backports') passed 20 runs of the three migration
# tests in a row on the same machine (2026-12-07).
#
# So: a QEMU of major version 8 or later on the PATH is used as it is.
# Otherwise, on Debian 12, QEMU 10 is taken from bookworm-backports without
# installing it and without adding the suite to the machine's sources: apt
# fetches it with a sources list of its own (signatures checked against the
# Debian archive keyring, as for any package) into
# ${VKNETD_QEMU_CACHE:-/var/cache/vknetd-qemu}/qemu-migration, where the
# packages are unpacked and a wrapper points QEMU at their firmware. The
# rest of the suite keeps the machine's QEMU.
#
# Prints nothing and exits 0 when no such QEMU can be had (not root, no
# apt, not Debian 12): the migration tests then skip and say why.
set -eu

cache=${VKNETD_QEMU_CACHE:-/var/cache/vknetd-qemu}
dir=$cache/qemu-migration
say() { echo "qemu-migration: $*" >&2; }

# major prints the major version of QEMU binary $1.
major() {
	"$1" --version 2>/dev/null | awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "version") { split($(i + 1), v, "."); print v[1]; exit } }'
}

if sys=$(command -v qemu-system-x86_64 2>/dev/null) && [ "$(major "$sys")" -ge 8 ] 2>/dev/null; then
	echo "$sys"
	exit 0
fi
if [ -x "$dir/qemu-system-x86_64" ] && [ "$(major "$dir/qemu-system-x86_64")" -ge 8 ] 2>/dev/null; then
	echo "$dir/qemu-system-x86_64"
	exit 0
fi

codename=$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1 || [ "$codename" != bookworm ]; then
	say "no QEMU 8 or later to migrate TCG guests with (QEMU 7.2 corrupts them; see this script); the Linux-guest migration tests will skip"
	exit 0
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -s "$keyring" ] || { say "no $keyring to check bookworm-backports with; the migration tests will skip"; exit 0; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vknetd-qemu-migration.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/parts"
echo "deb [signed-by=$keyring] http://deb.debian.org/debian bookworm-backports main" >"$work/sources.list"
# Only this sources list and these package lists: the machine's apt state
# is neither read for sources nor written.
set -- -qq -o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts="$work/parts" \
	-o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/archives" \
	-o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" -o APT::Sandbox::User=root
say "fetching QEMU from bookworm-backports into $dir (not installed)"
apt-get "$@" update || { say "apt-get update of bookworm-backports failed; the migration tests will skip"; exit 0; }
(cd "$work" && apt-get "$@" download qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
	qemu-system-data/bookworm-backports seabios/bookworm-backports) ||
	{ say "apt-get download from bookworm-backports failed; the migration tests will skip"; exit 0; }
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
# The libraries it links are Debian 12's (it was built for it): install from
# the machine's own sources those that are missing, usually none once QEMU
# 7.2 is installed.
missing=
for deb in "$work"/qemu-system-x86_*.deb "$work"/qemu-system-common_*.deb; do
	for p in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/ //g'); do
		case $p in qemu-* | seabios | ipxe-qemu | "") continue ;; esac
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
done
if [ -n "$missing" ]; then
	say "apt-get install$missing (libraries QEMU 10 links)"
	# shellcheck disable=SC2086 # a list of package names
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
		{ say "apt-get install$missing failed; the migration tests will skip"; exit 0; }
fi

rm -rf "$dir.new"
mkdir -p "$dir.new"
mv "$work/root" "$dir.new/root"
cat >"$dir.new/qemu-system-x86_64" <<EOF
#!/bin/sh
# QEMU from bookworm-backports for vknetd's migration tests (scripts/qemu-migration.sh).
exec "$dir/root/usr/bin/qemu-system-x86_64" -L "$dir/root/usr/share/qemu" "\$@"
EOF
chmod 0755 "$dir.new/qemu-system-x86_64"
# The wrapper names $dir: check the copy there, once it is in place.
rm -rf "$dir"
mv "$dir.new" "$dir"
if ! v=$(major "$dir/qemu-system-x86_64") || [ "$v" -lt 8 ]; then
	say "the QEMU fetched into $dir does not run (missing libraries?): $("$dir/qemu-system-x86_64" --version 2>&1 | head -1)"
	rm -rf "$dir"
	exit 0
fi
echo "$dir/qemu-system-x86_64"
