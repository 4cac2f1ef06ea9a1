package testbed

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// responder plays a host at ip/mac on the far end of a SEQPACKET connection: it
// answers ARP requests and pings for ip, and records what it saw.
type responder struct {
	mac [6]byte
	ip  netip.Addr

	mu      sync.Mutex
	srcMACs map[[6]byte]bool
	types   map[layers.EthernetType]int
	replies int
}

func (r *responder) serve(c *net.UnixConn) {
	buf := make([]byte, 1<<16)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.NoCopy)
		eth, ok := p.LinkLayer().(*layers.Ethernet)
		if !ok {
			continue
		}
		r.mu.Lock()
		r.srcMACs[[6]byte(eth.SrcMAC)] = true
		r.types[eth.EthernetType]++
		r.mu.Unlock()

		var reply []byte
		if a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok && a.Operation == layers.ARPRequest &&
			len(a.DstProtAddress) == 4 && netip.AddrFrom4([4]byte(a.DstProtAddress)) == r.ip && len(a.SourceHwAddress) == 6 {
			reply = ARPReply(r.mac, [6]byte(a.SourceHwAddress), r.ip, netip.AddrFrom4([4]byte(a.SourceProtAddress)))
		}
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if ip != nil && icmp != nil && icmp.TypeCode.Type() == layers.ICMPv4TypeEchoRequest &&
			netip.AddrFrom4([4]byte(ip.DstIP)) == r.ip {
			reply = ICMPEchoReply(r.mac, [6]byte(eth.SrcMAC), r.ip, netip.AddrFrom4([4]byte(ip.SrcIP)),
				icmp.Id, icmp.Seq, icmp.Payload)
		}
		if reply != nil {
			if _, err := c.Write(reply); err != nil {
				return
			}
			r.mu.Lock()
			r.replies++
			r.mu.Unlock()
		}
	}
}

func TestSocatClientPing(t *testing.T) {
	RequireRoot(t)
	RequireTool(t, "socat", "ping")
	l, path := listen(t)
	r := &responder{mac: MAC(0xfe), ip: netip.MustParseAddr("198.18.1.1"),
		srcMACs: map[[6]byte]bool{}, types: map[layers.EthernetType]int{}}
	accept(t, l, r.serve)

	ns, p := SocatClient(t, path, "198.18.1.2/24")
	if ok, out := ns.Ping(t, "198.18.1.1", 2); !ok {
		t.Fatalf("ping through socat to the responder failed:\n%s\nsocat:\n%s", out, p.Output())
	} else if !strings.Contains(out, "2 received") {
		t.Errorf("ping: want 2 replies:\n%s", out)
	}
	if ok, out := ns.Ping(t, "198.18.1.9", 1); ok {
		t.Errorf("ping to an address nobody answers succeeded:\n%s", out)
	}

	tapMAC := ns.LinkMAC(t, ClientTap)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.srcMACs[tapMAC] || len(r.srcMACs) != 1 {
		t.Errorf("frames came from %v, want only the TAP's % x", r.srcMACs, tapMAC)
	}
	// IPv6 is off in the client: only what the test caused may arrive.
	for typ, n := range r.types {
		if typ != layers.EthernetTypeARP && typ != layers.EthernetTypeIPv4 {
			t.Errorf("%d stray %v frames from the client", n, typ)
		}
	}
	if r.replies < 3 { // at least one ARP reply and two echo replies
		t.Errorf("responder sent %d replies, want at least 3", r.replies)
	}
}

func TestSocatClientFailures(t *testing.T) {
	RequireRoot(t)
	RequireTool(t, "socat")
	msg := mustFail(t, func(tb testing.TB) { SocatClient(tb, t.TempDir()+"/missing", "198.18.1.2/24") })
	if !strings.Contains(msg, "socat") || !strings.Contains(msg, "missing") {
		t.Errorf("SocatClient's failure does not show socat's complaint: %s", msg)
	}
	msg = mustFail(t, func(tb testing.TB) { SocatClient(tb, t.TempDir()+"/x", "10.1.2.3/24") })
	if !strings.Contains(msg, "outside 198.18.0.0/15") {
		t.Errorf("SocatClient accepted an address outside the benchmarking range: %s", msg)
	}
	n := NewNetns(t)
	mustFail(t, func(tb testing.TB) { n.Ping(tb, "192.0.2.1", 1) })
}
