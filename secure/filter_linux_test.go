package secure

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// testMTU is the engine's default MTU: frames up to 1514 bytes untagged.
const testMTU = 1500

// kernelFilters are loaded once per test binary, one per policy (without
// and with --ipv6), and shared by every test and fuzz input.
var (
	kernelOnce    sync.Once
	kernelByV6    [2]*KernelFilter
	kernelLoadErr error
)

// loadTestFilter returns the loaded filter for testConfig(v6), or skips
// the test when this kernel or user cannot load BPF.
func loadTestFilter(t testing.TB, v6 bool) *KernelFilter {
	t.Helper()
	kernelOnce.Do(func() {
		for i, v6 := range []bool{false, true} {
			p, err := New(testConfig(v6))
			if err != nil {
				kernelLoadErr = err
				return
			}
			if kernelByV6[i], kernelLoadErr = LoadKernelFilter(p, 64); kernelLoadErr != nil {
				return
			}
		}
	})
	if kernelLoadErr != nil {
		if errors.Is(kernelLoadErr, ebpf.ErrNotSupported) || errors.Is(kernelLoadErr, unix.EPERM) || os.Geteuid() != 0 {
			t.Skipf("cannot load the kernel filter here (needs root or CAP_BPF and a kernel with socket filters): %v", kernelLoadErr)
		}
		t.Fatalf("loading the kernel filter: %v", kernelLoadErr)
	}
	if v6 {
		return kernelByV6[1]
	}
	return kernelByV6[0]
}

// kernelKeeps runs frame through the loaded program (BPF_PROG_TEST_RUN).
// The test run treats its input as an Ethernet frame and pulls its header
// before a socket filter runs, where a real socket shows the filter the
// whole message: a 14-byte dummy header in front makes the program see
// exactly the frame, as TestKernelFilterOnSocket checks.
//
// The test run takes at most about a page of data; a longer frame (they
// are all oversize) goes through a socket pair instead.
func kernelKeeps(t testing.TB, k *KernelFilter, frame []byte) bool {
	t.Helper()
	if len(frame) > 2048 {
		return socketKeeps(t, k, frame)
	}
	data := make([]byte, etherLen+len(frame))
	copy(data[etherLen:], frame)
	ret, err := k.Program.Run(&ebpf.RunOptions{Data: data})
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	if ret != 0 && int(ret) != len(frame) {
		t.Fatalf("the filter kept %d bytes of a %d-byte frame: it must keep all or nothing", ret, len(frame))
	}
	return ret != 0
}

// socketKeeps sends frame over a SEQPACKET pair whose receiving end has
// the filter, and reports whether it arrived.
func socketKeeps(t testing.TB, k *KernelFilter, frame []byte) bool {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, err := k.Attach(fds[0]); err != nil {
		t.Fatal(err)
	}
	defer func() {
		c, _ := unix.GetsockoptUint64(fds[0], unix.SOL_SOCKET, unix.SO_COOKIE)
		k.Forget(c)
	}()
	return sendThrough(t, fds, frame)
}

// sendThrough sends frame from fds[1] and reports whether fds[0] got it
// whole.
func sendThrough(t testing.TB, fds [2]int, frame []byte) bool {
	t.Helper()
	if n, err := unix.Write(fds[1], frame); err != nil || n != len(frame) {
		t.Fatalf("sending a %d-byte frame: %d %v", len(frame), n, err)
	}
	buf := make([]byte, len(frame)+1)
	n, _, err := unix.Recvfrom(fds[0], buf, unix.MSG_DONTWAIT)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return false
	case err != nil:
		t.Fatalf("receiving a %d-byte frame: %v", len(frame), err)
	case n != len(frame):
		t.Fatalf("received %d bytes of a %d-byte frame", n, len(frame))
	}
	return true
}

