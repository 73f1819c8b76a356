package pushapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const opPostRows = "PostRows"

// ClientOptions are a Client's optional collaborators.
type ClientOptions struct {
	// Logger receives retry and quota events (nil: discarded).
	Logger *slog.Logger
	// Metrics records requests, retries and quotas (nil: none).
	Metrics *Metrics
	// Clock is the time source for limiter waits, backoff and Retry-After
	// (nil: the time package, which testing/synctest controls).
	Clock Clock
}

// Client talks to the Power BI REST API. It is safe for concurrent use; its
// limiters are per dataset and shared by every caller.
type Client struct {
	api     string
	tokens  TokenProvider
	http    *http.Client
	retry   RetryConfig
	timeout time.Duration
	logger  *slog.Logger
	metrics *Metrics
	clock   Clock
	// jitter returns a random duration in [0, d]; tests replace it.
	jitter func(d time.Duration) time.Duration

	mu        sync.Mutex
	limits    map[string]Limits
	shares    map[string]float64 // set by SetShare
	datasets  map[string]*datasetLimiter
	retention map[string]string // defaultRetentionPolicy as Power BI reported it
	// identityPausedUntil: Power BI throttled the identity (not one
	// dataset) until then; new limiters start paused, other calls wait.
	identityPausedUntil time.Time
}

var _ Sender = (*Client)(nil)

// NewClient returns a client for cfg's API base. httpClient nil means
// NewHTTPClient(cfg).
func NewClient(cfg Config, tokens TokenProvider, httpClient *http.Client, opts ClientOptions) (*Client, error) {
	if tokens == nil {
		return nil, errors.New("pushapi.NewClient: nil TokenProvider")
	}
	ep, err := cfg.Endpoints()
	if err != nil {
		return nil, err
	}
	if httpClient == nil {
		if httpClient, err = NewHTTPClient(cfg); err != nil {
			return nil, err
		}
	}
	c := &Client{
		api:       ep.APIBase,
		tokens:    tokens,
		http:      httpClient,
		retry:     cfg.Retry.WithDefaults(),
		timeout:   cfg.Timeout,
		logger:    opts.Logger,
		metrics:   opts.Metrics,
		clock:     opts.Clock,
		jitter:    func(d time.Duration) time.Duration { return rand.N(d + 1) },
		limits:    make(map[string]Limits),
		shares:    make(map[string]float64),
		datasets:  make(map[string]*datasetLimiter),
		retention: make(map[string]string),
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.clock == nil {
		c.clock = realClock{}
	}
	c.metrics.watch(c.QuotaUse)
	return c, nil
}

// SetLimits sets the quotas of a dataset (zero fields take Power BI's
// defaults, see Limits). Call it before the first PostRows to that dataset;
// a later call starts a fresh limiter (requests already waiting finish
// under the old one). Datasets without SetLimits get the defaults.
func (c *Client) SetLimits(datasetID string, l Limits) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.shares[datasetID]; ok {
		l.Share = s
	}
	c.limits[datasetID] = l
	if _, ok := c.datasets[datasetID]; ok {
		c.datasets[datasetID] = c.newLimiterLocked(datasetID)
	}
}

// SetShare sets the share (0 < share <= 1) of the dataset's quotas this
// process keeps to, when several processes write the dataset: every quota
// of its Limits is scaled by it (see Limits.Share). It overrides
// Limits.Share and is logged when it changes. The first call for a dataset
// applies at once; later, a smaller share applies at once and a larger
// one after one window of each quota (the process that gave its share up
// may have requests in Power BI's window until then). A Kafka source calls
// it at every rebalance.
func (c *Client) SetShare(datasetID string, share float64) {
	if !(share > 0 && share <= 1) {
		share = 1
	}
	c.mu.Lock()
	_, before := c.shares[datasetID]
	c.shares[datasetID] = share
	l := c.limits[datasetID]
	l.Share = share
	c.limits[datasetID] = l
	previous := 1.0
	if d, ok := c.datasets[datasetID]; ok {
		previous = d.setShare(c.clock.Now(), share, !before)
	}
	c.mu.Unlock()
	c.metrics.share(datasetID, share)
	if share != previous {
		c.logger.Info("share of the dataset's quotas changed",
			"dataset", datasetID, "share", share, "previous", previous)
	}
}

