// Package daemon assembles a pushd process from its config: the optional
// embedded emulator, the Power BI client and its token provider, one
// pipeline per configured source with its dead letter, and the metrics and
// health endpoint; then runs the pipelines until their input ends or the
// context ends, and shuts them down in order.
package daemon

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/deadletter"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/eventstream"
	"github.com/pushd/pushd/internal/pipeline"
	"github.com/pushd/pushd/internal/provision"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/reduce"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/secret"
	"github.com/pushd/pushd/internal/source"
)

// Options are what a run needs beyond the config.
type Options struct {
	Config *config.Config
	// Stdin feeds the stdin source.
	Stdin  io.Reader
	Logger *slog.Logger
	// Registry receives the metrics (nil: a new registry with the Go and
	// process collectors).
	Registry *prometheus.Registry
	// Sources, by pipeline name, replace the sources the config describes
	// (pushd replay reads a dead-letter file instead).
	Sources map[string]source.Source
	// StatusLine, when not nil, shows a live one-line status instead of
	// the progress log lines (pushd run on a terminal, reading stdin).
	StatusLine StatusLine
	// Ready, when not nil, receives the daemon once every pipeline is built
	// (tests use it to find the emulator, the HTTP source and the ops
	// address).
	Ready func(*Daemon)
}

// injectedSource marks a pipeline whose source came in Options.Sources.
const injectedSource = "injected"

// Result reports a run.
type Result struct {
	Pipelines []PipelineResult
	// Landed lists, with the embedded emulator, the rows each target table
	// holds at the end.
	Landed []Landed
	// Retries and Throttled count the Power BI requests retried and the 429
	// answers received, across pipelines.
	Retries, Throttled int64
}

// PipelineResult is one pipeline's outcome.
type PipelineResult struct {
	Name string
	// Source is the pipeline's source type (stdin, kafka, http): whether
	// undelivered events come again on the next run depends on it.
	Source     string
	Target     pushapi.Target
	DeadLetter string
	Summary    pipeline.Summary
	Err        error
}

// Landed is what the embedded emulator holds for one target table.
type Landed struct {
	Dataset, DatasetID, Table string
	Rows                      int
}

// Daemon is a running pushd process.
type Daemon struct {
	cfg    *config.Config
	log    *slog.Logger
	reg    *prometheus.Registry
	emu    *emulator.Server
	client *pushapi.Client
	tokens pushapi.TokenProvider
	ops    *opsServer
	deps   pipelineDeps
	// mu guards pipelines (a reload swaps it), limits and the run's state
	// below.
	mu        sync.Mutex
	pipelines []*running
	// limits holds the limits each dataset's limiter was made with, by
	// dataset id: the limiter is per dataset, shared by the pipelines
	// that write to it, and outlives a reload of any of them (a new one
	// would forget the quota windows and allow a second quota).
	limits map[string]pushapi.Limits
	runState
	// reloadMu runs one reload at a time.
	reloadMu sync.Mutex
	// started is closed once run has started the pipelines.
	started chan struct{}
	recent  *recentDeadLetters // latest dead letters, for the status page
	rates   *rateHistory       // events in and rows out per second, for the status page
	// statusLine shows the live status on a terminal (Options.StatusLine).
	statusLine StatusLine
	// built is set once pipelines is complete; the status page, served
	// from before, reads pipelines only after.
	built atomic.Bool
}

type running struct {
	cfg     config.Pipeline
	files   [sha256.Size]byte // filesDigest of cfg when it was built
	target  pushapi.Target
	streams []*eventstream.Target // the pipeline's fabric_eventstream targets
	src     source.Source
	dl      *deadletter.Writer
	p       *pipeline.Pipeline
	http    *source.HTTP
	kafka   *source.Kafka
	// Set when it starts: cancel drains it alone (a reload); done is
	// closed once it ended and released its source; result is its outcome.
	cancel context.CancelFunc
	done   chan struct{}
	result PipelineResult
}

