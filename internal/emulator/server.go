package emulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a running emulator. Its methods are safe for concurrent use.
type Server struct {
	cfg     Config
	now     func() time.Time
	log     *slog.Logger
	ln      net.Listener
	srv     *http.Server
	url     string
	caPEM   []byte
	certs   *x509.CertPool
	clients map[string]Client // by lower-cased client id
	res     map[string]bool   // accepted resources, lower-cased

	served chan struct{}

	reqSeq atomic.Uint64

	mu       sync.RWMutex // guards datasets
	datasets map[string]*dataset

	tokMu  sync.Mutex
	tokens map[string]tokenInfo

	faultMu sync.Mutex
	faults  Faults
	rnd     *rand.Rand

	stats statsRecorder
}

// Start validates cfg, listens on cfg.Listen and serves in the background
// until Close or Shutdown.
func Start(cfg Config) (*Server, error) {
	def := DefaultConfig()
	if cfg.Listen == "" {
		cfg.Listen = def.Listen
	}
	if cfg.Tenant == "" {
		cfg.Tenant = def.Tenant
	}
	if cfg.IdentityHeader == "" {
		cfg.IdentityHeader = def.IdentityHeader
	}
	if cfg.ManagedIdentityClientID == "" {
		cfg.ManagedIdentityClientID = def.ManagedIdentityClientID
	}
	if cfg.TokenLifetime == 0 {
		cfg.TokenLifetime = def.TokenLifetime
	}
	if cfg.Resources == nil {
		cfg.Resources = def.Resources
	}
	if cfg.UnknownColumns == "" {
		cfg.UnknownColumns = UnknownColumnsIgnore
	}
	if cfg.HistoryLimit == 0 {
		cfg.HistoryLimit = def.HistoryLimit
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("emulator config: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		now:      cfg.Now,
		log:      cfg.Logger,
		clients:  map[string]Client{},
		res:      map[string]bool{},
		served:   make(chan struct{}),
		datasets: map[string]*dataset{},
		tokens:   map[string]tokenInfo{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	s.rnd = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	if cfg.ClientID != "" {
		s.addClient(Client{ID: cfg.ClientID, Secret: cfg.ClientSecret, Certificates: cfg.ClientCertificates, SubjectNames: cfg.ClientSubjectNames, Federated: cfg.FederatedCredentials})
	}
	for _, c := range cfg.Clients {
		s.addClient(c)
	}
	for _, r := range cfg.Resources {
		s.res[normResource(r)] = true
	}
	s.stats.init(s.now)
	s.setFaults(cfg.Faults)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("emulator: listening on %s: %w", cfg.Listen, err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme := "http"
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	// HTTP/1.1 only: cutting a connection mid-response needs Hijack.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	s.srv.Protocols = &protocols
	if cfg.TLS {
		scheme = "https"
		cert, caPEM, err := selfSignedCert(host, s.now())
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("emulator: making TLS certificate: %w", err)
		}
		s.caPEM = caPEM
		s.certs = x509.NewCertPool()
		s.certs.AppendCertsFromPEM(caPEM)
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	}
	s.ln = ln
	s.url = scheme + "://" + net.JoinHostPort(host, port)
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("emulator stopped serving", "err", err)
		}
	}()
	s.log.Info("emulator listening", "url", s.url, "tenant", cfg.Tenant, "client_id", cfg.ClientID)
	return s, nil
}

func (s *Server) addClient(c Client) {
	key := lower(c.ID)
	old := s.clients[key]
	if c.Secret == "" {
		c.Secret = old.Secret
	}
	c.Certificates = append(old.Certificates, c.Certificates...)
	c.Federated = append(old.Federated, c.Federated...)
	c.SubjectNames = append(old.SubjectNames, c.SubjectNames...)
	s.clients[key] = c
}

// URL is the base URL, e.g. "https://127.0.0.1:43121": the Power BI API is
// under URL()+"/v1.0/myorg/", the authority is URL()+"/"+tenant.
func (s *Server) URL() string { return s.url }

// Authority is the Entra authority URL for MSAL: URL()+"/"+tenant.
func (s *Server) Authority() string { return s.url + "/" + s.cfg.Tenant }

// ManagedIdentityEndpoint is the App Service style managed-identity endpoint
// (the value for IDENTITY_ENDPOINT).
func (s *Server) ManagedIdentityEndpoint() string { return s.url + "/msi/token" }

// Config returns the effective configuration (defaults filled in).
func (s *Server) Config() Config { return s.cfg }

// Client returns an HTTP client that trusts the emulator's certificate.
func (s *Server) Client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	if s.certs != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: s.certs, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}
}

// CACertPEM is the self-signed certificate as PEM (nil without TLS).
func (s *Server) CACertPEM() []byte {
	if s.caPEM == nil {
		return nil
	}
	return append([]byte(nil), s.caPEM...)
}

// Shutdown stops accepting connections and waits for requests in progress
// until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.served
	if err != nil {
		return fmt.Errorf("emulator: shutting down %s: %w", s.url, err)
	}
	return nil
}

// Close stops the server at once, dropping requests in progress.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.served
	if err != nil {
		return fmt.Errorf("emulator: closing %s: %w", s.url, err)
	}
	return nil
}

// Reset deletes every dataset and row, clears quotas and stats, and restores
// the faults given at start. Issued tokens stay valid.
func (s *Server) Reset() {
	s.mu.Lock()
	s.datasets = map[string]*dataset{}
	s.mu.Unlock()
	s.stats.reset()
	s.setFaults(s.cfg.Faults)
	s.log.Info("emulator reset")
}

// requestID makes a cheap unique id for the RequestId header.
func (s *Server) requestID() string {
	n := s.reqSeq.Add(1)
	return "00000000-0000-4000-8000-" + fmt.Sprintf("%012x", n)
}

// retryAfterSeconds rounds d up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	sec := int((d + time.Second - 1) / time.Second)
	if sec < 1 {
		sec = 1
	}
	return sec
}

func setRetryAfter(w http.ResponseWriter, sec int) {
	w.Header().Set("Retry-After", strconv.Itoa(sec))
}