// userspacePasses is what the engine and the Checker decide for a frame
// from a client with no bindings yet: the engine's runt and oversize rules,
// then Check. Bindings only ever add drops, so this is the most the
// userspace half can pass.
func userspacePasses(c *Checker, frame []byte) bool {
	tagged := len(frame) >= 14 && (frame[12] == 0x81 && frame[13] == 0 || frame[12] == 0x88 && frame[13] == 0xa8)
	maxFrame := testMTU + 18
	switch {
	case len(frame) < 14:
		return false
	case len(frame) > maxFrame-4 && !tagged, len(frame) > maxFrame:
		return false
	}
	return c.Check(frame, portA) == Pass
}

// differential fails if the kernel drops a frame userspace passes, under
// the policy without --ipv6 and the one with it. It returns how many of
// the two verdicts were kernel drops.
func differential(t testing.TB, name string, frame []byte) (kernelDrops int) {
	t.Helper()
	for _, v6 := range []bool{false, true} {
		k := loadTestFilter(t, v6)
		c := newTestPolicy(t, testConfig(v6)).NewChecker()
		if kernelKeeps(t, k, frame) {
			continue
		}
		kernelDrops++
		if userspacePasses(c, frame) {
			t.Errorf("%s (ipv6 %v): the kernel filter drops a frame the userspace checker passes: % x", name, v6, frame)
		}
	}
	return kernelDrops
}

// TestKernelFilterDropsNoLegitimateFrame runs every rule case, each also
// with its last byte cut and with padding, and the fuzz corpus through
// both halves.
func TestKernelFilterDropsNoLegitimateFrame(t *testing.T) {
	loadTestFilter(t, false)
	drops, total := 0, 0
	for _, tc := range ruleCases() {
		for _, f := range [][]byte{tc.frame, tc.frame[:max(len(tc.frame)-1, 0)], append(append([]byte{}, tc.frame...), make([]byte, 64)...)} {
			drops += differential(t, tc.name, f)
			total += 2
		}
		if tc.prior != nil {
			drops += differential(t, tc.name+" (prior)", tc.prior)
			total += 2
		}
	}
	for name, f := range corpusFrames(t) {
		drops += differential(t, name, f)
		total += 2
	}
	t.Logf("the kernel drops %d of %d verdicts; userspace drops at least as many", drops, total)
}

// TestKernelFilterMutations changes every header byte of every rule
// case's frame to a few values, the IPv4 checksum fixed after, and runs
// each through both halves: the frames near the rules' edges that random
// fuzzing seldom builds.
func TestKernelFilterMutations(t *testing.T) {
	loadTestFilter(t, false)
	if testing.Short() {
		t.Skip("about 100k test runs of the program")
	}
	n := 0
	for _, tc := range ruleCases() {
		for i := 0; i < min(len(tc.frame), 96); i++ {
			orig := tc.frame[i]
			for _, v := range []byte{0, 0xff, orig ^ 1, orig + 1, orig - 1, orig ^ 0x80} {
				f := append([]byte{}, tc.frame...)
				f[i] = v
				if len(f) >= 34 && f[12] == 0x08 && f[13] == 0 && f[14]&0x0f >= 5 && 14+int(f[14]&0x0f)*4 <= len(f) && i != 24 && i != 25 {
					fixIPv4Checksum(f)
				}
				differential(t, fmt.Sprintf("%s, byte %d = %#x", tc.name, i, v), f)
				n++
			}
		}
	}
	t.Logf("%d mutated frames", n)
}