// runState is what run shares with the pipelines' goroutines and reloads
// (guarded by Daemon.mu).
type runState struct {
	runCtx     context.Context
	shutdownAt *atomic.Pointer[time.Time]
	// ran lists every pipeline started, in order, reloaded ones included.
	ran []*running
	// active counts the pipelines running; allDone is closed (and stopped
	// set) when it reaches 0 outside a reload.
	active    int
	reloading bool
	stopped   bool
	allDone   chan struct{}
}

// list returns the current pipelines (a reload may swap them).
func (d *Daemon) list() []*running {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*running(nil), d.pipelines...)
}

// Emulator returns the embedded emulator, nil without one.
func (d *Daemon) Emulator() *emulator.Server { return d.emu }

// OpsAddr returns the address of the metrics and health endpoint, "" when
// it is off.
func (d *Daemon) OpsAddr() string {
	if d.ops == nil {
		return ""
	}
	return d.ops.addr()
}

// HTTPSourceAddr returns the listen address of the named pipeline's HTTP
// source, "" when it has none.
func (d *Daemon) HTTPSourceAddr(pipelineName string) string {
	for _, r := range d.list() {
		if r.cfg.Name == pipelineName && r.http != nil {
			return r.http.Addr().String()
		}
	}
	return ""
}

// Run builds the daemon from opts.Config and runs it until every pipeline
// has ended (end of input, ctx done, or a fatal error). The error joins the
// pipelines' errors; Result holds each one's summary.
func Run(ctx context.Context, opts Options) (Result, error) {
	d, err := build(ctx, opts)
	if err != nil {
		if d != nil {
			d.close()
		}
		return Result{}, err
	}
	defer d.close()
	if opts.Ready != nil {
		opts.Ready(d)
	}
	return d.run(ctx)
}

func build(ctx context.Context, opts Options) (*Daemon, error) {
	cfg := opts.Config
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	d := &Daemon{cfg: cfg, log: log, reg: reg, limits: map[string]pushapi.Limits{}, started: make(chan struct{}), recent: newRecentDeadLetters(), rates: newRateHistory(), statusLine: opts.StatusLine}

	if cfg.UsesPowerBI() || cfg.Emulator.Embedded {
		if err := d.buildPowerBI(ctx); err != nil {
			return d, err
		}
	}
	if cfg.Metrics.Enabled {
		ops, err := startOps(cfg.Metrics, reg, d, log)
		if err != nil {
			return d, err
		}
		d.ops = ops
	}
	if err := d.buildPipelines(ctx, opts); err != nil {
		return d, err
	}
	return d, nil
}

// buildPowerBI starts the embedded emulator if asked, makes the Power BI
// client and its token provider, and provisions the embedded emulator.
func (d *Daemon) buildPowerBI(ctx context.Context) error {
	cfg, log, reg := d.cfg, d.log, d.reg
	pbCfg := cfg.PowerBI
	var httpClient *http.Client
	if cfg.Emulator.Embedded {
		emu, patched, err := startEmbedded(cfg, log)
		if err != nil {
			return err
		}
		d.emu = emu
		pbCfg = patched
		httpClient = emu.Client()
		httpClient.Timeout = pbCfg.Timeout
	} else {
		c, err := pushapi.NewHTTPClient(pbCfg)
		if err != nil {
			return fmt.Errorf("powerbi: %w", err)
		}
		httpClient = c
	}

	pm := pushapi.NewMetrics(reg)
	tokens, err := pushapi.NewTokenProvider(pbCfg, httpClient, log.With("component", "auth"), pm)
	if err != nil {
		return &CredentialError{Err: fmt.Errorf("powerbi.auth: %w", err)}
	}
	tokens = &announcedTokens{TokenProvider: tokens, method: pbCfg.Auth.ResolvedMethod(), log: log}
	d.tokens = tokens
	if err := checkCredential(ctx, tokens, log); err != nil {
		return err
	}
	client, err := pushapi.NewClient(pbCfg, tokens, httpClient, pushapi.ClientOptions{Logger: log.With("component", "powerbi"), Metrics: pm})
	if err != nil {
		return fmt.Errorf("powerbi: %w", err)
	}
	d.client = client

	if d.emu != nil {
		// The embedded emulator starts empty: create what the config names.
		actions, err := provision.Plan(ctx, client, cfg, provision.Options{CreateAll: true})
		if err != nil {
			return fmt.Errorf("provisioning the embedded emulator: %w", err)
		}
		if _, err := provision.Apply(ctx, client, actions); err != nil {
			return fmt.Errorf("provisioning the embedded emulator: %w", err)
		}
	}
	return nil
}

