package main

import (
	"encoding/xml"
	"strings"
	"testing"
)

const raw = `round,family,target,size,status,fps,sent_fps,switch_cpu,gen_cpu
1,socket,vknetd SEQPACKET,64,ok,300000,500000,0.9,1.0
1,socket,vde_switch,64,ok,150000,200000,0.8,1.0
1,socket,vde_switch,9000,n/a,,,,
2,socket,vknetd SEQPACKET,64,ok,340000,500000,0.95,1.0
2,socket,vde_switch,64,ok,170000,200000,0.7,1.0
2,socket,vde_switch,9000,n/a,,,,
3,socket,vknetd SEQPACKET,64,ok,320000,500000,0.92,1.0
3,socket,vde_switch,64,failed,,,,
1,socket,vknetd SEQPACKET,9000,ok,100000,120000,0.5,0.5
1,vhost,testpmd vhost,64,ok,9000000,9000000,1.0,
1,vhost,vknetd vhost-user,64,pending,,,,
1,vhost-mq,OVS-DPDK,64,ok,8000000,8000000,1.0,
1,vhost-mq,vknetd vhost-user,64,ok,4000000,4000000,0.99,
`

func TestReport(t *testing.T) {
	samples, err := readSamples(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	fams := summarize(samples)
	if len(fams) != 3 || fams[0].name != "socket" || fams[1].name != "vhost" || fams[2].name != "vhost-mq" {
		t.Fatalf("families %v", fams)
	}
	c := fams[0].cells["vknetd SEQPACKET"][64]
	if c.fps != 320000 || c.lo != 300000 || c.hi != 340000 || c.cpu != 0.92 || c.rounds != 3 {
		t.Errorf("median cell %+v", c)
	}
	// A failed round is left out of the median, not counted as 0.
	if c := fams[0].cells["vde_switch"][64]; c.fps != 160000 || c.rounds != 2 {
		t.Errorf("vde_switch cell %+v", c)
	}
	if c := fams[0].cells["vde_switch"][9000]; c.hasValue || c.status != "n/a" {
		t.Errorf("n/a cell %+v", c)
	}
	md := markdown(fams, map[string]string{"date": "2026-12-01", "nproc": "2"})
	for _, want := range []string{
		"| vknetd SEQPACKET | 0.320 M ±6% · 0.92 CPU | 0.100 M · 0.50 CPU |",
		"| vde_switch | 0.160 M ±6% · 0.75 CPU | n/a |",
		"| vknetd SEQPACKET / vde_switch | 2.00 | - |",
		"| vknetd vhost-user | pending |",
		"## vhost-user, multi-queue",
		"| vknetd vhost-user / OVS-DPDK | 0.50 |",
		"date: 2026-12-01; nproc: 2",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	svg := chart(fams, map[string]string{"date": "2026-12-01"})
	if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
		t.Errorf("SVG is not well-formed XML: %v", err)
	}
	if !strings.Contains(svg, ">pending<") || !strings.Contains(svg, ">n/a<") {
		t.Error("SVG does not mark the pending and n/a bars")
	}
}

func TestUDPFrame(t *testing.T) {
	f := udpFrame([6]byte{2, 0, 0, 0, 0, 1}, [6]byte{2, 0, 0, 0, 0, 2}, [4]byte{198, 18, 1, 10}, [4]byte{198, 18, 1, 20}, 64)
	if len(f) != 64 || f[12] != 8 || f[13] != 0 || f[23] != 17 {
		t.Fatalf("frame % x", f)
	}
	var sum uint32
	for i := 14; i < 34; i += 2 {
		sum += uint32(f[i])<<8 | uint32(f[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Errorf("IPv4 header checksum does not verify: %#x", sum)
	}
}