// TestKernelFilterDrops checks the filter is not a pass-all: the spoofs
// it exists for are dropped in the kernel.
func TestKernelFilterDrops(t *testing.T) {
	k := loadTestFilter(t, false)
	k6 := loadTestFilter(t, true)
	cases := []struct {
		name  string
		v6    bool
		frame []byte
		keep  bool
	}{
		{"legitimate TCP", false, tcpFrame(macA, ipA, tapIP), true},
		{"IPv4 source outside", false, tcpFrame(macA, "10.0.0.1", tapIP), false},
		{"IPv4 source the TAP's", false, tcpFrame(macA, tapIP, ipB), false},
		{"IPv4 bad checksum", false, setIPv4(tcpFrame(macA, ipA, tapIP), 10, 0, 0), false},
		{"source MAC the TAP's", false, tcpFrame(tapMAC, ipA, tapIP), false},
		{"multicast source MAC", false, tcpFrame(mac("01:00:5e:00:00:01"), ipA, tapIP), false},
		{"runt: the engine's to count", false, tcpFrame(macA, ipA, tapIP)[:13], true},
		{"vfkit hello (not a frame, registers a datagram client)", false, []byte("VFKT"), true},
		{"oversize: the engine's to count", false, append(tcpFrame(macA, ipA, tapIP), make([]byte, testMTU)...), true},
		{"oversize and spoofed", false, append(tcpFrame(macA, "10.0.0.1", tapIP), make([]byte, testMTU)...), false},
		{"IPv6 without --ipv6", false, echo6Frame(macA, llA, "fe80::1"), false},
		{"IPv6 link-local", true, echo6Frame(macA, llA, "fe80::1"), true},
		{"IPv6 source outside", true, echo6Frame(macA, "2001:db9::a", tap6), false},
		{"IPv6 source the TAP's", true, echo6Frame(macA, tap6, ip6A), false},
	}
	for _, tc := range cases {
		kf := k
		if tc.v6 {
			kf = k6
		}
		if got := kernelKeeps(t, kf, tc.frame); got != tc.keep {
			t.Errorf("%s: kernel keeps %v, want %v", tc.name, got, tc.keep)
		}
	}
}

// TestKernelFilterOnSocket checks the program on a real SEQPACKET socket
// pair agrees with the test run for every rule case: the filter sees the
// message from its first byte, and a drop is silent to the sender.
func TestKernelFilterOnSocket(t *testing.T) {
	k := loadTestFilter(t, true)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	cookie, err := k.Attach(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer k.Forget(cookie)
	dropped := uint64(0)
	for _, tc := range ruleCases() {
		if len(tc.frame) == 0 {
			continue
		}
		onSocket := sendThrough(t, fds, tc.frame)
		if !onSocket {
			dropped++
		}
		if len(tc.frame) >= 14 {
			if run := kernelKeeps(t, k, tc.frame); run != onSocket {
				t.Errorf("%s: the socket keeps %v, the test run %v", tc.name, onSocket, run)
			}
		} else if !onSocket {
			t.Errorf("%s: the socket filter dropped a %d-byte runt: the engine counts those", tc.name, len(tc.frame))
		}
	}
	// The filter counts under the receiving socket's cookie: the
	// engine's per-port counts rely on it.
	n, err := k.Dropped(cookie)
	if err != nil {
		t.Fatal(err)
	}
	if n != dropped {
		t.Errorf("the counter of the receiving socket says %d, the socket dropped %d", n, dropped)
	}
	sender, err := unix.GetsockoptUint64(fds[1], unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := k.Dropped(sender); n != 0 {
		t.Errorf("%d drops counted under the sender's cookie", n)
	}
}

func FuzzKernelFilter(f *testing.F) {
	addSeeds(f, false)
	f.Fuzz(func(t *testing.T, frame []byte) {
		differential(t, "fuzz input", frame)
		// Random bytes seldom make a valid IPv4 checksum, behind which
		// most of the IPv4 rules sit: judge the frame with it fixed too.
		if len(frame) >= 34 && frame[12] == 0x08 && frame[13] == 0 && frame[14]&0x0f >= 5 && 14+int(frame[14]&0x0f)*4 <= len(frame) {
			differential(t, "fuzz input, IPv4 checksum fixed", fixIPv4Checksum(append([]byte{}, frame...)))
		}
	})
}