// buildPipelines makes each pipeline with its source, targets and dead
// letter.
func (d *Daemon) buildPipelines(ctx context.Context, opts Options) error {
	d.deps = pipelineDeps{
		stdin: opts.Stdin, sources: opts.Sources,
		pl: pipeline.NewMetrics(d.reg), dl: deadletter.NewMetrics(d.reg), info: newDatasetInfo(d.reg),
	}
	for i, pc := range d.cfg.Pipelines {
		r, err := d.buildPipeline(ctx, i, pc)
		d.pipelines = append(d.pipelines, r)
		if err != nil {
			return err
		}
	}
	d.built.Store(true)
	return nil
}

// pipelineDeps are what every pipeline's build shares, kept for the
// pipelines a reload builds.
type pipelineDeps struct {
	stdin   io.Reader
	sources map[string]source.Source
	pl      *pipeline.Metrics
	dl      *deadletter.Metrics
	info    datasetInfo
	es      *eventstream.Metrics // made with the first eventstream target
	kafka   *source.KafkaMetrics // made with the first Kafka source
	http    *source.HTTPMetrics  // made with the first HTTP source
}

// buildPipeline builds the i-th pipeline of the config. On error the
// returned pipeline holds what was made so far (discard releases it).
func (d *Daemon) buildPipeline(ctx context.Context, i int, pc config.Pipeline) (*running, error) {
	r := &running{cfg: pc, files: filesDigest(pc)}
	targets, err := d.buildTargets(ctx, r, fmt.Sprintf("pipelines[%d] (%s)", i, pc.Name))
	if err != nil {
		return r, err
	}
	mapper, err := schema.New(pc.Schema)
	if err != nil {
		return r, fmt.Errorf("pipelines[%d] (%s): schema: %w", i, pc.Name, err)
	}
	dl, err := deadletter.Open(pc.DeadLetter.Path, deadletter.Options{Pipeline: pc.Name, Metrics: d.deps.dl})
	if err != nil {
		return r, fmt.Errorf("pipelines[%d] (%s): dead_letter: %w", i, pc.Name, err)
	}
	r.dl = dl
	if err := d.buildSource(r); err != nil {
		return r, fmt.Errorf("pipelines[%d] (%s): %w", i, pc.Name, err)
	}

	var reducer *reduce.Reducer
	if pc.Reduce.Enabled() {
		if reducer, err = reduce.New(pc.Reduce, pc.Schema.Columns); err != nil {
			return r, fmt.Errorf("pipelines[%d] (%s): %w", i, pc.Name, err)
		}
	}

	p, err := pipeline.New(pipeline.Options{
		Name:            pc.Name,
		Source:          r.src,
		Mapper:          mapper,
		Targets:         targets,
		DeadLetter:      deadLetterAdapter{w: dl, recent: d.recent},
		MaxUnacked:      pc.MaxUnackedEvents,
		ShutdownTimeout: d.cfg.ShutdownTimeout,
		Logger:          d.log, // pipeline.New adds the pipeline attribute itself
		Metrics:         d.deps.pl,

		Reducer:            reducer,
		QuotaRowsPerSecond: quotaRowsPerSecond(pc),
	})
	if err != nil {
		return r, fmt.Errorf("pipelines[%d] (%s): %w", i, pc.Name, err)
	}
	r.p = p
	return r, nil
}

