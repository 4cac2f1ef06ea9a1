package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/internal/cli"
	"github.com/vknetd/vknetd/metrics"
	"github.com/vknetd/vknetd/secure"
	"github.com/vknetd/vknetd/tap"
)

// options is the parsed command line.
type options struct {
	client bool // -c
	debug  bool // -d
	// supervise: a supervisor process keeps the clients' fds and starts
	// a new daemon that adopts them if this one dies (supervise_linux.go).
	supervise bool
	unsecure  bool         // -U
	noBPF     bool         // --no-bpf
	bridge    string       // -b
	socket    string       // -p
	pidfile   string       // -i
	tapName   string       // -t
	prefix    netip.Prefix // address/cidrbits; the zero Prefix when none was given

	group       string
	mtu         int
	mtuSet      bool // --mtu given: never fitted to a VXLAN underlay
	noOffload   bool // --no-offload: the TAP without virtio_net_hdr, TSO or checksum offload
	vxlan       *tap.VXLAN
	macAge      time.Duration
	macMax      int
	portMACs    int
	userMACs    int
	remoteMACs  int
	portIPs     int
	userIPs     int
	userNets    []secure.UserNet // --user-net, users resolved to uids
	maxClients  int
	userClients int
	ipv6        netip.Prefix
	ipSource    secure.IPSource // --ip-source
	dhcpServers [][6]byte       // --dhcp-server
	stream      string
	dgram       string
	vhostUser   string
	dgramIdle   time.Duration
	version     bool
	control     string // --control, the -p path plus ".ctl" unless given
	metrics     string // --metrics, off when empty
	user        string // --user, stays root when empty
	write       string // -w, with -c

	// The caps on the guest memory vhost-user guests have the daemon map
	// (engine.Config.GuestMemoryMax and the others), in bytes.
	vhostMemoryMax, userVhostMemory, vhostMemoryTotal uint64

	// workers is --workers: how many event loops (engine.Config.Workers);
	// workersArg as given.
	workers    int
	workersArg string

	// busyPoll is --busy-poll (engine.Config.BusyPoll), coalesce is
	// --coalesce (engine.Config.Coalesce).
	busyPoll, coalesce time.Duration
}

const usageLine = "usage: vknetd [-cdU] [-b bridgeN] [-p socket_path] [-i pidfile] [-t tapN] [address/cidrbits]"

// vxlanFlags holds the --vxlan flags as given, checked into a tap.VXLAN.
type vxlanFlags struct {
	vni     int
	remotes []string
	local   string
	port    int
	dev     string
}

