//go:build linux

package plug

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vknetd/vknetd/internal/testbed"
)

// TestTapOffloadIperf runs iperf3 TCP both ways between the daemon's host
// side (its TAP's address, in its namespace) and a plugged namespace, in
// secure mode: over SEQPACKET with the TAP's offloads on (the default: the
// host hands the switch 64 KiB superframes, cut into MTU frames for the
// plug), over vhost-user with offloads (superframes cross whole both
// ways: the plug's and the daemon's TAPs both carry them), and with
// --no-offload, in one run. It asserts that every transfer completes and
// that superframes crossed where offloads were on, and logs the rates
// without asserting them. VKNETD_OFFLOAD_SECONDS sets the iperf3 time (3).
//
//	go test -v -run TapOffload ./integration/plug/
func TestTapOffloadIperf(t *testing.T) {
	needRoot(t)
	testbed.RequireTool(t, "iperf3")
	secs := 3
	if s, err := strconv.Atoi(os.Getenv("VKNETD_OFFLOAD_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	type result struct {
		name     string
		up, down float64
	}
	var results []result
	for _, c := range []struct {
		name    string
		args    []string
		vhost   bool
		offload bool
	}{
		{"-p, TAP offloads", nil, false, true},
		{"--vhost-user, offloads", nil, true, true},
		{"-p, --no-offload", []string{"--no-offload"}, false, false},
	} {
		dir := testbed.ShortTempDir(t)
		vhostPath := filepath.Join(dir, "vhost")
		args := append(c.args, "--vhost-user", vhostPath, host+"/16")
		ns := testbed.NewNetns(t)
		d := ns.StartDaemon(t, vknetd, testbed.DaemonConfig{Sock: filepath.Join(dir, "vknet"), Args: args})
		if got := strings.Contains(d.Stderr(), "offload=true"); got != c.offload {
			t.Fatalf("%s: daemon logged offload=%v, want %v:\n%s", c.name, got, c.offload, d.Stderr())
		}
		link := []string{"-p", d.Sock}
		if c.vhost {
			link = []string{"--vhost-user", vhostPath}
		}
		client, p := plugged(t, append(link, "198.18.0.10/16")...)
		mustPing(t, client, host, c.name)
		r := result{name: c.name}
		r.up = iperf3(t, d.Netns, client, host, secs, false)
		r.down = iperf3(t, d.Netns, client, host, secs, true)
		results = append(results, r)
		// The kernel counts a superframe as one packet: with offloads the
		// host's packets to the switch average far above an MTU frame,
		// and with superframes crossing whole so do the switch's to the
		// host and to the plugged namespace.
		hostTX, hostRX := tapAverages(t, d.Netns, d.TAP)
		_, plugRX := tapAverages(t, client, "vkplug0")
		t.Logf("%s: average packet: host to switch %.0f bytes, switch to host %.0f, switch to the plugged namespace %.0f",
			c.name, hostTX, hostRX, plugRX)
		if c.offload && hostTX <= 1514 {
			t.Errorf("%s: the host's packets to the switch average %.0f bytes: no superframes", c.name, hostTX)
		}
		if c.vhost && (hostRX <= 1514 || plugRX <= 1514) {
			t.Errorf("%s: packets to the host average %.0f bytes, to the plugged namespace %.0f: superframes were cut", c.name, hostRX, plugRX)
		}
		if !c.vhost && plugRX > 1514 {
			t.Errorf("%s: the plugged namespace got packets of %.0f bytes on average over SEQPACKET", c.name, plugRX)
		}
		stopped(t, client, p)
		if strings.Contains(d.Stderr(), "level=ERROR") {
			t.Errorf("%s: daemon logged errors:\n%s", c.name, d.Stderr())
		}
	}
	t.Logf("iperf3 -t %d, TCP, secure mode, host side <-> vknetplug (client -> host is 'up'):", secs)
	for _, r := range results {
		t.Logf("  %-24s up %6.2f Gbit/s   down %6.2f Gbit/s", r.name, r.up, r.down)
	}
}

// linkTraffic is what dev sent (the kernel to the TAP's reader) and
// received (written to it), from ip -s -j link.
type linkTraffic struct {
	TX, RX struct{ Bytes, Packets float64 }
}

func tapTraffic(t *testing.T, ns *testbed.Netns, dev string) linkTraffic {
	t.Helper()
	out, err := ns.Try("ip", "-s", "-j", "link", "show", "dev", dev)
	var links []struct {
		Stats linkTraffic `json:"stats64"`
	}
	if err != nil || json.Unmarshal([]byte(out), &links) != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link show %s: %v\n%s", dev, err, out)
	}
	return links[0].Stats
}

// tapAverages is the average size of the packets dev sent and received.
func tapAverages(t *testing.T, ns *testbed.Netns, dev string) (tx, rx float64) {
	t.Helper()
	st := tapTraffic(t, ns, dev)
	if st.TX.Packets == 0 || st.RX.Packets == 0 {
		t.Fatalf("%s sent %.0f and received %.0f packets: no traffic to average", dev, st.TX.Packets, st.RX.Packets)
	}
	return st.TX.Bytes / st.TX.Packets, st.RX.Bytes / st.RX.Packets
}

// A UDP superframe from the host (a socket with UDP_SEGMENT; the daemon's
// TAP takes USO where the kernel has it) reaches a namespace plugged over
// vhost-user as the datagrams it stands for: the switch cuts it, since
// the plug does not take UDP superframes, and the payload arrives whole.
func TestHostUDPSuperframeReachesPluggedNamespace(t *testing.T) {
	needRoot(t)
	d, vhostPath := switchNS(t)
	client, p := plugged(t, "--vhost-user", vhostPath, "198.18.0.10/16")
	defer stopped(t, client, p)
	mustPing(t, client, host, "vhost-user")
	var rx int
	if err := client.Do(func() error {
		var err error
		if rx, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Bind(rx, &unix.SockaddrInet4{Port: 5002, Addr: [4]byte{198, 18, 0, 10}})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rx)
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	const gsoSize, total = 1000, 8500
	data := make([]byte, total)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	before := tapTraffic(t, d.Netns, d.TAP).TX.Packets
	if err := d.Netns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT, gsoSize); err != nil {
			return err
		}
		return unix.Sendto(fd, data, 0, &unix.SockaddrInet4{Port: 5002, Addr: [4]byte{198, 18, 0, 10}})
	}); err != nil {
		t.Fatalf("sending a UDP superframe from the host side: %v", err)
	}
	var got []byte
	buf := make([]byte, 2048)
	for i := 0; i < (total+gsoSize-1)/gsoSize; i++ {
		n, err := unix.Read(rx, buf)
		if err != nil {
			t.Fatalf("datagram %d never reached the plugged namespace: %v (%d bytes so far)", i, err, len(got))
		}
		if n > gsoSize {
			t.Errorf("datagram %d carries %d bytes, more than gso_size %d", i, n, gsoSize)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the datagrams do not carry what the host sent")
	}
	sent := tapTraffic(t, d.Netns, d.TAP).TX.Packets - before
	uso := strings.Contains(d.Stderr(), "uso=true")
	t.Logf("the host handed the switch %.0f packets for %d bytes (TAP USO %v)", sent, total, uso)
	// One superframe, and perhaps a stray packet of the host's own (IPv6
	// neighbour discovery): never the 9 datagrams the kernel would cut.
	if uso && sent >= (total+gsoSize-1)/gsoSize {
		t.Errorf("with USO on the TAP the host sent %.0f packets for one UDP superframe: the kernel cut it", sent)
	}
}
