package vhostuser

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestQEMUFirmwareGuest runs QEMU with a virtio-net-pci device on our
// socket and no guest OS: the NIC's iPXE option ROM is the driver. It
// negotiates, QEMU starts vhost, and iPXE's DHCP requests arrive on TX.
// It needs qemu-system-x86_64 with its iPXE ROMs (needFirmwareQEMU).
// vectors=0: QEMU 7.2 under TCG crashes setting up
// MSI-X notifiers for vhost (REFERENCE.md, section 5).
func TestQEMUFirmwareGuest(t *testing.T) {
	needFirmwareQEMU(t)
	path := filepath.Join(t.TempDir(), "vhost.sock")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(lfd, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-nodefaults", "-display", "none", "-serial", "none", "-accel", "tcg", "-m", "128",
		"-object", "memory-backend-memfd,id=mem,size=128M,share=on", "-numa", "node,memdev=mem",
		"-chardev", "socket,id=c0,reconnect=1,path="+path, "-netdev", "vhost-user,id=n0,chardev=c0",
		"-device", "virtio-net-pci,netdev=n0,vectors=0,mac=52:54:00:12:34:56", "-boot", "n")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Logf("qemu: %s", out.String())
	}()
	// Two connections: the second after we hang up, as when the daemon
	// restarts; QEMU reconnects and restarts the rings where they were.
	for conn := 1; conn <= 2; conn++ {
		pfd := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(pfd, 10000); n != 1 {
			t.Fatalf("qemu did not connect (connection %d)", conn)
		}
		sock, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		d, err := NewDevice(sock, Config{Note: func(s string) { t.Log(s) }})
		if err != nil {
			t.Fatal(err)
		}
		serveFirmware(t, d, conn)
		d.Close()
	}
}

// serveFirmware serves d until the guest sent two frames or time runs out.
func serveFirmware(t *testing.T, d *Device, conn int) {
	got, sizes := bufs(32, 2048)
	deadline := time.Now().Add(25 * time.Second)
	ready := false
	for time.Now().Before(deadline) && d.Stats().TXFrames < 2 {
		pfds := []unix.PollFd{{Fd: int32(d.SocketFD()), Events: unix.POLLIN}}
		for q := range 2 {
			if fd := d.KickFD(q); fd >= 0 {
				pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
			}
		}
		unix.Poll(pfds, 200)
		if pfds[0].Revents != 0 {
			if _, err := d.HandleSocket(); err != nil {
				t.Fatalf("connection %d: HandleSocket: %v", conn, err)
			}
			if d.Ready() && !ready {
				ready = true
				t.Logf("connection %d: device ready, features %#x, protocol %#x, TX ring from avail %d",
					conn, d.features, d.protocol, d.q[TXQ].vq.lastAvail)
			}
		}
		d.DrainKick(TXQ)
		n, _, err := d.ReadTX(got, sizes, nil)
		if err != nil {
			t.Fatalf("connection %d: ReadTX: %v", conn, err)
		}
		for i := range n {
			t.Logf("connection %d: TX frame of %d bytes: dst % x src % x type % x", conn, sizes[i], got[i][:6], got[i][6:12], got[i][12:14])
		}
	}
	if d.Stats().TXFrames == 0 {
		t.Fatalf("connection %d: no frame from the guest; stats %+v", conn, d.Stats())
	}
}

// needFirmwareQEMU skips a test that runs QEMU with no guest but the
// virtio NIC's iPXE option ROM when that QEMU is not installed (make test
// installs it: scripts/qemu-guest.sh) or VHOSTUSER_QEMU=0 opts out.
func needFirmwareQEMU(t *testing.T) {
	t.Helper()
	if os.Getenv("VHOSTUSER_QEMU") == "0" {
		t.Skip("VHOSTUSER_QEMU=0: QEMU tests skipped")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86, or make test)")
	}
	for _, rom := range []string{"/usr/lib/ipxe/qemu/efi-virtio.rom", "/usr/share/qemu/efi-virtio.rom"} {
		if _, err := os.Stat(rom); err == nil {
			return
		}
	}
	t.Skip("the virtio NIC's iPXE ROM (efi-virtio.rom) is not installed (apt-get install ipxe-qemu)")
}