func newFlagSet(o *options, vx *vxlanFlags, userNets *[]string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("vknetd", pflag.ContinueOnError)
	// Errors are reported by run, with the fix; help goes to stdout.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	fs.SetInterspersed(true)
	fs.BoolVarP(&o.client, "connect", "c", false, "connect to the switch as a client and print every frame it floods to clients (one decoded line each)")
	fs.BoolVarP(&o.debug, "debug", "d", false, "debug mode: stay in the foreground and log to stderr")
	fs.BoolVar(&o.supervise, "supervise", false, "keep every client's connection through a crash: a supervisor that never reads client data holds copies of the sockets and starts a new daemon within 1 s (Linux)")
	fs.BoolVarP(&o.unsecure, "unsecure", "U", false, "unsecure mode: a pure bridge, no address or protocol checks (address/cidrbits optional)")
	fs.StringVarP(&o.bridge, "bridge", "b", "", "add the TAP to this Linux bridge, creating the bridge if missing")
	fs.StringVarP(&o.socket, "socket", "p", "/var/run/vknet", "path of the SOCK_SEQPACKET socket clients connect to")
	fs.StringVarP(&o.pidfile, "pidfile", "i", "/var/run/vknetd.pid", "pidfile, locked while the daemon runs")
	fs.StringVarP(&o.tapName, "tap", "t", "", "use (or create) this TAP interface instead of a free tapN")
	fs.StringVar(&o.stream, "stream", "", "also listen on this SOCK_STREAM socket for QEMU -netdev stream clients (4-byte length before each frame)")
	fs.StringVar(&o.dgram, "dgram", "", "also listen on this SOCK_DGRAM socket for QEMU -netdev dgram and vfkit clients")
	fs.StringVar(&o.vhostUser, "vhost-user", "", "also listen on this socket for vhost-user guests (QEMU -netdev vhost-user with shared memory): frames on shared virtio rings (Linux)")
	o.vhostMemoryMax = defaultVhostMemoryMax
	fs.Var((*sizeValue)(&o.vhostMemoryMax), "vhost-memory-max", "most guest memory one vhost-user guest may have the daemon map, like 64G or 1T: at least the guest's RAM (a table over it closes the guest)")
	fs.Var((*sizeValue)(&o.userVhostMemory), "user-vhost-memory", "most guest memory the vhost-user guests of one user (uid) may have the daemon map together (default: a quarter of --vhost-memory-total, at least --vhost-memory-max)")
	fs.Var((*sizeValue)(&o.vhostMemoryTotal), "vhost-memory-total", "most guest memory all vhost-user guests may have the daemon map together (default: half of the daemon's address space, 64T on x86-64)")
	o.dgramIdle = 60 * time.Second
	fs.Var((*secondsValue)(&o.dgramIdle), "dgram-idle", "forget a datagram client (and its MACs) after this long without a frame from it")
	fs.StringVar(&o.group, "group", "vknet", "group owning the socket (mode 0660): its members may connect")
	fs.IntVar(&o.mtu, "mtu", 1500, "MTU of the TAP; frames longer than MTU+14 bytes (MTU+18 with a VLAN tag) are dropped; with --vxlan and no --mtu, lowered to fit the underlay (with a warning)")
	fs.BoolVar(&o.noOffload, "no-offload", false, "open the TAP without offloads: no 64 KiB TCP segments from the host, one frame per read (Linux; the BSDs have none)")
	o.macAge = 300 * time.Second
	fs.Var((*secondsValue)(&o.macAge), "mac-age", "forget a MAC address (and, in secure mode, its IP binding) this long after it was last seen: seconds or a duration like 5m")
	fs.IntVar(&o.macMax, "mac-max", 16384, "most MAC addresses the switch learns in all")
	fs.IntVar(&o.portMACs, "port-macs", 256, "most MAC addresses one client may hold, so no client can crowd out the others")
	fs.IntVar(&o.userMACs, "user-macs", 0, "most MAC addresses the clients of one user (uid) may hold together, so no user can fill the table (default: a quarter of --mac-max, at least --port-macs)")
	fs.IntVar(&o.remoteMACs, "remote-macs", 0, "most MAC addresses learned from the TAP's side (the host, a bridged LAN, other hosts over VXLAN), so the underlay cannot fill the table the clients need; frames from more are forwarded unlearned (default: a quarter of --mac-max)")
	fs.IntVar(&o.portIPs, "port-ips", 16, "secure mode: most IP addresses one client may hold (bound to its MACs)")
	fs.IntVar(&o.userIPs, "user-ips", 0, "secure mode: most IP addresses the clients of one user (uid) may hold together outside the user's --user-net ranges, so no user can take the network (default: a quarter of the host addresses of address/cidrbits, at least --port-ips)")
	fs.StringArrayVar(userNets, "user-net", nil, "secure mode: USER=CIDR gives the IPv4 addresses of CIDR to the clients of USER (a name or uid) alone, who may then use IPv4 addresses only in their ranges; repeat for more ranges or users (addresses in no range: first come, first served)")
	fs.IntVar(&o.maxClients, "max-clients", 1024, "most clients connected at once")
	fs.DurationVar(&o.busyPoll, "busy-poll", 0, "after frames last moved, keep polling vhost-user guests' rings this long (like 50us or 1ms) before sleeping: lower latency and more frames/s for a whole CPU per worker while busy; 0 (the default) sleeps at once")
	fs.DurationVar(&o.coalesce, "coalesce", engine.DefaultCoalesce, "while vhost-user guests send a batch or more between two sleeps, leave their kicks off and look at their rings every DURATION instead (like ethtool's rx-usecs): fewer system calls in the guests, at most about DURATION more latency while frames flow; 0 wakes at every kick (not used with --busy-poll)")
	fs.StringVar(&o.workersArg, "workers", "1", "event loops (threads) that switch frames, each serving some clients: a number, or auto for one per CPU (at most 16); more than 1 pays when one CPU is the limit")
	fs.IntVar(&o.userClients, "user-clients", 0, "most clients one user (uid) may have connected at once (default: a quarter of --max-clients)")
	fs.BoolVar(&o.noBPF, "no-bpf", false, "secure mode: do not load the kernel filter (an eBPF socket filter that drops spoofed frames in the sender's own sendmsg on SEQPACKET and datagram sockets); every frame is then checked in userspace alone, as it always is anyway")
	fs.Var((*ipSourceValue)(&o.ipSource), "ip-source", "secure mode: where a client's right to an address comes from: first-use (the first client MAC and port to use an address hold it) or dhcp (only the addresses the host's DHCP server, and DHCPv6 server with --ipv6, leased to the client's MACs, for the lease time)")
	fs.Var((*macListValue)(&o.dhcpServers), "dhcp-server", "with --ip-source dhcp: also take leases from the DHCP (and DHCPv6) replies of this Ethernet source, a server or relay on a bridged LAN or another host; repeat for more (default: only the host's own replies, from the TAP's MAC or the bridge's with -b)")
	fs.Var((*prefixValue)(&o.ipv6), "ipv6", "secure mode: let IPv6 through for sources in this prefix or link-local (IPv6 is dropped otherwise)")
	fs.IntVar(&vx.vni, "vxlan", 0, "stretch the network to other hosts: the kernel's VXLAN device with this VNI (1-16777215) joins a bridge with the TAP (-b, or vkbrVNI created for it) (Linux)")
	fs.StringArrayVar(&vx.remotes, "vxlan-remote", nil, "with --vxlan: a peer host's underlay address; repeat for each peer (broadcasts go to every one)")
	fs.StringVar(&vx.local, "vxlan-local", "", "with --vxlan: this host's underlay address to send from (default: chosen by route)")
	fs.IntVar(&vx.port, "vxlan-port", tap.DefaultVXLANPort, "with --vxlan: the UDP port of every host's VXLAN device")
	fs.StringVar(&vx.dev, "vxlan-dev", "", "attach this existing VXLAN device (e.g. managed by FRR/EVPN) instead of creating one: vknetd only adds it to the bridge, never changes its forwarding entries")
	fs.StringVar(&o.control, "control", "", "path of the control socket for vknetctl, same group and mode as -p (default: the -p path plus .ctl)")
	fs.StringVar(&o.user, "user", "", "once the TAP, sockets and pidfile exist, run as this user (a name or uid) keeping only CAP_NET_ADMIN; a root helper removes the files at exit (Linux)")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics over HTTP at ADDR/metrics, e.g. 127.0.0.1:9477; bind it to loopback or a management address: it has no authentication (off unless given)")
	fs.StringVarP(&o.write, "write", "w", "", "with -c: also write the frames to this pcap file (tcpdump -r, Wireshark); '-' writes pcap to stdout instead of lines")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

// parseArgs turns the command line into options. Every error is a
// cli.UsageError that names the value and the fix; --help prints to helpOut
// and returns pflag.ErrHelp.
func parseArgs(args []string, helpOut io.Writer) (*options, error) {
	o := &options{}
	var vx vxlanFlags
	var userNets []string
	fs := newFlagSet(o, &vx, &userNets)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			printUsage(helpOut, fs)
			return nil, err
		}
		return nil, cli.Usagef("%v", err)
	}
	if o.version {
		return o, nil
	}
	var err error
	rest := fs.Args()
	switch {
	case len(rest) > 1:
		return nil, cli.Usagef("one address/cidrbits argument expected, got %d: %s", len(rest), strings.Join(rest, " "))
	case len(rest) == 1:
		p, err := parseCIDR(rest[0])
		if err != nil {
			return nil, err
		}
		o.prefix = p
	}
	if o.workers, err = parseWorkers(o.workersArg); err != nil {
		return nil, err
	}
	if o.busyPoll < 0 || o.busyPoll > maxBusyPoll {
		return nil, cli.Usagef("--busy-poll %s: give a duration from 0 (off) to %s, like 50us or 1ms", o.busyPoll, maxBusyPoll)
	}
	if o.coalesce < 0 || o.coalesce > maxCoalesce {
		return nil, cli.Usagef("--coalesce %s: give a duration from 0 (off) to %s, like 20us", o.coalesce, maxCoalesce)
	}
	if o.write != "" && !o.client {
		return nil, cli.Usagef("-w %s writes what -c receives: add -c, or use 'vknetctl monitor -w %s' beside a running daemon", o.write, o.write)
	}
	if o.client {
		if o.user != "" {
			return nil, cli.Usagef("--user %s is for the daemon; run -c as the user you want", o.user)
		}
		return o, nil
	}
	if !o.unsecure && !o.prefix.IsValid() {
		return nil, cli.Usagef("secure mode (the default) needs the network as address/cidrbits, e.g. 'vknetd 198.18.0.1/16'; add -U for an unsecured bridge without an address")
	}
	if o.mtu < 68 || o.mtu > 65535 {
		return nil, cli.Usagef("--mtu %d is out of range: use 68 to 65535 (Ethernet is 1500)", o.mtu)
	}
	o.mtuSet = fs.Changed("mtu")
	if o.vxlan, err = vx.parse(fs); err != nil {
		return nil, err
	}
	if o.macAge < time.Second {
		return nil, cli.Usagef("--mac-age %s is too short: use at least 1 second", o.macAge)
	}
	if o.macMax < 1 {
		return nil, cli.Usagef("--mac-max %d: the table needs room for at least one MAC", o.macMax)
	}
	if o.portMACs < 1 || o.portMACs > o.macMax {
		return nil, cli.Usagef("--port-macs %d must be between 1 and --mac-max (%d)", o.portMACs, o.macMax)
	}
	if !fs.Changed("user-macs") {
		o.userMACs = min(max(o.macMax/4, o.portMACs), o.macMax)
	}
	if o.userMACs < 1 || o.userMACs > o.macMax {
		return nil, cli.Usagef("--user-macs %d must be between 1 and --mac-max (%d)", o.userMACs, o.macMax)
	}
	if !fs.Changed("remote-macs") {
		o.remoteMACs = max(o.macMax/4, 1)
	}
	if o.remoteMACs < 1 || o.remoteMACs > o.macMax {
		return nil, cli.Usagef("--remote-macs %d must be between 1 and --mac-max (%d)", o.remoteMACs, o.macMax)
	}
	if !fs.Changed("port-ips") && o.portIPs > o.macMax {
		o.portIPs = o.macMax // the default never asks for more than the table holds
	}
	if o.portIPs < 1 || o.portIPs > o.macMax {
		return nil, cli.Usagef("--port-ips %d must be between 1 and --mac-max (%d)", o.portIPs, o.macMax)
	}
	if err := o.checkUserAddresses(fs, userNets); err != nil {
		return nil, err
	}
	if o.maxClients < 1 || o.maxClients > 65535 {
		return nil, cli.Usagef("--max-clients %d is out of range: use 1 to 65535", o.maxClients)
	}
	if !fs.Changed("user-clients") {
		o.userClients = max(o.maxClients/4, 1)
	}
	if o.userClients < 1 || o.userClients > o.maxClients {
		return nil, cli.Usagef("--user-clients %d must be between 1 and --max-clients (%d)", o.userClients, o.maxClients)
	}
	if err := o.checkVhostMemory(fs); err != nil {
		return nil, err
	}
	if o.socket == "" || o.pidfile == "" {
		return nil, cli.Usagef("-p and -i need a path")
	}
	if o.dgramIdle < time.Second {
		return nil, cli.Usagef("--dgram-idle %s is too short: use at least 1 second", o.dgramIdle)
	}
	if o.control == "" {
		o.control = o.socket + ".ctl"
	}
	if o.metrics != "" {
		if err := metrics.CheckAddr(o.metrics); err != nil {
			return nil, cli.Usagef("%v", err)
		}
	}
	paths := map[string]string{o.socket: "-p", o.pidfile: "-i"}
	for flag, p := range map[string]string{"--stream": o.stream, "--dgram": o.dgram, "--vhost-user": o.vhostUser, "--control": o.control} {
		if p == "" {
			continue
		}
		if other, dup := paths[p]; dup {
			return nil, cli.Usagef("%s %s is the same path as %s: give each socket its own path", flag, p, other)
		}
		paths[p] = flag
	}
	if o.ipSource != secure.IPSourceFirstUse && o.unsecure {
		return nil, cli.Usagef("--ip-source %v only matters in secure mode; with -U every address passes", o.ipSource)
	}
	if len(o.dhcpServers) > 0 && o.ipSource != secure.IPSourceDHCP {
		return nil, cli.Usagef("--dhcp-server only matters with --ip-source dhcp: add --ip-source dhcp, or leave it out")
	}
	if o.ipv6.IsValid() && o.unsecure {
		return nil, cli.Usagef("--ipv6 only matters in secure mode; with -U every IPv6 frame passes already")
	}
	return o, nil
}