// buildTargets resolves r's Power BI target and starts its eventstream
// targets; at names the pipeline in errors.
func (d *Daemon) buildTargets(ctx context.Context, r *running, at string) ([]pipeline.TargetOptions, error) {
	pc := r.cfg
	plog := d.log.With("pipeline", pc.Name)
	var targets []pipeline.TargetOptions
	if pc.HasPowerBI() {
		target, err := d.client.ResolveTarget(ctx, pc.Target)
		if err != nil {
			return nil, fmt.Errorf("%s: resolving the target: %w", at, err)
		}
		r.target = target
		if err := d.setLimits(target.DatasetID, pc.Limits); err != nil {
			return nil, fmt.Errorf("%s.limits: %w", at, err)
		}
		d.deps.info.set(ctx, d.client, target, plog)
		targets = append(targets, pipeline.TargetOptions{Name: config.TargetPowerBI,
			Target: pipeline.PowerBI{Sender: d.client, Table: target}, Batch: pc.Batch, Senders: pc.Limits.MaxInFlight})
	}
	if len(pc.Targets) > 0 && d.deps.es == nil {
		d.deps.es = eventstream.NewMetrics(d.reg)
	}
	for j, tc := range pc.Targets {
		to, err := r.startEventstream(ctx, tc, plog, d.deps.es)
		if err != nil {
			return nil, fmt.Errorf("%s.targets[%d]: %w", at, j, err)
		}
		targets = append(targets, to)
	}
	return targets, nil
}

// setLimits gives the dataset its limiter the first time a pipeline
// writes to it. Later pipelines of the dataset (and those a reload
// builds) share that limiter, its quota windows and the share a Kafka
// source set: limits that differ from its are refused, since a new
// limiter would forget what the windows hold. (config.Validate catches
// most such pipelines; not one naming the dataset by id and another by
// name.)
func (d *Daemon) setLimits(datasetID string, l pushapi.Limits) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := strings.ToLower(datasetID) // Power BI's ids are case-insensitive
	if prev, ok := d.limits[key]; ok {
		if prev != l {
			return fmt.Errorf("differ from those dataset %s already runs with (another pipeline's, or before a reload): its quotas are shared, make them equal (a restart is needed to change them)", datasetID)
		}
		return nil
	}
	d.limits[key] = l
	d.client.SetLimits(datasetID, l)
	return nil
}

// buildSource makes r's source (the injected one when Options.Sources
// has one).
func (d *Daemon) buildSource(r *running) error {
	pc := r.cfg
	plog := d.log.With("pipeline", pc.Name)
	sourceType := pc.Source.Type
	if d.deps.sources[pc.Name] != nil {
		sourceType = injectedSource
	}
	switch sourceType {
	case injectedSource:
		r.src = d.deps.sources[pc.Name]
	case source.TypeStdin:
		r.src = source.NewStdin(d.deps.stdin, pc.Source.Stdin.MaxLineBytes, "stdin")
	case source.TypeKafka:
		if d.deps.kafka == nil {
			d.deps.kafka = source.NewKafkaMetrics(d.reg)
		}
		// The members of the group split the dataset's quotas by their
		// partitions, recomputed at every rebalance.
		kopts := source.KafkaOptions{Logger: plog.With("component", "kafka"), Metrics: d.deps.kafka, MaxUnacked: pc.MaxUnackedEvents}
		if client, datasetID := d.client, r.target.DatasetID; pc.HasPowerBI() {
			kopts.OnShare = func(share float64) { client.SetShare(datasetID, share) }
		}
		k, err := source.NewKafka(pc.Source.Kafka, kopts)
		if err != nil {
			return err
		}
		r.src, r.kafka = k, k
	case source.TypeHTTP:
		if d.deps.http == nil {
			d.deps.http = source.NewHTTPMetrics(d.reg)
		}
		hopts := source.HTTPOptions{Logger: plog.With("component", "http"), Metrics: d.deps.http, MaxUnacked: pc.MaxUnackedEvents}
		if client, datasetID := d.client, r.target.DatasetID; pc.HasPowerBI() {
			hopts.RetryAfterHint = func() time.Duration { return client.PausedFor(datasetID) }
		}
		h, err := source.NewHTTP(pc.Source.HTTP, hopts)
		if err != nil {
			return err
		}
		r.src, r.http = h, h
	default:
		return fmt.Errorf("unknown source type %q", pc.Source.Type)
	}
	return nil
}

// discard releases what a pipeline that never ran holds (its dead letter,
// eventstream targets and source).
func (r *running) discard() {
	if r.dl != nil {
		_ = r.dl.Close()
		r.dl = nil
	}
	for _, es := range r.streams {
		_ = es.Close()
	}
	r.streams = nil
	if r.p == nil && r.src != nil {
		_ = r.src.Close(context.Background())
	}
}

