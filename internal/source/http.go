package source

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pushd/pushd/internal/framing"
)

// HTTP is an ingest endpoint for applications next to pushd: they POST
// NDJSON or a JSON array, and each line or element becomes one event. The
// answer waits until every event of the request is acknowledged, so the
// caller keeps its data until it is safe, and it tells the truth about each
// event:
//
//	200 {"accepted":A,"dead_lettered":D}  every event accepted or dead-lettered
//	503 + Retry-After                     not every event landed: the body
//	                                      lists by index the events that will
//	                                      not land (failed_events: failed, or
//	                                      withdrawn at response_timeout before
//	                                      they were sent) and those still being
//	                                      sent (pending_events); also at once
//	                                      while pushd is shutting down
//	429 + Retry-After                     too many events in flight, or bodies
//	                                      held (max_buffered_bytes): try later
//	400 malformed body (names the line or element) or Idempotency-Key,
//	401 bad or missing bearer token, 405 not POST, 408 body not read within
//	body_read_timeout, 409 a request with the same Idempotency-Key is being
//	read, 413 body or event count over a limit (refused while reading), 415
//	unsupported content type, 422 Idempotency-Key used for another body
//
// Bodies: application/json holds one object (one event) or an array of
// objects (one event each); application/x-ndjson, application/jsonl,
// text/plain or no content type hold one JSON object (or array of objects)
// per line, blank lines skipped. Bodies are framed as they are read (see
// framing.Body) and follow the rule every source follows (framing.Check).
//
// Idempotency-Key: requests with the same key and body share one record of
// their events' state (ingestEntry), so a retry queues only the events
// that will not land otherwise and never one twice.
//
// Retry-After is Power BI's pause when the target is throttled
// (HTTPOptions.RetryAfterHint), else HTTPOptions.RetryAfter.
//
// Dead-lettered events are counted apart when the pipeline acknowledges them
// with an error wrapping ErrDeadLettered; an Ack(nil) counts as accepted.
type HTTP struct {
	cfg        HTTPConfig
	tokenHash  []byte // SHA-256 of the bearer token; nil when no token is required
	log        *slog.Logger
	metrics    *HTTPMetrics
	maxUnacked int64
	retryWait  time.Duration        // the least Retry-After
	retryHint  func() time.Duration // what Power BI asked for now, if anything

	events   chan queuedEvent
	unacked  atomic.Int64 // events admitted and not yet acknowledged
	budget   *byteBudget  // bytes of the bodies held (max_buffered_bytes)
	requests atomic.Uint64

	// mu orders admission against Close: no event is queued after closing.
	mu      sync.Mutex
	closed  bool
	closing chan struct{} // closed when Close starts
	abort   chan struct{} // closed when Close gives up waiting: answer 503 now

	store *ingestStore // Idempotency-Key entries

	server    *http.Server
	listener  net.Listener
	served    chan struct{}
	drainOnce sync.Once
	closeOnce sync.Once
	closeErr  error
}

var _ Source = (*HTTP)(nil)

type queuedEvent struct {
	ev  Event
	ack Ack
}

// errHTTPClosed acknowledges events still queued when the source closes.
var errHTTPClosed = errors.New("http source closed before the event was read")

// HTTPOptions holds what an HTTPConfig does not.
type HTTPOptions struct {
	// Logger receives the source's logs; nil discards them.
	Logger *slog.Logger
	// Metrics, when not nil, is updated by the source.
	Metrics *HTTPMetrics
	// MaxUnacked bounds the events accepted from callers but not yet
	// acknowledged (default 10000). A request that would pass it is answered
	// 429 at once rather than queued; one that alone holds more is 413.
	MaxUnacked int
	// RetryAfter is the least wait suggested in Retry-After on 429 and 503
	// (default 1s; sent in whole seconds, at least 1).
	RetryAfter time.Duration
	// RetryAfterHint, when not nil, returns how long the pipeline's
	// target asked to wait (the rest of a Power BI 429 pause); Retry-After
	// passes it on when it is longer than RetryAfter.
	RetryAfterHint func() time.Duration
	// Listener, when not nil, is served instead of listening on
	// HTTPConfig.Listen (for tests and socket activation).
	Listener net.Listener
}

