package handover

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func sampleRecord() *Record {
	return &Record{
		Fds:  6,
		Args: []string{"-d", "-t", "vk0"},
		Daemon: Daemon{Pidfile: 0, Control: 1, Metrics: -1, KeeperAlive: -1, Supervisor: -1,
			Listeners: []Listener{{Fd: 2, Kind: 0, Path: "/run/vknet"}, {Fd: 3, Kind: 2, Path: "/run/vknet.dgram"}},
			TAP:       TAP{Fd: 4, Name: "vk0", MTU: 1500}},
		Engine: Engine{Accepted: 3,
			Ports: []Port{
				{ID: 0, Kind: "tap", Fd: -1, Counters: Counters{RxFrames: 9, Drops: map[string]uint64{"runt": 1}}},
				{ID: 1, Kind: "dgram", Fd: -1, Dgram: &Dgram{Listener: 1, Key: "/tmp/c.sock", PathFd: -1}},
			},
			MACs:     []MAC{{MAC: 0x020000000001, Port: 1, AgeNs: 5}},
			Bindings: []Binding{{IP: netip.MustParseAddr("198.18.0.2"), Port: 1, LeftNs: -1}},
		},
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	r := sampleRecord()
	b, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b, 6)
	if err != nil {
		t.Fatal(err)
	}
	if got.Engine.Ports[1].Dgram.Key != "/tmp/c.sock" || got.Engine.Bindings[0].IP != r.Engine.Bindings[0].IP {
		t.Fatalf("round trip lost fields: %+v", got)
	}
}

// The kernel filter's fds come through; a record without the field (a
// daemon without a filter, or one older than the field) reads as none.
func TestDecodeKernelFilter(t *testing.T) {
	r := sampleRecord()
	r.Daemon.KernelFilter = &KernelFilter{Program: 5, Drops: 6}
	r.Fds = 7
	b, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b, 7)
	if err != nil {
		t.Fatal(err)
	}
	if k := got.Daemon.KernelFilter; k == nil || *k != (KernelFilter{Program: 5, Drops: 6}) {
		t.Errorf("kernel filter after the round trip: %+v", k)
	}
	b, _ = Encode(sampleRecord())
	if strings.Contains(string(b), "kernel_filter") {
		t.Errorf("a record without a filter names one: %s", b)
	}
	if got, err = Decode(b, 6); err != nil || got.Daemon.KernelFilter != nil {
		t.Errorf("a record without a filter reads as %+v, %v", got.Daemon.KernelFilter, err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	base, _ := Encode(sampleRecord())
	mutate := func(f func(r *Record)) []byte {
		r := sampleRecord()
		f(r)
		b, _ := json.Marshal(r) // Encode would set the version
		return b
	}
	cases := map[string]struct {
		b    []byte
		nfds int
		want string
	}{
		"other version":   {mutate(func(r *Record) { r.Version = 2 }), 6, "version 2"},
		"no version":      {[]byte(`{}`), 0, "version 0"},
		"fd count":        {base, 5, "descriptors"},
		"fd out of range": {mutate(func(r *Record) { r.Version = Version; r.Daemon.Control = 6 }), 6, "descriptor 6"},
		"fd twice":        {mutate(func(r *Record) { r.Version = Version; r.Daemon.Control = 0 }), 6, "twice"},
		"port twice": {mutate(func(r *Record) {
			r.Version = Version
			r.Engine.Ports[1].ID = 0
		}), 6, "given twice"},
		"mac on no port": {mutate(func(r *Record) { r.Version = Version; r.Engine.MACs[0].Port = 7 }), 6, "no such port"},
		"bad dgram listener": {mutate(func(r *Record) {
			r.Version = Version
			r.Engine.Ports[1].Dgram.Listener = 2
		}), 6, "listener 2"},
		"tx offset beyond frame": {mutate(func(r *Record) {
			r.Version = Version
			r.Engine.Ports[0].Queue = [][]byte{{1, 2}}
			r.Engine.Ports[0].TxOff = 6
		}), 6, "head frame"},
		"kernel filter fd twice": {mutate(func(r *Record) {
			r.Version = Version
			r.Daemon.KernelFilter = &KernelFilter{Program: 5, Drops: 5}
		}), 6, "twice"},
		"kernel filter without its counters": {mutate(func(r *Record) {
			r.Version = Version
			r.Daemon.KernelFilter = &KernelFilter{Program: 5, Drops: -1}
		}), 6, "kernel filter counters: descriptor -1"},
		"garbage": {[]byte(`{"version":1,"daemon":[`), 0, "unreadable"},
	}
	for name, c := range cases {
		_, err := Decode(c.b, c.nfds)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Decode = %v, want an error with %q", name, err, c.want)
		}
	}
}

// FuzzDecode: no input makes Decode panic, and what it accepts refers
// only to descriptors that came, each once.
func FuzzDecode(f *testing.F) {
	b, _ := Encode(sampleRecord())
	f.Add(b, 6)
	f.Add([]byte(`{"version":1,"fds":1,"daemon":{"control":0,"pidfile":-1,"metrics":-1,"keeper_alive":-1,"supervisor":-1,"tap":{"fd":-1}}}`), 1)
	f.Add([]byte(`{"version":1,"fds":0,"engine":{"ports":[{"id":4294967295,"fd":-1}]}}`), 0)
	f.Add([]byte(`{"version":1,"fds":2,"daemon":{"control":0,"pidfile":-1,"metrics":-1,"keeper_alive":-1,"supervisor":-1,"tap":{"fd":-1}},"engine":{"ports":[{"id":1,"fd":1,"queue":[""],"tx_off":-3}]}}`), 2)
	f.Add([]byte(`{"version":1,"fds":2,"daemon":{"control":0,"pidfile":-1,"metrics":-1,"keeper_alive":-1,"supervisor":-1,"tap":{"fd":-1},"kernel_filter":{"program":1,"drops":1}}}`), 2)
	f.Add([]byte(`{"version":99}`), 0)
	f.Add([]byte(`[]`), 0)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, nfds int) {
		if nfds < 0 || nfds > 1024 {
			return
		}
		r, err := Decode(b, nfds)
		if err != nil {
			return
		}
		seen := map[int]bool{}
		use := func(i int) {
			if i == -1 {
				return
			}
			if i < 0 || i >= nfds || seen[i] {
				t.Fatalf("accepted a record with descriptor %d of %d (seen %v)", i, nfds, seen[i])
			}
			seen[i] = true
		}
		use(r.Daemon.Pidfile)
		use(r.Daemon.Control)
		use(r.Daemon.Metrics)
		use(r.Daemon.KeeperAlive)
		use(r.Daemon.Supervisor)
		use(r.Daemon.TAP.Fd)
		if k := r.Daemon.KernelFilter; k != nil {
			if k.Program < 0 || k.Drops < 0 {
				t.Fatalf("accepted a kernel filter without its fds: %+v", k)
			}
			use(k.Program)
			use(k.Drops)
		}
		for _, l := range r.Daemon.Listeners {
			use(l.Fd)
		}
		for _, p := range r.Engine.Ports {
			use(p.Fd)
			if p.Dgram != nil {
				use(p.Dgram.PathFd)
			}
		}
	})
}