// checkUserAddresses fills in --user-ips's default and parses --user-net,
// resolving each user, so that a typo stops the daemon before it starts.
func (o *options) checkUserAddresses(fs *pflag.FlagSet, userNets []string) error {
	if o.unsecure {
		for _, f := range []string{"user-ips", "user-net"} {
			if fs.Changed(f) {
				return cli.Usagef("--%s only matters in secure mode; with -U any client may use any address", f)
			}
		}
		return nil
	}
	if !fs.Changed("user-ips") {
		hosts := uint64(1) << (32 - o.prefix.Bits())
		if o.prefix.Bits() <= 30 {
			hosts -= 2 // the network and broadcast addresses
		}
		o.userIPs = int(min(max(hosts/4, uint64(o.portIPs)), uint64(o.macMax)))
	}
	if o.userIPs < 1 || o.userIPs > o.macMax {
		return cli.Usagef("--user-ips %d must be between 1 and --mac-max (%d)", o.userIPs, o.macMax)
	}
	for _, v := range userNets {
		name, cidr, ok := strings.Cut(v, "=")
		if !ok || name == "" {
			return cli.Usagef("--user-net %s: want USER=CIDR, a user name or uid and an IPv4 prefix inside %s, e.g. --user-net alice=%s", v, o.prefix.Masked(), o.prefix.Masked())
		}
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			return cli.Usagef("--user-net %s: %q is not a prefix like %s", v, cidr, o.prefix.Masked())
		}
		uid, err := lookupUID(name)
		if err != nil {
			return cli.Usagef("--user-net %s: %v", v, err)
		}
		o.userNets = append(o.userNets, secure.UserNet{UID: uid, Prefix: p, Given: v})
	}
	if err := secure.CheckUserNets(o.prefix, o.userNets); err != nil {
		return cli.Usagef("%v", err)
	}
	return nil
}