// NewHTTP validates cfg, reads the bearer token file if one is named and the
// token is not already set, listens on cfg.Listen, and serves cfg.Path.
func NewHTTP(cfg HTTPConfig, opts HTTPOptions) (*HTTP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http source config: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxUnacked <= 0 {
		opts.MaxUnacked = 10000
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = time.Second
	}
	token := cfg.BearerToken.Reveal()
	if token == "" && cfg.BearerTokenFile != "" {
		b, err := os.ReadFile(cfg.BearerTokenFile)
		if err != nil {
			return nil, fmt.Errorf("http source: reading bearer_token_file: %w", err)
		}
		token = strings.TrimRight(string(b), "\r\n")
		if token == "" {
			return nil, fmt.Errorf("http source: bearer_token_file %s is empty", cfg.BearerTokenFile)
		}
	}
	h := &HTTP{
		cfg:        cfg,
		log:        log,
		metrics:    opts.Metrics,
		maxUnacked: int64(opts.MaxUnacked),
		retryWait:  opts.RetryAfter,
		retryHint:  opts.RetryAfterHint,
		store:      newIngestStore(cfg.IdempotencyTTL, cfg.IdempotencyMaxKeys, time.Now),
		events:     make(chan queuedEvent, opts.MaxUnacked),
		budget:     &byteBudget{limit: cfg.MaxBufferedBytes},
		closing:    make(chan struct{}),
		abort:      make(chan struct{}),
		served:     make(chan struct{}),
	}
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		h.tokenHash = sum[:]
	}
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("http source: listening on %s: %w", cfg.Listen, err)
		}
	}
	h.listener = ln
	mux := http.NewServeMux()
	mux.Handle(cfg.Path, h)
	h.server = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(h.served)
		if err := h.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http source server stopped", "listen", ln.Addr().String(), "err", err)
		}
	}()
	log.Info("http source listening", "listen", ln.Addr().String(), "path", cfg.Path, "auth", h.tokenHash != nil)
	return h, nil
}

// Addr is the address the source listens on (useful with port 0).
func (h *HTTP) Addr() net.Addr { return h.listener.Addr() }

// Read returns the next event posted by a caller. After Close it returns an
// error wrapping ErrEndOfInput. Events withdrawn while queued (their
// request passed its response timeout) are acked and skipped.
func (h *HTTP) Read(ctx context.Context) (Event, Ack, error) {
	for {
		select {
		case q := <-h.events:
			if q.ev.Claim.Withdrawn() {
				q.ack(ErrWithdrawn)
				continue
			}
			return q.ev, q.ack, nil
		case <-ctx.Done():
			return Event{}, nil, ctx.Err()
		case <-h.closing:
			return Event{}, nil, fmt.Errorf("http source closed: %w", ErrEndOfInput)
		}
	}
}

// Drain stops taking requests: new ones are answered 503 with Retry-After
// at once, and the events queued but not read yet are acked with an error
// (their requests are answered that they did not land). Requests whose
// events are in the pipeline wait for them. The daemon calls it as soon as
// shutdown starts; Close calls it too. It may be called more than once.
func (h *HTTP) Drain() {
	h.drainOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		close(h.closing)
		h.mu.Unlock()
		// Nothing is queued after closed is set; what is queued now will not
		// be read by a pipeline that stopped reading.
		for drained := false; !drained; {
			select {
			case q := <-h.events:
				q.ack(errHTTPClosed)
			default:
				drained = true
			}
		}
	})
}

// Close drains (see Drain) and waits until ctx ends for the requests in
// flight to be answered; past it, they are answered 503 and the
// connections closed. It may be called more than once.
func (h *HTTP) Close(ctx context.Context) error {
	h.closeOnce.Do(func() {
		h.Drain()
		err := h.server.Shutdown(ctx)
		if err != nil {
			// Let waiting handlers answer 503, give them a moment to write
			// it (within what is left of the budget), then cut what is left.
			close(h.abort)
			grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeGrace)
			if h.server.Shutdown(grace) != nil {
				_ = h.server.Close()
			}
			cancel()
			err = fmt.Errorf("http source: waiting for requests in flight: %w", err)
		}
		<-h.served
		h.closeErr = err
	})
	return h.closeErr
}