// targetName is a target's name in its pipeline: its type when it has no
// name. Logs and metrics label an eventstream target pipeline/name.
func targetName(tc config.Target) string {
	if tc.Name == "" {
		return tc.Type
	}
	return tc.Name
}

// startEventstream makes the j-th target of r's pipeline, a Fabric
// eventstream, and checks at once that it connects, authenticates and sees
// its topic: a wrong connection string stops pushd at start, not later.
func (r *running) startEventstream(ctx context.Context, tc config.Target, log *slog.Logger, m *eventstream.Metrics) (pipeline.TargetOptions, error) {
	name := targetName(tc)
	es, err := eventstream.New(tc.FabricEventstream, eventstream.Options{
		Name: r.cfg.Name + "/" + name, Logger: log.With("component", "eventstream"), Metrics: m,
	})
	if err != nil {
		return pipeline.TargetOptions{}, fmt.Errorf("fabric_eventstream: %w", err)
	}
	r.streams = append(r.streams, es)
	c := es.Config()
	cctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	partitions, err := es.Check(cctx)
	if err != nil {
		return pipeline.TargetOptions{}, fmt.Errorf("fabric_eventstream (%s): %w", name, err)
	}
	log.Info("eventstream target ready", "target", name, "bootstrap_server", c.BootstrapServer, "topic", c.Topic, "partitions", partitions)
	return pipeline.TargetOptions{Name: name, Target: es, Batch: c.Batch, Senders: c.MaxInFlight}, nil
}

// quotaRowsPerSecond is the rate the pipeline's dataset quota carries: the
// rows per hour, or the requests per minute times a full batch, whichever
// is lower.
func quotaRowsPerSecond(pc config.Pipeline) float64 {
	l := pc.Limits.WithDefaults()
	rows := float64(l.RowsPerHour) / l.RowsWindow.Seconds()
	requests := float64(l.RequestsPerMinute) * float64(pc.Batch.MaxRows) / l.RequestWindow.Seconds()
	return min(rows, requests)
}

// CredentialError is a credential pushd cannot sign in with: unreadable or
// malformed (a missing file, an encrypted key) or refused by Entra ID for
// good at start (unknown tenant or client, wrong secret, unregistered
// certificate, unmatched federated credential). Retrying cannot help: the
// configuration or the app registration must change.
type CredentialError struct{ Err error }

// Error implements error.
func (e *CredentialError) Error() string { return e.Err.Error() }

// Unwrap returns the cause (often a *pushapi.AuthError with the AADSTS code).
func (e *CredentialError) Unwrap() error { return e.Err }

// startTokenTimeout bounds the sign-in at start.
const startTokenTimeout = 8 * time.Second

// checkCredential signs in once at start. A credential Entra ID refuses for
// good ends the run at once (a CredentialError); any other failure (the
// authority unreachable, a 5xx) is logged and left to the requests' retries.
func checkCredential(ctx context.Context, tokens pushapi.TokenProvider, log *slog.Logger) error {
	tctx, cancel := context.WithTimeout(ctx, startTokenTimeout)
	defer cancel()
	_, err := tokens.Token(tctx)
	switch {
	case err == nil || ctx.Err() != nil:
		return nil
	case pushapi.IsCredentialRefused(err):
		return &CredentialError{Err: fmt.Errorf("powerbi.auth: Entra ID refuses the credential: %w", err)}
	}
	log.Warn("no token from Entra ID at start; requests retry with backoff", "err", err)
	return nil
}

