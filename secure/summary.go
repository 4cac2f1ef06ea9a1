package secure

// PolicySummary describes secure mode in user terms, for --help, the README
// and the manual page. Keep it true to the code: each rule it states has
// passing and dropped frames in rules_test.go's table.
const PolicySummary = `Secure mode (the default; -U turns it off) checks every frame a client sends:
  - The source MAC must be unicast, not all zeros, and not the TAP's MAC.
  - 802.1Q/802.1ad VLAN-tagged frames are dropped.
  - ARP must be Ethernet/IPv4 ARP whose sender MAC equals the frame's source
    MAC and whose sender IP is a host address of address/cidrbits (0.0.0.0 is
    allowed only in requests: ARP probes).
  - IPv4 needs a valid header (version 4, header length at least 20 bytes,
    total length within the frame, correct checksum) and, unless it is a
    later fragment, a complete TCP, UDP or ICMP header. Its source must be a
    host address of address/cidrbits (not the network or broadcast
    address), or 0.0.0.0 only for an unfragmented DHCP client message (UDP
    port 68 to 67). A DHCP client message must be a BOOTP request whose
    client hardware address, and Ethernet client identifier if it has one,
    is the frame's source MAC: no client speaks for another.
  - IPv6 is dropped unless --ipv6 PREFIX is given. Then sources must be
    link-local or in PREFIX (:: only for router and neighbour solicitations
    and MLD reports). Neighbour discovery is checked like ARP: a link-layer
    address a client announces for itself (source link-layer option of
    solicitations and router advertisements, target link-layer option of
    neighbour advertisements) must be the frame's source MAC, an advertised
    target must be link-local or in PREFIX, and fragmented neighbour-
    discovery messages are dropped.
  - An address (IPv4 or IPv6 source, ARP sender, advertised neighbour
    target) belongs to the first client MAC and port that uses it, until it
    goes unused for the MAC aging time (--mac-age) or that client
    disconnects; any other client using it is dropped. The TAP's own
    addresses (address/cidrbits, the --ipv6 address and the TAP's EUI-64
    link-local address) can never be used by a client. One client holds at
    most --port-ips addresses; when it, or the binding table, is full, new
    addresses are dropped.
  - The clients of one user (uid) hold at most --user-ips addresses together
    (IPv4 and IPv6) outside that user's --user-net ranges. An address in a
    --user-net USER=CIDR range may be used by USER's clients alone, and a
    user with ranges uses IPv4 addresses only inside them. Addresses in no
    range are first come, first served.
  - With --ip-source dhcp, IPv4 addresses are not taken on first use: a
    DHCPACK the TAP sends to a client binds the leased address to the
    client's MAC (chaddr) on its port for the lease time, and a client may
    use only addresses leased to its MACs (and 0.0.0.0 for DHCP and ARP
    probes). A lease ends at its time, with a DHCPRELEASE from the client,
    a DHCPNAK from the server, or when the client disconnects. With --ipv6,
    global IPv6 addresses likewise come from the DHCPv6 Replies the TAP
    sends a client (IA_NA addresses, for their valid lifetime); link-local
    ones stay first use.
  - Only the host side (the TAP) may serve DHCP or advertise routers: a
    client's DHCP server or relay message (UDP from port 67 or to port 68;
    a client's own is 68 to 67), DHCPv6 server or relay message (UDP from
    port 547 or to port 546), ICMP redirect or router advertisement, or
    ICMPv6 router advertisement or redirect is dropped, whatever its
    destination. The UDP or ICMP header must be whole in a first fragment
    and start its fragmentable part (IPv6 extension headers are followed
    to it, and none may sit between a Fragment header and UDP or ICMPv6),
    so fragments cannot hide these messages.
Frames to the TAP must in addition be ARP, IPv4 carrying ICMP, UDP or TCP,
or (with --ipv6) IPv6 carrying ICMPv6, UDP or TCP. Other ethertypes (LLDP,
for example) pass between clients but never reach the TAP.
On Linux the rules a frame can be judged by alone also run in the kernel,
as an eBPF socket filter on the switch's end of SEQPACKET clients and
datagram sockets: it drops spoofed frames in the sender's own sendmsg,
counted as kernel-filter, and never a frame the rules above would pass.
STREAM clients are checked in userspace alone; --no-bpf turns it off.
`