// closeGrace is how long Close lets handlers write their 503 once its
// budget is spent, before it cuts the connections.
const closeGrace = 100 * time.Millisecond

// attempt is one POST whose events are queued: it holds its share of the
// buffered-bytes budget until the last of them is acknowledged.
type attempt struct {
	remaining atomic.Int64
	acked     []atomic.Bool
	body      *bodyReservation
}

// ServeHTTP handles one ingest request; see HTTP for the protocol.
func (h *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	format, ok := h.checkRequest(w, r)
	if !ok {
		return
	}
	e, ok := h.entry(w, r)
	if !ok {
		return
	}
	if e.ready() && len(e.free()) == 0 {
		// A retry of a request whose events are all delivered or still
		// in flight: send nothing again, say how they fare (once sure it
		// is the same body).
		if h.sameBody(w, r, e) {
			h.answer(w, r, e)
		}
		return
	}
	if !h.enqueue(w, r, e, format) {
		if e.key != "" && !e.ready() {
			h.store.forget(e)
		}
		return
	}
	h.answer(w, r, e)
}

// entry returns what pushd knows of the request's events: the stored entry
// of its Idempotency-Key, or a new one. It answers (and returns false) a
// malformed key, or a key whose first request is still being read.
func (h *HTTP) entry(w http.ResponseWriter, r *http.Request) (*ingestEntry, bool) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		return newIngestEntry(""), true
	}
	if len(key) > 255 || strings.ContainsFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		h.replyError(w, http.StatusBadRequest, "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces")
		return nil, false
	}
	e, created := h.store.lookup(key)
	if !created && !e.ready() {
		w.Header().Set("Retry-After", h.retryAfter())
		h.replyError(w, http.StatusConflict, "a request with this Idempotency-Key is being read: retry later")
		return nil, false
	}
	return e, true
}

// sameBody reads the body only to hash it and answers 422 (returning
// false) when it is not the body the key was first used for.
func (h *HTTP) sameBody(w http.ResponseWriter, r *http.Request, e *ingestEntry) bool {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(h.cfg.BodyReadTimeout))
	hash := sha256.New()
	_, err := io.Copy(hash, http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	_ = rc.SetReadDeadline(time.Time{})
	var sum [sha256.Size]byte
	hash.Sum(sum[:0])
	if err == nil && sum == e.hash {
		return true
	}
	if err != nil {
		h.replyError(w, http.StatusBadRequest, "reading body: %v", err)
		return false
	}
	h.replyKeyReused(w)
	return false
}

// enqueue reads the body and queues the entry's free events (all of them
// on a first attempt). On a problem it answers and returns false.
func (h *HTTP) enqueue(w http.ResponseWriter, r *http.Request, e *ingestEntry, format framing.Kind) bool {
	// Decide what can be decided before reading a body the pipeline cannot
	// take: no room in flight at all, or no room for one more body.
	if h.unacked.Load() >= h.maxUnacked {
		h.replySaturated(w)
		return false
	}
	res, ok := h.reserveBody(w, r)
	if !ok {
		return false
	}
	hash := sha256.New()
	events, ok := h.readEvents(w, r, format, res, hash)
	if !ok {
		res.release()
		return false
	}
	var sum [sha256.Size]byte
	hash.Sum(sum[:0])
	if !e.ready() {
		e.init(sum, len(events))
	} else if e.hash != sum || e.n != len(events) {
		res.release()
		h.replyKeyReused(w)
		return false
	}
	prefix := "http:" + r.RemoteAddr + "#" + strconv.FormatUint(h.requests.Add(1), 10) + "/"
	switch h.admit(e, res, prefix, events) {
	case admitClosed:
		res.release()
		h.replyUnavailable(w, "pushd is shutting down")
		return false
	case admitFull:
		res.release()
		h.replySaturated(w)
		return false
	}
	return true
}