// PausedFor returns how long the dataset's requests are still held by the
// pause a 429 asked for (its Retry-After), 0 when there is none: the HTTP
// source passes it on to its own callers' Retry-After.
func (c *Client) PausedFor(datasetID string) time.Duration {
	d := c.limiter(datasetID)
	now := c.clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	return max(0, d.pausedUntil.Sub(now))
}

func (c *Client) limiter(datasetID string) *datasetLimiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.datasets[datasetID]
	if !ok {
		d = c.newLimiterLocked(datasetID)
		c.datasets[datasetID] = d
	}
	return d
}

// newLimiterLocked makes a dataset's limiter from its limits and, when
// Power BI reported it, its retention policy. c.mu is held.
func (c *Client) newLimiterLocked(datasetID string) *datasetLimiter {
	l := c.limits[datasetID]
	if r, ok := c.retention[datasetID]; ok {
		l.Retention = r
	}
	d := newDatasetLimiter(datasetID, l)
	c.metrics.share(datasetID, d.share)
	d.pausedUntil = c.identityPausedUntil
	return d
}

// learnRetention records a dataset's defaultRetentionPolicy from a Power BI
// answer that carries it (the answer to its creation): the limiter then
// counts what its tables can hold (a basicFIFO table never reaches the
// 250,000-row rule).
func (c *Client) learnRetention(datasetID, policy string) {
	if datasetID == "" || (policy != RetentionNone && policy != RetentionBasicFIFO) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.retention[datasetID] = policy
	if d, ok := c.datasets[datasetID]; ok {
		d.setRetention(policy)
	}
}

// QuotaUse reports, for every dataset this client has posted to, how much
// of its quotas the last window used, in dataset order.
func (c *Client) QuotaUse() []QuotaUse {
	c.mu.Lock()
	ds := make([]*datasetLimiter, 0, len(c.datasets))
	for _, d := range c.datasets {
		ds = append(ds, d)
	}
	c.mu.Unlock()
	now := c.clock.Now()
	out := make([]QuotaUse, len(ds))
	for i, d := range ds {
		out[i] = d.use(now)
	}
	slices.SortFunc(out, func(a, b QuotaUse) int { return strings.Compare(a.Dataset, b.Dataset) })
	return out
}

// PostRows posts already-encoded rows (each one JSON object) to t's table
// as {"rows":[...]}, waiting for the dataset's quotas first.
//
// Contract: PostRows retries what can succeed later (429 after its
// Retry-After, which also pauses every request to the dataset; 5xx; 408;
// timeouts; refused, reset or cut connections) with capped exponential
// backoff and full jitter, and renews the token once on a 401 or a 403
// TokenExpired. It returns nil when Power BI accepted every row, an error
// wrapping ctx's error when ctx ended first (the rows may or may not have
// landed: at least once), or a permanent error (IsPermanent): an *APIError,
// or ErrRetriesExhausted once RetryConfig.MaxElapsed has passed. It never
// splits a batch: when IsRowError(err), the caller splits it to isolate the
// rows Power BI refuses. A token that cannot be obtained is retried like an
// outage (it says nothing about the rows). rows should hold at most
// MaxRowsPerRequest rows, and at most the dataset's RowsPerHour: a batch
// over the rows quota can never be accepted.
func (c *Client) PostRows(ctx context.Context, t Target, rows []json.RawMessage) error {
	if len(rows) == 0 {
		return nil
	}
	if t.DatasetID == "" || t.Table == "" {
		return &permanentError{fmt.Errorf("posting rows: target needs dataset_id and table, got %+v", t)}
	}
	lim := c.limiter(t.DatasetID)
	c.metrics.batch(t.DatasetID, t.Table, len(rows))
	cl := &call{
		op:       opPostRows,
		method:   http.MethodPost,
		url:      c.tableURL(t.WorkspaceID, t.DatasetID, t.Table) + "/rows",
		rowsBody: rows,
		dataset:  t.DatasetID,
		table:    t.Table,
		limiter:  lim,
		rows:     len(rows),
	}
	if err := c.do(ctx, cl); err != nil {
		return postError(len(rows), t, err)
	}
	c.metrics.accepted(t.DatasetID, t.Table, len(rows))
	return nil
}

