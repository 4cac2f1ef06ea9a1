package testbed

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vknetd/vknetd/framefmt"
)

func TestMAC(t *testing.T) {
	m := MAC(0x2a)
	if m != [6]byte{0x02, 0, 0, 0, 0, 0x2a} {
		t.Fatalf("MAC(0x2a) = % x", m)
	}
	if m[0]&0x02 == 0 || m[0]&0x01 != 0 {
		t.Errorf("MAC(0x2a) = % x is not a locally administered unicast address", m)
	}
}

func TestEthernetFrame(t *testing.T) {
	got := EthernetFrame(Broadcast, MAC(1), 0x88b5, []byte{0xde, 0xad})
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0x02, 0, 0, 0, 0, 0x01,
		0x88, 0xb5,
		0xde, 0xad,
	}
	if !bytes.Equal(got, want) {
		t.Errorf("EthernetFrame:\n got % x\nwant % x", got, want)
	}
	if n := len(EthernetFrame(MAC(2), MAC(1), 0x0800, nil)); n != 14 {
		t.Errorf("EthernetFrame with no payload is %d bytes, want 14 (no padding)", n)
	}
}

func TestBuilders(t *testing.T) {
	a1, a2 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	for _, c := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"ARPRequest", ARPRequest(MAC(1), a1, a2),
			"02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP len 60: request who-has 198.18.0.2 tell 198.18.0.1 (02:00:00:00:00:01)"},
		{"ARPReply", ARPReply(MAC(2), MAC(1), a2, a1),
			"02:00:00:00:00:02 > 02:00:00:00:00:01 ARP len 60: reply 198.18.0.2 is-at 02:00:00:00:00:02 to 198.18.0.1"},
		{"IPv4UDP", IPv4UDP(MAC(1), MAC(2), a1, a2, 4000, 5000, []byte("payload")),
			"02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1:4000 > 198.18.0.2:5000 UDP"},
		{"IPv4UDP large", IPv4UDP(MAC(1), MAC(2), a1, a2, 4000, 5000, make([]byte, 1472)),
			"02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 1514: 198.18.0.1:4000 > 198.18.0.2:5000 UDP"},
		{"ICMPEcho", ICMPEcho(MAC(1), MAC(2), a1, a2, 7, 3, []byte("ping")),
			"02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 len 60: 198.18.0.1 > 198.18.0.2 ICMP echo-request id 7 seq 3"},
		{"ICMPEchoReply", ICMPEchoReply(MAC(2), MAC(1), a2, a1, 7, 3, []byte("ping")),
			"02:00:00:00:00:02 > 02:00:00:00:00:01 IPv4 len 60: 198.18.0.2 > 198.18.0.1 ICMP echo-reply id 7 seq 3"},
	} {
		line := string(framefmt.Line(nil, time.Time{}, c.frame))
		if _, got, _ := strings.Cut(line, " "); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
		p := gopacket.NewPacket(c.frame, layers.LayerTypeEthernet, gopacket.Default)
		if el := p.ErrorLayer(); el != nil {
			t.Errorf("%s: gopacket cannot decode it: %v", c.name, el.Error())
		}
		if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
			if err := udp.SetNetworkLayerForChecksum(p.NetworkLayer()); err != nil {
				t.Fatal(err)
			}
		}
		if err, bad := p.VerifyChecksums(); err != nil || len(bad) > 0 {
			t.Errorf("%s: checksums: %v %v", c.name, err, bad)
		}
	}
}

func TestBuildersRejectIPv6(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("IPv4UDP accepted an IPv6 address")
		}
	}()
	IPv4UDP(MAC(1), MAC(2), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("198.18.0.2"), 1, 2, nil)
}

func TestCheckAddr(t *testing.T) {
	for _, s := range []string{"198.18.0.1", "198.19.255.254/16", "198.18.0.0/15"} {
		if _, err := parseAddr(s); err != nil {
			t.Errorf("parseAddr(%q): %v", s, err)
		}
	}
	for _, s := range []string{"198.17.255.255", "198.20.0.1/16", "10.0.0.1/8", "::1", "2001:db8::1/64", "198.18.0.1/33", "nonsense"} {
		if _, err := parseAddr(s); err == nil {
			t.Errorf("parseAddr(%q) accepted an address outside %v", s, BenchNet)
		}
	}
}