// checkRequest answers what is wrong with the request before its body:
// method, token, shutdown, content type. It returns the body's format and
// true when the request may go on.
func (h *HTTP) checkRequest(w http.ResponseWriter, r *http.Request) (framing.Kind, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.replyError(w, http.StatusMethodNotAllowed, "method %s not allowed: POST events", r.Method)
		return 0, false
	}
	if h.tokenHash != nil && !h.authorized(r) {
		challenge := `Bearer realm="pushd"`
		if r.Header.Get("Authorization") != "" {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		h.replyError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return 0, false
	}
	if h.isClosed() {
		h.replyUnavailable(w, "pushd is shutting down")
		return 0, false
	}
	format, err := bodyFormat(r.Header.Get("Content-Type"))
	if err != nil {
		h.replyError(w, http.StatusUnsupportedMediaType, "%v", err)
		return 0, false
	}
	return format, true
}

// reserveBody takes room for the request's body in the buffered-bytes
// budget: all of it at once when the caller says its length, else as it is
// read (bodyReservation.reader). It answers 413 for a declared length over
// max_body_bytes and 429 when the budget has no room, before reading.
func (h *HTTP) reserveBody(w http.ResponseWriter, r *http.Request) (*bodyReservation, bool) {
	res := &bodyReservation{budget: h.budget}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		h.replyTooLarge(w)
		return nil, false
	}
	if r.ContentLength > 0 {
		if !h.budget.take(r.ContentLength) {
			h.replyBusy(w)
			return nil, false
		}
		res.taken.Store(r.ContentLength)
		res.declared = true
	}
	return res, true
}

// readEvents reads and frames the body within body_read_timeout, counting
// events as they come and hashing the body into hash; on a problem it
// answers and returns false.
func (h *HTTP) readEvents(w http.ResponseWriter, r *http.Request, format framing.Kind, res *bodyReservation, hash io.Writer) ([]framing.Event, bool) {
	rc := http.NewResponseController(w)
	// A deadline on the connection, so a caller trickling its body cannot
	// hold a handler (and shutdown) past body_read_timeout. Errors mean the
	// connection cannot take deadlines (tests' recorders); nothing to bound.
	_ = rc.SetReadDeadline(time.Now().Add(h.cfg.BodyReadTimeout))
	maxEvents, name := int(h.maxUnacked), "max_unacked_events"
	if limit := h.cfg.MaxEventsPerRequest; limit > 0 && limit < maxEvents {
		maxEvents, name = limit, "max_events_per_request"
	}
	body := io.TeeReader(res.reader(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)), hash)
	events, err := framing.Body(body, format, framing.Bounds{
		MaxEvents:   maxEvents,
		EventsLimit: name,
		Room:        func(n int) bool { return h.unacked.Load()+int64(n) <= h.maxUnacked },
	})
	if err == nil {
		// Clear the deadline: past it, the server's background read of
		// the connection would fail and cancel the request's context while
		// the handler waits for the events' outcome.
		_ = rc.SetReadDeadline(time.Time{})
		return events, true
	}
	// The body was not read to its end: close the connection after the
	// answer rather than let the server read the rest first (the deadline
	// stays, so that read could not outlast body_read_timeout anyway).
	w.Header().Set("Connection", "close")
	var (
		tooLarge  *http.MaxBytesError
		tooMany   *framing.TooManyEventsError
		malformed *framing.FormatError
		netErr    net.Error
	)
	switch {
	case errors.As(err, &tooLarge):
		h.replyTooLarge(w)
	case errors.As(err, &tooMany):
		h.replyError(w, http.StatusRequestEntityTooLarge, "%v", tooMany)
	case errors.Is(err, framing.ErrNoRoom):
		h.replySaturated(w)
	case errors.Is(err, errNoBudget):
		h.replyBusy(w)
	case errors.As(err, &malformed):
		h.replyError(w, http.StatusBadRequest, "%v", malformed)
	case errors.As(err, &netErr) && netErr.Timeout():
		h.replyError(w, http.StatusRequestTimeout, "body not read within body_read_timeout (%s)", h.cfg.BodyReadTimeout)
	default:
		h.replyError(w, http.StatusBadRequest, "reading body: %v", err)
	}
	return nil, false
}