// startEmbedded starts the in-process emulator over HTTPS (MSAL accepts
// only https authorities) and returns the Power BI config pointed at it,
// with the credentials it accepts where the config gives none.
func startEmbedded(cfg *config.Config, log *slog.Logger) (*emulator.Server, pushapi.Config, error) {
	pb := cfg.PowerBI
	ec := emulator.DefaultConfig()
	ec.TLS = true
	ec.DiscardRows = cfg.Emulator.DiscardRows
	ec.Logger = log.With("component", "emulator")
	a := &pb.Auth
	if a.Method == "" && a.ClientID == "" && a.Token == "" && a.TokenFile == "" {
		a.Method = pushapi.AuthClientSecret
	}
	if a.TenantID == "" {
		a.TenantID = ec.Tenant
	}
	ec.Tenant = a.TenantID
	if a.ClientID == "" {
		a.ClientID = ec.ClientID
	}
	ec.ClientID = a.ClientID
	switch a.ResolvedMethod() {
	case pushapi.AuthClientSecret:
		switch {
		case a.ClientSecretFile != "":
			b, err := os.ReadFile(a.ClientSecretFile)
			if err != nil {
				return nil, pb, fmt.Errorf("powerbi.auth.client_secret_file: %w", err)
			}
			ec.ClientSecret = strings.TrimSpace(string(b))
		case a.ClientSecret == "":
			a.ClientSecret = secret.Value(emulator.DefaultClientSecret)
			fallthrough
		default:
			ec.ClientSecret = a.ClientSecret.Reveal()
		}
	case pushapi.AuthClientCertificate:
		pemData, err := os.ReadFile(a.CertificateFile)
		if err != nil {
			return nil, pb, fmt.Errorf("powerbi.auth.certificate_file: %w", err)
		}
		certs, _, err := confidential.CertFromPEM(pemData, "")
		if err != nil {
			return nil, pb, fmt.Errorf("powerbi.auth.certificate_file %s: %w", a.CertificateFile, err)
		}
		ec.ClientCertificates = certs
	}
	emu, err := emulator.Start(ec)
	if err != nil {
		return nil, pb, fmt.Errorf("starting the embedded emulator: %w", err)
	}
	pb.APIURL = emu.URL()
	pb.AuthorityURL = emu.URL()
	log.Info("embedded Power BI emulator started", "url", emu.URL(), "tenant", ec.Tenant, "client_id", ec.ClientID)
	return emu, pb, nil
}

// Snapshot reports what the pipelines did so far, while they run: the
// summary printed when a second signal ends the process at once.
// Pipelines that a reload replaced are included.
func (d *Daemon) Snapshot() Result {
	var res Result
	d.mu.Lock()
	all := append([]*running(nil), d.ran...)
	if len(all) == 0 { // not started yet
		all = append(all, d.pipelines...)
	}
	d.mu.Unlock()
	for _, r := range all {
		if r.p == nil {
			continue
		}
		res.Pipelines = append(res.Pipelines, PipelineResult{
			Name: r.cfg.Name, Source: r.cfg.Source.Type, Target: r.target, DeadLetter: r.cfg.DeadLetter.Path, Summary: r.p.Stats(),
		})
	}
	return res
}

// closeFloor is the least time a source's close gets after its pipeline
// ended, even past shutdown_timeout: enough for a Kafka commit.
const closeFloor = time.Second

// run starts every pipeline and waits until none runs (a reload may
// replace some meanwhile).
func (d *Daemon) run(ctx context.Context) (Result, error) {
	// Progress goes on through the drain, so it has its own context.
	progressCtx, stopProgress := context.WithCancel(context.WithoutCancel(ctx))
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		d.reportProgress(progressCtx, d.cfg.Log.ProgressInterval, d.statusLine)
	}()
	defer func() {
		stopProgress()
		<-progressDone
	}()
	// Shutdown starts when ctx ends: the HTTP sources refuse new requests
	// at once (503 + Retry-After) rather than queue events no one reads,
	// and everything after, the sources' close included, fits in
	// shutdown_timeout from then.
	var shutdownAt atomic.Pointer[time.Time]
	stopWatch := context.AfterFunc(ctx, func() {
		now := time.Now()
		shutdownAt.Store(&now)
		for _, r := range d.list() {
			if r.http != nil {
				r.http.Drain()
			}
		}
	})
	defer stopWatch()
	d.mu.Lock()
	d.runCtx, d.shutdownAt, d.allDone = ctx, &shutdownAt, make(chan struct{})
	for _, r := range d.pipelines {
		d.startLocked(r)
	}
	d.endIfIdleLocked()
	allDone := d.allDone
	d.mu.Unlock()
	close(d.started)
	<-allDone

	d.mu.Lock()
	ran := d.ran
	d.mu.Unlock()
	return d.result(ran)
}