// postError wraps the error of a POST rows call of n rows to t; a refusal
// of the table itself is marked ErrTableRefused.
func postError(n int, t Target, err error) error {
	var ae *APIError
	if errors.As(err, &ae) && isTableRefusal(ae) {
		return fmt.Errorf("posting %d rows to table %q of dataset %s: %w, so the batch is neither split nor dead-lettered and the pipeline stops (its events are not acknowledged and come again): delete the table's rows or point the pipeline at another table, then restart: %w", n, t.Table, t.DatasetID, ErrTableRefused, err)
	}
	return fmt.Errorf("posting %d rows to table %q of dataset %s: %w", n, t.Table, t.DatasetID, err)
}

// PostRowsFrom is PostRows for rows that are still gathering: it waits for
// the dataset's quotas as PostRows does and, at the instant they admit the
// request, calls take with the most rows they admit now (at least first),
// then posts the rows take returns (first to room rows, each one JSON
// object, unchanged until PostRowsFrom returns). So a request that had to
// wait carries what arrived while it waited, instead of what was there when
// it began to. take is called at most once, and not at all when ctx ends or
// the request fails before it is admitted (the error says why); retries
// send the same rows. When take returns no rows, nothing is sent and the
// quotas are left as they were. Errors are PostRows's.
func (c *Client) PostRowsFrom(ctx context.Context, t Target, first int, take func(room int) []json.RawMessage) error {
	if t.DatasetID == "" || t.Table == "" {
		return &permanentError{fmt.Errorf("posting rows: target needs dataset_id and table, got %+v", t)}
	}
	cl := &call{
		op:      opPostRows,
		method:  http.MethodPost,
		url:     c.tableURL(t.WorkspaceID, t.DatasetID, t.Table) + "/rows",
		dataset: t.DatasetID,
		table:   t.Table,
		limiter: c.limiter(t.DatasetID),
		rows:    max(first, 1),
		take:    take,
	}
	if err := c.do(ctx, cl); err != nil {
		return postError(cl.rows, t, err)
	}
	if cl.rows > 0 {
		c.metrics.accepted(t.DatasetID, t.Table, cl.rows)
	}
	return nil
}

// grow is the limiter's hook for a call whose rows are taken when it is
// admitted (PostRowsFrom); nil for every other call.
func (c *Client) grow(cl *call) func(room int) int {
	if cl.take == nil {
		return nil
	}
	return func(room int) int {
		cl.rowsBody = cl.take(room)
		cl.take = nil
		cl.rows = len(cl.rowsBody)
		if cl.rows > 0 {
			c.metrics.batch(cl.dataset, cl.table, cl.rows)
		}
		return cl.rows
	}
}

// rowsReader streams {"rows":[r1,r2,...]} from encoded rows without
// decoding them, and without a copy of the body: a 15 MB batch costs no
// second 15 MB (the rows are kept anyway, for a retry or a split). Each
// attempt reads a new one.
type rowsReader struct {
	rows  []json.RawMessage
	next  int    // the next row to queue
	comma bool   // the comma before rows[next] is queued
	done  bool   // the closing "]}" is queued
	part  []byte // what is left of the piece being read
}

func newRowsReader(rows []json.RawMessage) *rowsReader {
	return &rowsReader{rows: rows, part: []byte(`{"rows":[`)}
}

// rowsBodyLen is the length of the body a rowsReader makes of rows.
func rowsBodyLen(rows []json.RawMessage) int64 {
	n := len(`{"rows":[]}`) + max(len(rows)-1, 0) // commas
	for _, r := range rows {
		n += len(r)
	}
	return int64(n)
}