// answer waits for the outcome of the entry's queued events, up to
// response_timeout, and says it. Past the timeout it withdraws what is not
// yet being sent, so that a 503 tells the truth: the events it names as
// failed will not land; those it names as pending may.
func (h *HTTP) answer(w http.ResponseWriter, r *http.Request, e *ingestEntry) {
	timer := time.NewTimer(h.cfg.ResponseTimeout)
	defer timer.Stop()
	why := "events not delivered"
	select {
	case <-e.waitIdle():
	case <-timer.C:
		why = fmt.Sprintf("events not delivered within response_timeout (%s)", h.cfg.ResponseTimeout)
		e.withdraw()
	case <-h.abort:
		why = "pushd is shutting down"
		e.withdraw()
	case <-r.Context().Done():
		// The caller went away; its events go on and are acknowledged
		// (with a key, a retry learns how they fared).
		h.countRequest(499)
		return
	}
	if e.key != "" {
		h.store.touch(e)
	}
	o := e.outcome()
	if len(o.failed) == 0 && len(o.pending) == 0 {
		h.reply(w, http.StatusOK, map[string]any{"accepted": o.accepted, "dead_lettered": o.deadLettered})
		return
	}
	msg := fmt.Sprintf("%s: %d of %d will not land; send them again (failed_events)", why, len(o.failed), e.n)
	if len(o.pending) > 0 {
		msg = fmt.Sprintf("%s: %d of %d will not land (failed_events) and %d are still being sent and may land (pending_events): "+
			"retry with the same Idempotency-Key to send only the first and learn the outcome of the others", why, len(o.failed), e.n, len(o.pending))
	}
	h.log.Warn("http request not fully delivered", "events", e.n, "failed", len(o.failed), "pending", len(o.pending))
	w.Header().Set("Retry-After", h.retryAfter())
	h.reply(w, http.StatusServiceUnavailable, map[string]any{
		"error":          msg,
		"accepted":       o.accepted,
		"dead_lettered":  o.deadLettered,
		"failed":         len(o.failed),
		"failed_events":  nonNil(o.failed),
		"pending_events": nonNil(o.pending),
	})
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

type admission int

const (
	admitted admission = iota
	admitFull
	admitClosed
)

// admit reserves room for the entry's free events and queues them, or
// reports why it cannot.
func (h *HTTP) admit(e *ingestEntry, res *bodyReservation, prefix string, events []framing.Event) admission {
	want := e.free()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return admitClosed
	}
	// Only admit adds to unacked, under mu, so check-then-add is safe.
	if h.unacked.Load()+int64(len(want)) > h.maxUnacked {
		return admitFull
	}
	idx, claims := e.queue(want, make([]Claim, len(want)))
	n := int64(len(idx))
	a := &attempt{acked: make([]atomic.Bool, n), body: res}
	a.remaining.Store(n)
	if n == 0 {
		res.release()
		return admitted
	}
	h.unacked.Add(n)
	if m := h.metrics; m != nil {
		m.unacked.Add(float64(n))
	}
	for j, i := range idx {
		be := events[i]
		ev := Event{Data: be.Data, Position: prefix + strconv.Itoa(i), Claim: claims[j]}
		if be.Err != nil {
			ev.Err = fmt.Errorf("%s: %w", ev.Position, be.Err)
		}
		// The channel holds maxUnacked events and at most that many are
		// admitted, so this never blocks.
		h.events <- queuedEvent{ev: ev, ack: h.ackFunc(e, a, j, i, claims[j])}
	}
	return admitted
}

