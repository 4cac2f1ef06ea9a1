package qemu_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vknetd/vknetd/internal/testbed"
)

// What TestMain found: the binary under test and the guest image, or why the
// tests that boot guests must skip.
var (
	vknetd     string
	kernel     string
	initrd     string
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(setup(m))
}

func setup(m *testing.M) int {
	cache := os.Getenv("VKNETD_QEMU_CACHE")
	if cache == "" {
		cache = "/var/cache/vknetd-qemu"
	}
	kernel = filepath.Join(cache, "vmlinuz")
	initrd = filepath.Join(cache, "initramfs.cpio.gz")
	skipReason = checkMachine()
	if skipReason == "" {
		for _, f := range []string{kernel, initrd} {
			if _, err := os.Stat(f); err != nil {
				skipReason = fmt.Sprintf("no guest image (%v): build it with scripts/qemu-guest.sh, or run make test-qemu", err)
				break
			}
		}
	}
	if skipReason != "" {
		return m.Run()
	}
	noIperf = iperfMissing(initrd)
	return testbed.RunWithVknetd(m, "qemu", &vknetd)
}

// noIperf says why the guests cannot run iperf3, or "".
var noIperf string

// iperfMissing says why the guest image holds no iperf3 (scripts/qemu-guest.sh
// copies the host's when there is one), or "".
func iperfMissing(image string) string {
	f, err := os.Open(image)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Sprintf("%s: %v", image, err)
	}
	// A cpio entry's name ends with a NUL.
	data, err := io.ReadAll(zr)
	if err != nil {
		return fmt.Sprintf("%s: %v", image, err)
	}
	if !bytes.Contains(data, []byte("usr/bin/iperf3\x00")) {
		return fmt.Sprintf("the guest image %s has no iperf3: apt-get install iperf3 (or make deps), then scripts/qemu-guest.sh builds it again", image)
	}
	return ""
}

// checkMachine says why guests cannot be booted here, or "".
func checkMachine() string {
	if runtime.GOOS != "linux" {
		return "QEMU tests need Linux network namespaces, not " + runtime.GOOS
	}
	if os.Geteuid() != 0 {
		return "needs root: the QEMU tests create network namespaces and a TAP (run as root, or make test-qemu)"
	}
	for tool, pkg := range map[string]string{
		"qemu-system-x86_64": "qemu-system-x86",
		"dnsmasq":            "dnsmasq-base",
		"ip":                 "iproute2",
		"ping":               "iputils-ping",
	} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("QEMU tests need %s: apt-get install %s, or run make test-qemu", tool, pkg)
		}
	}
	return ""
}

// needGuests skips t when guests cannot be booted here.
func needGuests(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
