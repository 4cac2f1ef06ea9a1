// Package metrics serves vknetd's counters in the Prometheus exposition
// format (vknetd --metrics ADDR). A custom Collector takes one engine
// snapshot per scrape, so nothing is counted twice and the forwarding path
// carries no metrics code at all.
//
// The label set is bounded by design: no label names a client, so the
// number of series does not grow with client churn. Counters are the
// switch's totals as package control sums them (the clients' side includes
// clients that have disconnected, monitors are left out), so each one only
// ever grows while the daemon runs.
//
// Metrics (all prefixed vknetd_):
//
//	frames_total{side,direction}   counter  frames the switch received (rx) from or sent (tx) to side "tap" or "clients"
//	bytes_total{side,direction}    counter  the same in bytes
//	drops_total{reason}            counter  frames dropped, by reason (engine and secure-mode reasons; every known reason is present)
//	unlearned_frames_total         counter  frames forwarded without learning their source MAC (table or --port-macs full)
//	clients_accepted_total         counter  clients accepted since start
//	clients{kind}                  gauge    connected clients by kind: seqpacket, stream, dgram
//	monitors                       gauge    attached monitors (vknetctl monitor)
//	macs                           gauge    MAC table entries
//	mac_moves_total                counter  MACs that moved to a new port with their VM (live migration), bindings along
//	buffers                        gauge    frame buffers in the pool
//	buffers_free                   gauge    free frame buffers
//	queued_frames                  gauge    frames waiting in all transmit queues
//
// plus the client library's standard process_* and go_* metrics.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vknetd/vknetd/control"
	"github.com/vknetd/vknetd/engine"
	"github.com/vknetd/vknetd/gso"
	"github.com/vknetd/vknetd/secure"
)

// Source is what a scrape asks of the switch; *engine.Engine has it.
type Source interface {
	Stats() (engine.Stats, error)
}

const ns = "vknetd"

var (
	framesDesc = prometheus.NewDesc(ns+"_frames_total",
		"Frames the switch received from (rx) or sent to (tx) the TAP or the clients (all clients since start).",
		[]string{"side", "direction"}, nil)
	bytesDesc = prometheus.NewDesc(ns+"_bytes_total",
		"Bytes the switch received from (rx) or sent to (tx) the TAP or the clients (all clients since start).",
		[]string{"side", "direction"}, nil)
	dropsDesc = prometheus.NewDesc(ns+"_drops_total",
		"Frames dropped, by reason.", []string{"reason"}, nil)
	unlearnedDesc = prometheus.NewDesc(ns+"_unlearned_frames_total",
		"Frames forwarded without learning their source MAC (MAC table or --port-macs full).", nil, nil)
	acceptedDesc = prometheus.NewDesc(ns+"_clients_accepted_total",
		"Clients accepted since start.", nil, nil)
	clientsDesc = prometheus.NewDesc(ns+"_clients",
		"Connected clients by kind.", []string{"kind"}, nil)
	monitorsDesc = prometheus.NewDesc(ns+"_monitors",
		"Attached monitors.", nil, nil)
	macsDesc = prometheus.NewDesc(ns+"_macs",
		"MAC table entries.", nil, nil)
	buffersDesc = prometheus.NewDesc(ns+"_buffers",
		"Frame buffers in the pool.", nil, nil)
	buffersFreeDesc = prometheus.NewDesc(ns+"_buffers_free",
		"Free frame buffers in the pool.", nil, nil)
	macMovesDesc = prometheus.NewDesc(ns+"_mac_moves_total",
		"MACs that moved to a new port with their VM (live migration), with their secure-mode bindings.", nil, nil)
	queuedDesc = prometheus.NewDesc(ns+"_queued_frames",
		"Frames waiting in all transmit queues.", nil, nil)
)

// DropReasons lists every reason the engine, the secure-mode policy and
// the offload header check (gso.Check) can count, so drops_total has a zero series for each from the first
// scrape (a series that appears only with its first drop defeats rate()).
func DropReasons() []string {
	var out []string
	// engine.Drop names its values and says "unknown" past the last.
	for d := engine.Drop(0); d < 255 && d.String() != "unknown"; d++ {
		out = append(out, d.String())
	}
	for r := secure.Reason(1); r < secure.NumReasons; r++ { // 0 is Pass, not a drop
		out = append(out, r.String())
	}
	for r := gso.Reason(1); r < gso.NumReasons; r++ { // 0 is OK, not a drop
		out = append(out, r.String())
	}
	return out
}

// Collector is a prometheus.Collector over a Source.
type Collector struct {
	src     Source
	reasons []string
}

// NewCollector returns a collector that snapshots src on every scrape.
func NewCollector(src Source) *Collector {
	return &Collector{src: src, reasons: DropReasons()}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{framesDesc, bytesDesc, dropsDesc, unlearnedDesc, acceptedDesc,
		clientsDesc, monitorsDesc, macsDesc, macMovesDesc, buffersDesc, buffersFreeDesc, queuedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.src.Stats()
	if err != nil {
		// The scrape fails (HTTP 500) rather than reporting zeros that
		// would look like counter resets.
		ch <- prometheus.NewInvalidMetric(framesDesc, err)
		return
	}
	s := control.Summarize(st)
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for _, side := range []struct {
		name string
		t    control.Traffic
	}{{"tap", s.Traffic.TAP}, {"clients", s.Traffic.Clients}} {
		counter(framesDesc, side.t.RxFrames, side.name, "rx")
		counter(framesDesc, side.t.TxFrames, side.name, "tx")
		counter(bytesDesc, side.t.RxBytes, side.name, "rx")
		counter(bytesDesc, side.t.TxBytes, side.name, "tx")
	}
	seen := make(map[string]bool, len(c.reasons))
	for _, r := range c.reasons {
		counter(dropsDesc, s.Drops[r], r)
		seen[r] = true
	}
	for r, v := range s.Drops {
		if !seen[r] { // a reason added without updating DropReasons: still shown
			counter(dropsDesc, v, r)
		}
	}
	counter(unlearnedDesc, s.Unlearned)
	counter(acceptedDesc, s.Accepted)
	counter(macMovesDesc, s.MACMoves)
	for _, k := range control.ClientKinds {
		gauge(clientsDesc, s.ClientsByKind[k], k)
	}
	gauge(monitorsDesc, s.Monitors)
	gauge(macsDesc, s.MACs)
	gauge(buffersDesc, s.Buffers)
	gauge(buffersFreeDesc, s.BuffersFree)
	gauge(queuedDesc, s.Queued)
}