// ackFunc returns the ack of the attempt's j-th event, index i of the body.
func (h *HTTP) ackFunc(e *ingestEntry, a *attempt, j, i int, c *Claim) Ack {
	return func(err error) {
		if a.acked[j].Swap(true) {
			h.log.Error("http event acknowledged twice", "event", i)
			return
		}
		result := "accepted"
		switch {
		case errors.Is(err, ErrWithdrawn):
			result = "withdrawn"
		case ackFailed(err):
			result = "failed"
		case err != nil:
			result = "dead_lettered"
		}
		// The body's bytes and the event's unacked slot go back, and the
		// event is counted, before it settles, which may answer the
		// request: a client that sends its next body on that answer finds
		// them free (no spurious 429 at max_unacked_events), and a scrape
		// after the answer sees the event counted.
		if a.remaining.Add(-1) == 0 {
			a.body.release()
		}
		h.unacked.Add(-1)
		if m := h.metrics; m != nil {
			m.unacked.Dec()
			m.events.WithLabelValues(result).Inc()
		}
		e.settle(i, c, err)
	}
}

// retryAfter is the Retry-After of a 429 or 503: the rest of Power BI's
// pause when the target is throttled, else the configured least wait.
func (h *HTTP) retryAfter() string {
	wait := h.retryWait
	if h.retryHint != nil {
		wait = max(wait, h.retryHint())
	}
	return strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))
}

func (h *HTTP) isClosed() bool {
	select {
	case <-h.closing:
		return true
	default:
		return false
	}
}

// authorized checks the bearer token in constant time (over digests, so that
// the token's length does not leak either).
func (h *HTTP) authorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(sum[:], h.tokenHash) == 1
}

// bodyFormat maps a Content-Type to the body format.
func bodyFormat(contentType string) (framing.Kind, error) {
	if contentType == "" {
		return framing.NDJSON, nil
	}
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return 0, fmt.Errorf("content type %q: %v", contentType, err)
	}
	switch mediaType {
	case "application/json":
		return framing.JSON, nil
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines", "application/jsonlines", "text/plain":
		return framing.NDJSON, nil
	}
	return 0, fmt.Errorf("content type %s not supported: send application/json (an object or an array of objects) or application/x-ndjson", mediaType)
}

func (h *HTTP) replySaturated(w http.ResponseWriter) {
	w.Header().Set("Retry-After", h.retryAfter())
	h.replyError(w, http.StatusTooManyRequests, "pushd is saturated (%d events in flight): retry later", h.unacked.Load())
}

func (h *HTTP) replyBusy(w http.ResponseWriter) {
	w.Header().Set("Retry-After", h.retryAfter())
	h.replyError(w, http.StatusTooManyRequests, "pushd holds max_buffered_bytes (%d) of request bodies: retry later", h.cfg.MaxBufferedBytes)
}

func (h *HTTP) replyKeyReused(w http.ResponseWriter) {
	h.replyError(w, http.StatusUnprocessableEntity, "Idempotency-Key was used for another body: use a new key for new events")
}

func (h *HTTP) replyTooLarge(w http.ResponseWriter) {
	h.replyError(w, http.StatusRequestEntityTooLarge, "body larger than max_body_bytes (%d)", h.cfg.MaxBodyBytes)
}

func (h *HTTP) replyUnavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", h.retryAfter())
	h.reply(w, http.StatusServiceUnavailable, map[string]any{"error": msg + ": retry later"})
}

func (h *HTTP) replyError(w http.ResponseWriter, code int, format string, args ...any) {
	h.reply(w, code, map[string]any{"error": fmt.Sprintf(format, args...)})
}

func (h *HTTP) reply(w http.ResponseWriter, code int, body map[string]any) {
	h.countRequest(code)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func (h *HTTP) countRequest(code int) {
	if m := h.metrics; m != nil {
		m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	}
}

// HTTPMetrics are the HTTP ingest source's Prometheus metrics.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	events   *prometheus.CounterVec
	unacked  prometheus.Gauge
}

// NewHTTPMetrics creates the HTTP ingest metrics and registers them on reg
// (nil: not registered).
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_http_ingest_requests_total",
			Help: "Ingest requests answered, by status code (499: the caller left before the answer).",
		}, []string{"code"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_http_ingest_events_total",
			Help: "Ingested events acknowledged, by result: accepted, dead_lettered, failed.",
		}, []string{"result"}),
		unacked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushd_http_ingest_unacked_events",
			Help: "Events accepted from callers and not yet acknowledged.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.events, m.unacked)
	}
	return m
}