// defaultVhostMemoryMax fits large VMs: 1 TiB of RAM, the most one
// memory region may hold.
const defaultVhostMemoryMax = 1 << 40

// checkVhostMemory fills in the defaults of the guest memory caps and
// checks that each is at most the next: one guest's, one user's, all
// guests', and that one below the address space, so the daemon and a new
// guest always have room to map.
func (o *options) checkVhostMemory(fs *pflag.FlagSet) error {
	space := addressSpace()
	if !fs.Changed("vhost-memory-total") {
		o.vhostMemoryTotal = space / 2
	}
	if o.vhostMemoryTotal < 1<<20 || o.vhostMemoryTotal > space {
		return cli.Usagef("--vhost-memory-total %s is out of range: use 1M to this machine's user address space (%s), better half of it to leave room for the daemon itself",
			sizeFlag(o.vhostMemoryTotal), sizeFlag(space))
	}
	if !fs.Changed("vhost-memory-max") {
		o.vhostMemoryMax = min(o.vhostMemoryMax, o.vhostMemoryTotal)
	}
	if o.vhostMemoryMax < 1<<20 || o.vhostMemoryMax > o.vhostMemoryTotal {
		return cli.Usagef("--vhost-memory-max %s is out of range: use 1M (the rings and buffers of a small guest) to --vhost-memory-total (%s); a guest needs at least its RAM size",
			sizeFlag(o.vhostMemoryMax), sizeFlag(o.vhostMemoryTotal))
	}
	if !fs.Changed("user-vhost-memory") {
		o.userVhostMemory = max(o.vhostMemoryTotal/4, o.vhostMemoryMax)
	}
	if o.userVhostMemory < o.vhostMemoryMax || o.userVhostMemory > o.vhostMemoryTotal {
		return cli.Usagef("--user-vhost-memory %s must be between --vhost-memory-max (%s) and --vhost-memory-total (%s)",
			sizeFlag(o.userVhostMemory), sizeFlag(o.vhostMemoryMax), sizeFlag(o.vhostMemoryTotal))
	}
	return nil
}