func (r *rowsReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(r.part) == 0 && !r.advance() {
			break
		}
		c := copy(p[n:], r.part)
		n += c
		r.part = r.part[c:]
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// advance queues the next piece of the body (a comma, a row, the closing);
// false after the last.
func (r *rowsReader) advance() bool {
	switch {
	case r.next > 0 && r.next < len(r.rows) && !r.comma:
		r.part, r.comma = []byte{','}, true
	case r.next < len(r.rows):
		r.part = r.rows[r.next]
		r.next++
		r.comma = false
	case !r.done:
		r.part, r.done = []byte("]}"), true
	default:
		return false
	}
	return true
}

func (c *Client) datasetsURL(workspaceID string) string {
	if workspaceID == "" {
		return c.api + "/v1.0/myorg/datasets"
	}
	return c.api + "/v1.0/myorg/groups/" + url.PathEscape(workspaceID) + "/datasets"
}

func (c *Client) datasetURL(workspaceID, datasetID string) string {
	return c.datasetsURL(workspaceID) + "/" + url.PathEscape(datasetID)
}

func (c *Client) tableURL(workspaceID, datasetID, table string) string {
	return c.datasetURL(workspaceID, datasetID) + "/tables/" + url.PathEscape(table)
}

// call is one API operation, possibly sent several times.
type call struct {
	op, method, url string
	body            []byte
	rowsBody        []json.RawMessage // PostRows: streamed by a rowsReader, not copied
	dataset, table  string
	limiter         *datasetLimiter // PostRows only
	rows            int
	// take gives a PostRowsFrom call its rows (rowsBody) when the limiter
	// admits it; nil after.
	take func(room int) []json.RawMessage
	out  any // decoded from a successful response's JSON body
}

// outcome is the result of one attempt.
type outcome struct {
	err        error
	retryable  bool
	retryAfter time.Duration // from the Retry-After header, capped
	throttled  bool          // 429
	identity   bool          // a 429 that throttles the identity, not the dataset
	authRetry  bool          // 401 or 403 TokenExpired
	token      string
}

// do sends cl until it succeeds, fails permanently, runs out of retry
// budget or ctx ends.
func (c *Client) do(ctx context.Context, cl *call) error {
	start := c.clock.Now()
	renewed := false
	for attempt := 1; ; attempt++ {
		o := c.attempt(ctx, cl)
		if o.err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last attempt: %v)", context.Cause(ctx), o.err)
		}
		if o.authRetry {
			if renewed {
				return o.err
			}
			renewed = true
			c.tokens.Invalidate(o.token)
			c.metrics.retry(cl.dataset, cl.table)
			c.logger.Info("token refused; renewing it and retrying once",
				"dataset", cl.dataset, "table", cl.table, "attempt", attempt, "err", o.err)
			continue
		}
		if !o.retryable {
			return o.err
		}
		delay := max(c.backoff(attempt), o.retryAfter)
		now := c.clock.Now()
		if o.throttled {
			c.pauseThrottled(cl, o, now.Add(delay))
			c.metrics.throttle(cl.dataset, cl.table, delay)
		}
		if c.retry.MaxElapsed > 0 && now.Add(delay).Sub(start) > c.retry.MaxElapsed {
			return fmt.Errorf("%w: %d attempts in %s: %w", ErrRetriesExhausted, attempt, now.Sub(start).Round(time.Millisecond), o.err)
		}
		c.metrics.retry(cl.dataset, cl.table)
		// wait is pushd's own pause before the next attempt; retry_after is
		// what the server asked for, logged only when it sent Retry-After.
		attrs := []any{"op", cl.op, "dataset", cl.dataset, "table", cl.table, "attempt", attempt, "wait", delay}
		if o.retryAfter > 0 {
			attrs = append(attrs, "retry_after", o.retryAfter)
		}
		c.logger.Warn("request failed; retrying", append(attrs, "err", o.err)...)
		if err := c.clock.Sleep(ctx, delay); err != nil {
			return fmt.Errorf("%w (last attempt: %v)", err, o.err)
		}
	}
}

// backoff is the capped exponential backoff of an attempt, with full jitter.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.retry.InitialBackoff
	for i := 1; i < attempt && d < c.retry.MaxBackoff; i++ {
		d *= 2
	}
	return c.jitter(min(d, c.retry.MaxBackoff))
}

