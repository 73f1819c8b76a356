package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushd/pushd/internal/config"
)

// opsServer serves /metrics (or the configured path), /healthz and /readyz.
type opsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
	// stopSampling ends the status page's rate sampler; sampled is closed
	// when it has.
	stopSampling, sampled chan struct{}
}

// readinessCheck is one named condition of /readyz.
type readinessCheck struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Readier is implemented by sources that can tell whether they are
// connected (the Kafka source once it has joined its group).
type Readier interface {
	Ready() error
}

func startOps(cfg config.Metrics, reg *prometheus.Registry, d *Daemon, log *slog.Logger) (*opsServer, error) {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+cfg.Path, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	rc := &readiness{d: d}
	mux.HandleFunc("GET /readyz", rc.serve)
	d.statusRoutes(mux)
	o := &opsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	o.stopSampling, o.sampled = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(o.sampled)
		d.sampleRates(o.stopSampling)
	}()
	go func() {
		defer close(o.done)
		if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	log.Info("metrics and health endpoint listening", "addr", ln.Addr().String(), "path", cfg.Path, "status_page", "http://"+ln.Addr().String()+"/")
	return o, nil
}

func (o *opsServer) addr() string { return o.ln.Addr().String() }

func (o *opsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = o.srv.Shutdown(ctx)
	<-o.done
	close(o.stopSampling)
	<-o.sampled
}

// readiness answers /readyz: a token can be obtained, every target dataset
// answers, every source is connected. Dataset checks are cached for a while
// so that a probe every few seconds costs no quota worth mentioning.
type readiness struct {
	d       *Daemon
	mu      sync.Mutex
	checked time.Time
	last    []readinessCheck
}

const readinessCache = 30 * time.Second

func (rc *readiness) serve(w http.ResponseWriter, r *http.Request) {
	checks := rc.run(r.Context())
	ok := true
	for _, c := range checks {
		ok = ok && c.OK
	}
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": ok, "checks": checks})
}

func (rc *readiness) run(ctx context.Context) []readinessCheck {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := rc.d
	var checks []readinessCheck
	add := func(name string, err error) {
		c := readinessCheck{Name: name, OK: err == nil}
		if err != nil {
			c.Error = err.Error()
		}
		checks = append(checks, c)
	}
	if d.tokens != nil {
		_, err := d.tokens.Token(ctx)
		add("token", err)
	}

	rc.mu.Lock()
	cached := rc.last
	fresh := time.Since(rc.checked) < readinessCache
	rc.mu.Unlock()
	if fresh && cached != nil {
		checks = append(checks, cached...)
	} else {
		var ds []readinessCheck
		seen := map[string]bool{}
		for _, p := range d.list() {
			t := p.target
			if t.DatasetID == "" || seen[t.DatasetID] || d.client == nil {
				continue
			}
			seen[t.DatasetID] = true
			dataset, err := d.client.GetDataset(ctx, t.WorkspaceID, t.DatasetID)
			if err == nil && !dataset.AddRowsAPIEnabled {
				err = fmt.Errorf("dataset %s does not accept rows (addRowsAPIEnabled is false)", t.DatasetID)
			}
			c := readinessCheck{Name: "dataset " + t.DatasetID, OK: err == nil}
			if err != nil {
				c.Error = err.Error()
			}
			ds = append(ds, c)
		}
		rc.mu.Lock()
		rc.last, rc.checked = ds, time.Now()
		rc.mu.Unlock()
		checks = append(checks, ds...)
	}
	for _, p := range d.list() {
		if rd, ok := p.src.(Readier); ok {
			add("source "+p.cfg.Name, rd.Ready())
		} else if p.src != nil {
			add("source "+p.cfg.Name, nil)
		}
	}
	return checks
}