// sizeValue is a size in bytes: plain bytes ("1048576") or with a binary
// unit K, M, G, T or P ("64G", "1T"; "64GiB" and "64GB" mean the same).
type sizeValue uint64

func (v *sizeValue) String() string { return sizeFlag(uint64(*v)) }
func (v *sizeValue) Type() string   { return "size" }
func (v *sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v = sizeValue(n)
	return nil
}

// parseSize reads a sizeValue.
func parseSize(s string) (uint64, error) {
	bad := fmt.Errorf("want bytes or a size like 512M, 64G or 1T")
	num := strings.TrimRight(s, "KMGTPEiBkmgtpeb")
	unit := strings.ToUpper(s[len(num):])
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, bad
	}
	shift := 0
	switch unit {
	case "":
	case "K":
		shift = 10
	case "M":
		shift = 20
	case "G":
		shift = 30
	case "T":
		shift = 40
	case "P":
		shift = 50
	default:
		return 0, bad
	}
	if n > (1<<64-1)>>shift {
		return 0, fmt.Errorf("%s does not fit in 64 bits", s)
	}
	return n << shift, nil
}

// sizeFlag writes n as a sizeValue is given: the largest unit it is a
// whole number of.
func sizeFlag(n uint64) string {
	for _, u := range []struct {
		shift  uint
		letter string
	}{{50, "P"}, {40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}} {
		if n != 0 && n&(1<<u.shift-1) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.letter
		}
	}
	return strconv.FormatUint(n, 10)
}

