# vknetd: `make demo` shows the switch working, `make test` runs everything CI runs.
GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

# Packages whose code runs goroutines get the race detector.
RACE_PKGS := ./engine/... ./mactable/... ./cmd/... ./internal/... ./control/... ./metrics/...

.PHONY: all build deps test test-migration vet fmt-check demo bench bench-spoof bench-compare bench-peers install clean test-qemu qemu-guest

all: build

# vknetd without cgo: --user drops capabilities on every thread with
# syscall.AllThreadsSyscall, which a cgo binary cannot use (it refuses --user).
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/vknetd ./cmd/vknetd
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/vknetctl ./cmd/vknetctl
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/vknetplug ./cmd/vknetplug

# Test and demo tools from Debian (socat, tcpdump, iperf3, dnsmasq, iproute2).
deps:
	./scripts/install-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	GOOS=dragonfly $(GO) vet ./...
	GOOS=freebsd $(GO) vet ./...

# The guest image for the QEMU tests (cached; seconds when it exists).
qemu-guest:
	@if [ "$$(id -u)" -eq 0 ]; then ./scripts/qemu-guest.sh; \
	else echo "qemu-guest: not root, QEMU tests will skip"; fi

# The QEMU tests run again with two event loops: those whose guests sit
# on two loops (each checks that they do) and frames cross between them,
# over vhost-user with one and four queue pairs (the latter with iperf3
# over its pairs spread on both loops), stream and datagram, and the
# upgrades and kill -9 that park and hand over every loop (about 70 s).
# The migrations are left out to keep this pass near a minute (they take
# 30 s more).
QEMU_WORKERS_TESTS := ^(TestStreamAndDgramGuestsPingEachOther|TestVhostUserGuestLeasesAndPingsHostAndStreamGuest|TestVhostUserMultiQueueGuestLeasesAndPings|TestGuestsKeepNetworkThroughUpgrades|TestGuestsKeepNetworkThroughKill)$$

# The live migrations of Linux guests (stream, across hosts over --vxlan,
# vhost-user) run on a QEMU that migrates TCG guests soundly, 8 or later:
# scripts/qemu-migration.sh prints the machine's own, or fetches Debian
# 12's backport of QEMU 10 beside it (not installed); QEMU 7.2 corrupts
# migrated guests now and then (integration/qemu/migrate_test.go,
# migrationQEMU). The stream migrations, where the switch never touches
# guest memory, run again (3 times at most) only if they failed and a
# guest's kernel crashed (scripts/retry-on-guest-crash.sh); the vhost-user
# migration, whose guest memory the switch writes, gets no second try.
QEMU_STREAM_MIGRATION_TESTS := ^TestStreamGuestMigrates
QEMU_VHOST_MIGRATION_TESTS := ^TestVhostUserGuestMigratesWithItsAddress$$

test-migration: deps qemu-guest
	q=$$(./scripts/qemu-migration.sh) && echo "test-migration: QEMU $${q:-none, the Linux-guest migrations skip}" && \
	VKNETD_MIGRATION_QEMU=$$q $(GO) test -count=1 -timeout 5m -run '$(QEMU_VHOST_MIGRATION_TESTS)' ./integration/qemu/ && \
	VKNETD_MIGRATION_QEMU=$$q ./scripts/retry-on-guest-crash.sh $(GO) test -count=1 -timeout 5m -run '$(QEMU_STREAM_MIGRATION_TESTS)' ./integration/qemu/

# The whole suite: unit tests, fuzz seed corpora, integration tests in
# network namespaces and with real QEMU guests (as root; they skip with a
# message otherwise); then the daemon's integration tests, the spoof
# battery and QEMU_WORKERS_TESTS again with two event loops (--workers 2,
# via internal/testbed); and the live migrations (test-migration).
test: deps fmt-check vet qemu-guest
	$(GO) test -count=1 -timeout 12m ./...
	$(GO) test -count=1 -race -timeout 10m $(RACE_PKGS)
	VKNETD_TEST_WORKERS=2 $(GO) test -count=1 -timeout 10m ./integration/ ./integration/secure/
	VKNETD_TEST_WORKERS=2 $(GO) test -count=1 -timeout 5m -run '$(QEMU_WORKERS_TESTS)' ./integration/qemu/
	$(MAKE) --no-print-directory test-migration

# Real QEMU guests (Debian kernel + busybox, TCG) over --stream and --dgram;
# installs QEMU and dnsmasq and builds the guest image first (scripts/qemu-guest.sh).
test-qemu: deps
	./scripts/qemu-guest.sh
	$(GO) test -count=1 -v -timeout 8m ./integration/qemu/

demo: deps build
	./scripts/demo.sh bin/vknetd

# Forwarding benchmarks; compare runs with benchstat.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 ./bench/ ./mactable/ ./secure/

# Regression check: BASE (default HEAD) against the working tree, side by side.
# Secure mode's kernel filter against a spoof flood (root: a real vknetd in
# a namespace; about a minute): the daemon's CPU, the flood's and a
# legitimate pair's rates, with the filter and with --no-bpf. The attacker
# gets CPU 0 to itself, the rest the others (see bench/spoof_linux_test.go).
bench-spoof:
	$(GO) test -c -o bench/bench.test ./bench/
	cd bench && VKNETD_SPOOF_BENCH=1 taskset -c 1-$$(($$(nproc)-1)) ./bench.test -test.run '^$$' -test.bench SpoofFlood -test.benchtime 1x; \
		status=$$?; rm -f bench.test; exit $$status

bench-compare:
	./scripts/bench-compare.sh $(or $(BASE),HEAD)

# vknetd against vde_switch, testpmd's vhost backend and OVS-DPDK, side by
# side in one run (root; installs vde2, dpdk-dev and openvswitch-switch-dpdk
# when missing; borrows 2 MiB hugepages and gives them back). Writes
# bench/results/peers.{md,svg,csv}. ROUNDS=3 DURATION=3 (seconds per point).
bench-peers:
	./scripts/bench-peers.sh

# Binaries, manual pages and the systemd unit under $(DESTDIR)$(PREFIX).
install: build
	install -D -m 0755 bin/vknetd $(DESTDIR)$(PREFIX)/sbin/vknetd
	install -D -m 0755 bin/vknetctl $(DESTDIR)$(PREFIX)/bin/vknetctl
	install -D -m 0755 bin/vknetplug $(DESTDIR)$(PREFIX)/bin/vknetplug
	install -D -m 0644 vknetd.8 $(DESTDIR)$(PREFIX)/share/man/man8/vknetd.8
	install -D -m 0644 vknetctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/vknetctl.1
	install -D -m 0644 vknetplug.1 $(DESTDIR)$(PREFIX)/share/man/man1/vknetplug.1
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed -e 's|@SBINDIR@|$(PREFIX)/sbin|' -e 's|@BINDIR@|$(PREFIX)/bin|' contrib/vknetd.service >$(DESTDIR)$(PREFIX)/lib/systemd/system/vknetd.service
	install -D -m 0644 contrib/vknetd.default $(DESTDIR)$(PREFIX)/share/doc/vknetd/vknetd.default

clean:
	rm -rf bin
