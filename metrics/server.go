package metrics

import (
	"context"
	"errors"
	"fmt"
	"github.com/vknetd/vknetd/internal/ratelog"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where the exposition is served.
const Path = "/metrics"

// maxHeaderBytes is plenty for a scrape's request and, unlike net/http's
// 1 MiB default, little memory to hold per connection.
const maxHeaderBytes = 16 << 10

// CheckAddr validates a --metrics address before anything starts: HOST:PORT
// or :PORT with a port from 1 to 65535.
func CheckAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--metrics %q is not HOST:PORT: write e.g. 127.0.0.1:9477, or :9477 for every address", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("--metrics %q: port %q is not 1 to 65535: write e.g. 127.0.0.1:9477", addr, port)
	}
	if host != "" {
		if err := checkHost(host); err != nil {
			return fmt.Errorf("--metrics %q: %v", addr, err)
		}
	}
	return nil
}

// checkHost accepts an IP address or a plausible host name; the name
// itself is resolved when listening.
func checkHost(host string) error {
	if net.ParseIP(host) != nil {
		return nil
	}
	for _, r := range host {
		if !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fmt.Errorf("host %q is neither an IP address nor a host name", host)
		}
	}
	return nil
}

// Server is the HTTP endpoint.
type Server struct {
	srv  *http.Server
	ln   *limitListener
	done chan struct{}
}

// Limits keep the endpoint from holding the daemon's file descriptors,
// which VM clients need: anyone who can reach ADDR can open connections.
type Limits struct {
	// MaxConns is how many connections are open at once; more wait in
	// the kernel's listen backlog until one closes.
	MaxConns int
	// ReadHeader bounds the wait for a request's headers, from the
	// connection's start: a client that connects and sends nothing, or
	// dribbles a header (slowloris), is closed when it passes.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included.
	Read time.Duration
	// Write bounds the answer, from the end of the request's headers: a
	// scrape waits on the switch's loop, then a client that reads slowly
	// is cut off.
	Write time.Duration
	// Idle closes a kept-alive connection with no next request.
	Idle time.Duration
}

const (
	// MaxConns is DefaultLimits.MaxConns: a Prometheus server or two
	// needs a connection each.
	MaxConns = 16
	// maxScrapes bounds scrapes in flight: they wait on the switch's
	// loop, and a flood of them must not queue without bound.
	maxScrapes = 4
	// MaxFds is the most file descriptors the endpoint holds: the
	// listener, its connections, and the /proc files the process
	// collector opens during a scrape (one at a time, two for margin).
	MaxFds = 1 + MaxConns + 2*maxScrapes
)

// DefaultLimits are what the daemon uses. A scraper sends its request at
// once and keeps the connection alive between scrapes of 15 s; one that
// scrapes less often reconnects, which costs nothing.
var DefaultLimits = Limits{
	MaxConns:   MaxConns,
	ReadHeader: 5 * time.Second,
	Read:       10 * time.Second,
	Write:      30 * time.Second,
	Idle:       30 * time.Second,
}

// ListenTCP binds addr (checked with CheckAddr) for Serve; the daemon
// binds before it creates anything, so a taken port refuses the start.
func ListenTCP(addr string) (net.Listener, error) {
	if err := CheckAddr(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		hint := "give an address of this host, e.g. 127.0.0.1:9477"
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = "another program listens there: pick another port"
		}
		return nil, fmt.Errorf("--metrics %s: %v; %s", addr, err, hint)
	}
	return ln, nil
}

// Serve serves on ln, which the Server owns from here on, with
// DefaultLimits.
func Serve(ln net.Listener, src Source, log *slog.Logger) *Server {
	return ServeLimited(ln, src, log, DefaultLimits)
}

// ServeLimited is Serve with other limits, for tests that cannot wait for
// the default timeouts.
func ServeLimited(ln net.Listener, src Source, log *slog.Logger, lim Limits) *Server {
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	mux := http.NewServeMux()
	mux.Handle(Path, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.HTTPErrorOnError,
		MaxRequestsInFlight: maxScrapes,
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "vknetd: Prometheus metrics are at %s\n", Path)
	})
	s := &Server{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: lim.ReadHeader,
			ReadTimeout:       lim.Read,
			WriteTimeout:      lim.Write,
			IdleTimeout:       lim.Idle,
			MaxHeaderBytes:    maxHeaderBytes,
			// The server's own errors name what a peer did (a bad request, a
			// reset): braked, so a peer cannot flood the log.
			ErrorLog: slog.NewLogLogger(ratelog.NewHandler(log.Handler(), "metrics: http error",
				ratelog.DefaultBurst, ratelog.DefaultEvery), slog.LevelWarn),
		},
		ln:   newLimitListener(ln, lim.MaxConns),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return s
}

// Addr is the address actually listened on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving, giving scrapes in progress a moment to finish.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	<-s.done
	return err
}