// result gathers the outcome of every pipeline that ran.
func (d *Daemon) result(ran []*running) (Result, error) {
	res := Result{}
	res.Retries = int64(counterTotal(d.reg, "pushd_powerbi_retries_total"))
	res.Throttled = int64(counterTotal(d.reg, "pushd_powerbi_throttled_total"))
	var errs []error
	for _, r := range ran {
		res.Pipelines = append(res.Pipelines, r.result)
		if r.result.Err != nil {
			errs = append(errs, r.result.Err)
		}
	}
	if d.emu != nil {
		seen := map[string]bool{}
		for _, r := range ran {
			if !r.cfg.HasPowerBI() {
				continue
			}
			key := r.target.DatasetID + "/" + r.target.Table
			if seen[key] {
				continue
			}
			seen[key] = true
			res.Landed = append(res.Landed, Landed{
				Dataset: r.cfg.Target.DatasetName, DatasetID: r.target.DatasetID, Table: r.target.Table,
				Rows: d.emu.RowCount(r.target.DatasetID, r.target.Table),
			})
		}
	}
	return res, errors.Join(errs...)
}

// startLocked starts r under its own cancel (d.mu held).
func (d *Daemon) startLocked(r *running) {
	pctx, cancel := context.WithCancel(d.runCtx)
	r.cancel, r.done = cancel, make(chan struct{})
	d.ran = append(d.ran, r)
	d.active++
	go func() {
		defer close(r.done)
		r.result = d.runPipeline(pctx, r)
		cancel()
		d.mu.Lock()
		d.active--
		d.endIfIdleLocked()
		d.mu.Unlock()
	}()
}

// endIfIdleLocked ends the run when no pipeline runs and no reload is
// about to start some (d.mu held).
func (d *Daemon) endIfIdleLocked() {
	if d.active == 0 && !d.reloading && !d.stopped {
		d.stopped = true
		close(d.allDone)
	}
}

// runPipeline runs r until its input ends or ctx ends (a signal, or a
// reload draining it), then closes its source, targets and dead letter.
func (d *Daemon) runPipeline(ctx context.Context, r *running) PipelineResult {
	s, err := r.p.Run(ctx)
	// Close the source after the pipeline: a Kafka source commits what
	// was acked and leaves its group; the HTTP source answers what is
	// left. The close gets what is left of the shutdown budget (all of it
	// when the input ended or a reload drained it rather than a signal),
	// and at least closeFloor so that a Kafka source can still commit
	// what was delivered when sending took the whole budget.
	now := time.Now()
	deadline := now.Add(d.cfg.ShutdownTimeout)
	if at := d.shutdownAt.Load(); at != nil {
		deadline = at.Add(d.cfg.ShutdownTimeout)
	}
	if floor := now.Add(closeFloor); deadline.Before(floor) {
		deadline = floor
	}
	closeCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	if cerr := r.src.Close(closeCtx); cerr != nil {
		err = errors.Join(err, fmt.Errorf("closing the source of pipeline %s: %w", r.cfg.Name, cerr))
	}
	cancel()
	for _, es := range r.streams {
		if cerr := es.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing an eventstream target of pipeline %s: %w", r.cfg.Name, cerr))
		}
	}
	r.streams = nil
	if cerr := r.dl.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("closing the dead letter of pipeline %s: %w", r.cfg.Name, cerr))
	}
	r.dl = nil
	return PipelineResult{Name: r.cfg.Name, Source: r.cfg.Source.Type, Target: r.target, DeadLetter: r.cfg.DeadLetter.Path, Summary: s, Err: err}
}

// close releases what build made and no run released, in reverse order.
func (d *Daemon) close() {
	for _, r := range d.list() {
		if r.done == nil {
			r.discard()
		}
	}
	if d.ops != nil {
		d.ops.close()
	}
	if d.emu != nil {
		_ = d.emu.Close()
	}
}

// counterTotal sums every series of the named counter.
func counterTotal(g prometheus.Gatherer, name string) float64 {
	families, err := g.Gather()
	if err != nil {
		return 0
	}
	var total float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}