// parse checks the --vxlan flags together: the peers' addresses, and
// which flags need which.
func (vx *vxlanFlags) parse(fs *pflag.FlagSet) (*tap.VXLAN, error) {
	if !fs.Changed("vxlan") && vx.dev == "" {
		for _, f := range []string{"vxlan-remote", "vxlan-local", "vxlan-port"} {
			if fs.Changed(f) {
				return nil, cli.Usagef("--%s needs --vxlan VNI", f)
			}
		}
		return nil, nil
	}
	if fs.Changed("vxlan") && (vx.vni < 1 || vx.vni > 1<<24-1) {
		return nil, cli.Usagef("--vxlan %d is out of range: a VNI is 1 to 16777215", vx.vni)
	}
	v := &tap.VXLAN{VNI: vx.vni, Dev: vx.dev}
	if vx.dev != "" {
		for _, f := range []string{"vxlan-remote", "vxlan-local", "vxlan-port"} {
			if fs.Changed(f) {
				return nil, cli.Usagef("--%s does not go with --vxlan-dev %s: an attached device keeps its own configuration (drop --vxlan-dev to have vknetd create one)", f, vx.dev)
			}
		}
		return v, nil
	}
	if len(vx.remotes) == 0 {
		return nil, cli.Usagef("--vxlan %d needs a peer: give each other host's underlay address with --vxlan-remote ADDR (repeat it), or attach a device another tool manages with --vxlan-dev", vx.vni)
	}
	for _, r := range vx.remotes {
		a, err := netip.ParseAddr(r)
		if err != nil {
			return nil, cli.Usagef("--vxlan-remote %q is not an IP address: give a peer host's underlay address, e.g. 198.19.0.2", r)
		}
		v.Remotes = append(v.Remotes, a.Unmap())
	}
	if vx.local != "" {
		a, err := netip.ParseAddr(vx.local)
		if err != nil {
			return nil, cli.Usagef("--vxlan-local %q is not an IP address: give this host's underlay address, e.g. 198.19.0.1", vx.local)
		}
		v.Local = a.Unmap()
	}
	if vx.port < 1 || vx.port > 65535 {
		return nil, cli.Usagef("--vxlan-port %d is out of range: use 1 to 65535 (VXLAN's is %d, the same on every host)", vx.port, tap.DefaultVXLANPort)
	}
	v.Port = vx.port
	return v, nil
}

// parseCIDR accepts the manual's address/cidrbits: an IPv4 address for the
// TAP and the bits of the virtual network, 1 to 32.
func parseCIDR(s string) (netip.Prefix, error) {
	addrPart, bitsPart, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, cli.Usagef("address %q has no /cidrbits: write the TAP's address and the network's bits, e.g. 198.18.0.1/16", s)
	}
	addr, err := netip.ParseAddr(addrPart)
	if err != nil || !addr.Is4() {
		return netip.Prefix{}, cli.Usagef("address %q is not an IPv4 address/cidrbits: write it like 198.18.0.1/16", s)
	}
	bits, err := strconv.Atoi(bitsPart)
	if err != nil {
		return netip.Prefix{}, cli.Usagef("cidrbits %q in %q is not a number: use 1 to 32, e.g. 198.18.0.1/16", bitsPart, s)
	}
	if bits < 1 || bits > 32 {
		return netip.Prefix{}, cli.Usagef("cidrbits /%d in %q is out of range: use 1 to 32 (/0 would admit every IPv4 address), e.g. 198.18.0.1/16", bits, s)
	}
	if addr.IsUnspecified() || addr.IsMulticast() || addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Prefix{}, cli.Usagef("address %s in %q cannot be the TAP's address: give a unicast host address, e.g. 198.18.0.1/16", addr, s)
	}
	return netip.PrefixFrom(addr, bits), nil
}

