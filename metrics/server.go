package metrics

import (
	"context"
	"errors"
	"fmt"
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
	ln   net.Listener
	done chan struct{}
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

// Serve serves on ln, which the Server owns from here on.
func Serve(ln net.Listener, src Source, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	mux := http.NewServeMux()
	mux.Handle(Path, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.HTTPErrorOnError,
		// Scrapes wait on the switch's loop; a flood of them must not
		// queue without bound.
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "vknetd: Prometheus metrics are at %s\n", Path)
	})
	s := &Server{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
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
