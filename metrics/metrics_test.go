package metrics

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/vknetd/vknetd/engine"
)

type fakeSource struct {
	stats   engine.Stats
	stopped atomic.Bool
	calls   atomic.Int64
}

func (f *fakeSource) Stats() (engine.Stats, error) {
	f.calls.Add(1)
	if f.stopped.Load() {
		return engine.Stats{}, engine.ErrStopped
	}
	return f.stats, nil
}

func stats(clients int) engine.Stats {
	s := engine.Stats{
		Ports: []engine.PortStats{{ID: 0, Kind: "tap", Name: "tap0", RxFrames: 10, RxBytes: 1000, TxFrames: 20, TxBytes: 2000,
			Drops: []engine.DropCount{{Reason: "tap-proto-denied", Count: 2}}}},
		Departed: engine.PortStats{Kind: "departed", RxFrames: 100, RxBytes: 10000, TxFrames: 200, TxBytes: 20000,
			Drops: []engine.DropCount{{Reason: "tx-queue-full", Count: 10}}},
		MACs: 3, Clients: clients, Accepted: 9, MACMoves: 2, PoolFree: 90, PoolCap: 128,
	}
	for i := 0; i < clients; i++ {
		kind := "seqpacket"
		if i%2 == 1 {
			kind = "stream"
		}
		s.Ports = append(s.Ports, engine.PortStats{ID: uint32(i + 1), Kind: kind, Name: fmt.Sprintf("pid %d uid 1000", 100+i),
			RxFrames: 5, RxBytes: 500, TxFrames: 7, TxBytes: 700, Queued: 1,
			Drops: []engine.DropCount{{Reason: "ipv4-src-outside", Count: 1}}})
	}
	s.Ports = append(s.Ports, engine.PortStats{ID: 999, Kind: "monitor", TxFrames: 5000, TxBytes: 1 << 20,
		Drops: []engine.DropCount{{Reason: "tx-queue-full", Count: 77}}})
	return s
}

// gather scrapes c through a pedantic registry (which also checks that
// every metric matches what Describe announced) into "name{labels}" keys.
func gather(t *testing.T, c prometheus.Collector) (map[string]float64, []*dto.MetricFamily) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			v := m.GetGauge().GetValue()
			if mf.GetType() == dto.MetricType_COUNTER {
				v = m.GetCounter().GetValue()
			}
			out[key] = v
		}
	}
	return out, mfs
}

func TestCollectorValues(t *testing.T) {
	got, mfs := gather(t, NewCollector(&fakeSource{stats: stats(2)}))
	want := map[string]float64{
		`vknetd_frames_total{direction="rx",side="clients"}`: 110,
		`vknetd_frames_total{direction="rx",side="tap"}`:     10,
		`vknetd_frames_total{direction="tx",side="clients"}`: 214,
		`vknetd_frames_total{direction="tx",side="tap"}`:     20,
		`vknetd_bytes_total{direction="rx",side="clients"}`:  11000,
		`vknetd_bytes_total{direction="rx",side="tap"}`:      1000,
		`vknetd_bytes_total{direction="tx",side="clients"}`:  21400,
		`vknetd_bytes_total{direction="tx",side="tap"}`:      2000,
		`vknetd_clients{kind="dgram"}`:                       0,
		`vknetd_clients{kind="seqpacket"}`:                   1,
		`vknetd_clients{kind="stream"}`:                      1,
		`vknetd_clients_accepted_total`:                      9,
		`vknetd_monitors`:                                    1,
		`vknetd_macs`:                                        3,
		`vknetd_mac_moves_total`:                             2,
		`vknetd_buffers`:                                     128,
		`vknetd_buffers_free`:                                90,
		`vknetd_queued_frames`:                               2,
		`vknetd_unlearned_frames_total`:                      0,
		// The monitor's 77 queue drops stay out: they are the observer's.
		`vknetd_drops_total{reason="tx-queue-full"}`:    10,
		`vknetd_drops_total{reason="ipv4-src-outside"}`: 2,
		`vknetd_drops_total{reason="tap-proto-denied"}`: 2,
		`vknetd_drops_total{reason="runt"}`:             0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	nDrops := 0
	for k := range got {
		if strings.HasPrefix(k, "vknetd_drops_total{") {
			nDrops++
		}
	}
	if nDrops != len(DropReasons()) {
		t.Errorf("%d drops_total series, want one per known reason (%d) from the first scrape", nDrops, len(DropReasons()))
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Fatalf("metric lint: %v %v", problems, err)
	}
}

// TestSeriesDoNotGrowWithClients: no label names a client, so a switch with
// a thousand clients exposes exactly the series a switch with two does.
func TestSeriesDoNotGrowWithClients(t *testing.T) {
	few, _ := gather(t, NewCollector(&fakeSource{stats: stats(2)}))
	many, _ := gather(t, NewCollector(&fakeSource{stats: stats(1000)}))
	if len(few) != len(many) {
		t.Fatalf("%d series with 2 clients, %d with 1000", len(few), len(many))
	}
}

func TestDropReasonsAreDistinct(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range DropReasons() {
		if seen[r] || r == "" || r == "pass" || r == "unknown" {
			t.Fatalf("reason %q is empty, not a drop, or listed twice", r)
		}
		seen[r] = true
	}
	if !seen["tx-queue-full"] || !seen["ipv4-src-outside"] {
		t.Fatalf("engine or secure-mode reasons missing: %v", DropReasons())
	}
}

func TestServeScrapesPerRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	src := &fakeSource{stats: stats(2)}
	s := Serve(ln, src, nil)
	defer s.Close()
	base := "http://" + s.Addr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get(Path)
	if code != 200 || !strings.Contains(body, `vknetd_frames_total{direction="rx",side="tap"} 10`) ||
		!strings.Contains(body, "process_open_fds") {
		t.Fatalf("GET %s: %d\n%s", Path, code, body)
	}
	get(Path)
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("two scrapes took %d snapshots, want one each", n)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, Path) {
		t.Fatalf("GET /: %d %q", code, body)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Fatalf("GET /nope: %d", code)
	}
	// A switch that cannot answer fails the scrape rather than reporting
	// zeros that would read as counter resets.
	src.stopped.Store(true)
	if code, _ := get(Path); code != 500 {
		t.Fatalf("scrape of a stopped engine: HTTP %d, want 500", code)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + Path); err == nil {
		t.Fatal("still serving after Close")
	}
}

func TestCheckAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:9477", ":9477", "[::1]:9477", "localhost:9477", "0.0.0.0:1"} {
		if err := CheckAddr(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, c := range []struct{ addr, want string }{
		{"9477", "not HOST:PORT"},
		{"127.0.0.1", "not HOST:PORT"},
		{"127.0.0.1:0", "1 to 65535"},
		{"127.0.0.1:70000", "1 to 65535"},
		{"127.0.0.1:metrics", "1 to 65535"},
		{"a/b:9477", "neither an IP address nor a host name"},
	} {
		err := CheckAddr(c.addr)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--metrics") {
			t.Errorf("%q: %v; want an error naming --metrics and %q", c.addr, err, c.want)
		}
	}
}

func TestListenTCPNamesFlagWhenTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = ListenTCP(ln.Addr().String())
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) && !strings.Contains(err.Error(), "pick another port") ||
		!strings.Contains(err.Error(), "--metrics "+ln.Addr().String()) {
		t.Fatalf("taken port: %v", err)
	}
}