// secondsValue reads a duration given as plain seconds ("300", as the
// other numeric flags) or with a unit ("5m").
type secondsValue time.Duration

func (v *secondsValue) String() string { return time.Duration(*v).String() }
func (v *secondsValue) Type() string   { return "seconds" }
func (v *secondsValue) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		*v = secondsValue(time.Duration(n * float64(time.Second)))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want seconds or a duration like 90s or 5m")
	}
	*v = secondsValue(d)
	return nil
}

// macListValue is a repeatable MAC address flag (--dhcp-server).
type macListValue [][6]byte

func (v *macListValue) String() string {
	var out []string
	for _, m := range *v {
		out = append(out, net.HardwareAddr(m[:]).String())
	}
	return strings.Join(out, ",")
}
func (v *macListValue) Type() string { return "mac" }
func (v *macListValue) Set(s string) error {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("%q is not an Ethernet MAC address: write it like 52:54:00:12:34:56", s)
	}
	*v = append(*v, [6]byte(hw))
	return nil
}

// ipSourceValue is the --ip-source flag.
type ipSourceValue secure.IPSource

func (v *ipSourceValue) String() string { return secure.IPSource(*v).String() }
func (v *ipSourceValue) Type() string   { return "source" }
func (v *ipSourceValue) Set(s string) error {
	src, err := secure.ParseIPSource(s)
	if err != nil {
		return errors.New("want first-use (the first client to use an address holds it) or dhcp (the host's DHCP server's leases)")
	}
	*v = ipSourceValue(src)
	return nil
}

// prefixValue is an IPv6 prefix flag.
type prefixValue netip.Prefix

func (v *prefixValue) String() string {
	if p := netip.Prefix(*v); p.IsValid() {
		return p.String()
	}
	return ""
}
func (v *prefixValue) Type() string { return "prefix" }
func (v *prefixValue) Set(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
		return fmt.Errorf("want an IPv6 prefix like 2001:db8:1::/64")
	}
	if p.Bits() == 0 {
		return fmt.Errorf("::/0 would admit every IPv6 address: give the VMs' prefix, like 2001:db8:1::/64")
	}
	*v = prefixValue(p.Masked())
	return nil
}

func printUsage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "%s\n\nA userspace Ethernet switch for virtual machines: clients connect to a\nSOCK_SEQPACKET unix socket (one frame per message) and are switched with\neach other and with a TAP interface carrying address/cidrbits.\n\nOptions:\n", usageLine)
	cli.PrintFlags(w, fs, 29)
	fmt.Fprintf(w, "\n%s", secure.PolicySummary)
	fmt.Fprintf(w, "The switch itself, in secure mode, also drops a client's frame whose source\nMAC is live on another port, and frames from new MACs beyond --port-macs.\nIn both modes it drops a frame from the TAP's side (a bridged LAN, other hosts\nover VXLAN) whose source MAC is live on a client port (remote-mac-conflict).\n")
	fmt.Fprintf(w, "\nSignals: SIGTERM/SIGINT stop and clean up; SIGUSR1 logs every port's counters;\nSIGHUP forgets all learned MAC addresses (frames flood until relearned).\n")
}

// maxBusyPoll bounds --busy-poll: longer is a loop that never sleeps
// while there is any traffic at all, which 0 < d <= 1s already gives.
const maxBusyPoll = time.Second

// maxCoalesce bounds --coalesce at what a frame may be held while
// traffic flows.
const maxCoalesce = time.Millisecond

// parseWorkers reads --workers: a count, or auto (engine.AutoWorkers).
func parseWorkers(arg string) (int, error) {
	if arg == "auto" {
		return engine.AutoWorkers(), nil
	}
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 || n > engine.MaxWorkers {
		return 0, cli.Usagef("--workers %s: give a number of event loops from 1 to %d, or auto for one per CPU", arg, engine.MaxWorkers)
	}
	return n, nil
}