func (c *Client) attempt(ctx context.Context, cl *call) outcome {
	if w := c.identityWait(); w > 0 && cl.limiter == nil {
		if err := c.clock.Sleep(ctx, w); err != nil {
			return outcome{err: fmt.Errorf("waiting for Power BI's throttling of this identity to end: %w", err)}
		}
	}
	// A token first, so that an identity provider that fails does not use
	// up the dataset's quota; tokens failing is an outage or a
	// configuration problem, never a property of the rows: retry (bounded
	// by MaxElapsed) rather than dead-letter data.
	token, err := c.tokens.Token(ctx)
	if err != nil {
		return outcome{err: err, retryable: ctx.Err() == nil}
	}
	if cl.limiter != nil {
		release, err := cl.limiter.acquire(ctx, c.clock, cl.table, cl.rows, c.grow(cl), c.metrics)
		if errors.Is(err, errNothingTaken) {
			return outcome{} // PostRowsFrom's take found nothing left to send
		}
		if err != nil {
			return outcome{err: fmt.Errorf("waiting for the dataset's quota: %w", err)}
		}
		defer release()
		// The wait can outlast the token taken before it (a paused
		// dataset waits up to max_retry_after): take it again, which is a
		// cache lookup while it is still valid.
		if token, err = c.tokens.Token(ctx); err != nil {
			return outcome{err: err, retryable: ctx.Err() == nil}
		}
	}
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(actx, cl.method, cl.url, body)
	if err != nil {
		return outcome{err: &permanentError{fmt.Errorf("building %s request: %w", cl.op, err)}}
	}
	if cl.rowsBody != nil {
		rows := cl.rowsBody
		req.Body = io.NopCloser(newRowsReader(rows))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(newRowsReader(rows)), nil }
		req.ContentLength = rowsBodyLen(rows)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if cl.body != nil || cl.rowsBody != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	sent := c.clock.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.metrics.request(cl.dataset, cl.table, 0, 0)
		if isPermanentTransportError(err) {
			return outcome{err: &permanentError{err}}
		}
		return outcome{err: err, retryable: true}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		var rerr error
		if cl.out != nil {
			rerr = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(cl.out)
			if errors.Is(rerr, io.EOF) {
				rerr = nil // empty body: nothing to decode
			}
		}
		if rerr == nil {
			_, rerr = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		}
		if rerr == nil && cl.limiter != nil && cl.rows > 0 && cl.limiter.addRows(cl.table, cl.rows) {
			c.logger.Warn("table reached the large-table row count; dataset limited to its hourly request quota",
				"dataset", cl.dataset, "table", cl.table, "rows", cl.limiter.limits.LargeTableRows,
				"requests_per_hour", cl.limiter.limits.LargeTableRequestsPerHour)
		}
		c.metrics.request(cl.dataset, cl.table, resp.StatusCode, c.clock.Now().Sub(sent))
		if rerr != nil {
			// The answer was cut: the rows probably landed, but only a
			// retry can tell (and may duplicate them: at least once).
			return outcome{err: fmt.Errorf("reading %s response: %w", cl.op, rerr), retryable: true}
		}
		return outcome{}
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	c.metrics.request(cl.dataset, cl.table, resp.StatusCode, c.clock.Now().Sub(sent))
	ae := newAPIError(cl.op, resp.StatusCode, resp.Header, data)
	o := outcome{err: ae, token: token}
	switch {
	case resp.StatusCode == http.StatusUnauthorized,
		resp.StatusCode == http.StatusForbidden && ae.Code == "TokenExpired":
		o.authRetry = true
	case retryableStatus(resp.StatusCode):
		o.retryable = true
		o.throttled = resp.StatusCode == http.StatusTooManyRequests
		o.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.clock.Now(), c.retry.MaxRetryAfter)
		o.identity = o.throttled && throttlesIdentity(ae)
		if o.throttled && o.retryAfter > 0 {
			// Hold at once what the 429 throttles (the dataset, or every
			// dataset of the identity): requests leaving the limiters
			// meanwhile would be wasted.
			c.pauseThrottled(cl, o, c.clock.Now().Add(o.retryAfter))
		}
	}
	return o
}

// pauseThrottled holds what a 429 throttles until until: every dataset
// this client writes to when Power BI throttles the identity (and the
// calls made outside the limiters), else the dataset of cl.
func (c *Client) pauseThrottled(cl *call, o outcome, until time.Time) {
	if !o.identity {
		if cl.limiter != nil {
			cl.limiter.pause(until)
		}
		return
	}
	c.mu.Lock()
	first := until.After(c.identityPausedUntil) && !c.identityPausedUntil.After(c.clock.Now())
	if until.After(c.identityPausedUntil) {
		c.identityPausedUntil = until
	}
	lims := make([]*datasetLimiter, 0, len(c.datasets))
	for _, d := range c.datasets {
		lims = append(lims, d)
	}
	c.mu.Unlock()
	for _, d := range lims {
		d.pause(until)
	}
	if first {
		c.logger.Warn("Power BI throttles this identity, not one dataset; pausing every dataset it writes to",
			"op", cl.op, "dataset", cl.dataset, "retry_after", o.retryAfter, "err", o.err)
	}
}

// identityWait is how long calls must still wait after Power BI throttled
// the identity (0: none).
func (c *Client) identityWait() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.identityPausedUntil.Sub(c.clock.Now())
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// It returns 0 when absent or unparseable, and at most limit.
func parseRetryAfter(v string, now time.Time, limit time.Duration) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > limit.Seconds() {
			return limit
		}
		d = time.Duration(secs * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), limit)
}
