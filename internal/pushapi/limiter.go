package pushapi

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Clock is the client's time source. The default uses the time package (so
// tests can run it inside a testing/synctest bubble); a test may inject a
// fake.
type Clock interface {
	Now() time.Time
	// Sleep waits for d, or returns ctx's error as soon as ctx ends.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// windowMargin is added to every quota window on the client side: Power BI
// (and the emulator) count requests when they arrive, and two requests sent
// exactly one window apart may arrive less than a window apart when the
// second travels faster. The margin absorbs that jitter: 5% of the window,
// at least 50ms (scaled-down test windows on a busy machine) and at most 1s
// (1.7% of a minute, nothing for an hour).
func windowMargin(w time.Duration) time.Duration {
	return min(max(w/20, 50*time.Millisecond), time.Second)
}

// bucket returns the token bucket that paces a quota evenly: quota tokens
// per window, burst tokens at most. It smooths the flow; the sliding window
// beside it (window) is what guarantees the quota.
func bucket(quota int, window time.Duration, burst int) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(float64(quota)/window.Seconds()), burst)
}

// window is a sliding window of weighted events, oldest first: it admits an
// event of weight n at t only if the events in (t-length, t] weigh at most
// limit-n together with it. This is the stricter reading of "per minute"
// (a fixed window is always satisfied by it), and the emulator's model.
type window struct {
	length time.Duration
	limit  int
	at     []time.Time
	n      []int
	head   int
	sum    int
}

func newWindow(limit int, length time.Duration) *window {
	return &window{length: length, limit: limit}
}

func (w *window) prune(now time.Time) {
	cut := now.Add(-w.length)
	for w.head < len(w.at) && !w.at[w.head].After(cut) {
		w.sum -= w.n[w.head]
		w.head++
	}
	switch {
	case w.head == len(w.at):
		w.at, w.n, w.head = w.at[:0], w.n[:0], 0
	case w.head > 64 && w.head > len(w.at)/2:
		k := copy(w.at, w.at[w.head:])
		copy(w.n, w.n[w.head:])
		w.at, w.n, w.head = w.at[:k], w.n[:k], 0
	}
}

// delay is how long until an event of weight n fits (0: now). A weight
// above the limit is treated as the limit: it waits for an empty window.
func (w *window) delay(now time.Time, n int) time.Duration {
	w.prune(now)
	n = min(n, w.limit)
	need := w.sum + n - w.limit
	if need <= 0 {
		return 0
	}
	freed := 0
	for i := w.head; i < len(w.at); i++ {
		freed += w.n[i]
		if freed >= need {
			return w.at[i].Add(w.length).Sub(now) + time.Nanosecond
		}
	}
	return w.length
}

func (w *window) add(now time.Time, n int) {
	w.at = append(w.at, now)
	w.n = append(w.n, n)
	w.sum += n
}

// datasetLimiter keeps one dataset under its quotas; its tables share it.
//
// Each quota (requests per window, rows per window, and requests per hour
// under the large-table rule) is kept by a sliding window of the sends made,
// counted over the quota's window plus windowMargin. Requests and rows are
// also paced by token buckets (golang.org/x/time/rate) at quota/window:
// requests with a burst of one, so they flow evenly rather than in a burst
// at the start of each window; rows with a burst of the whole quota, so a
// backlog is not held back below what Power BI accepts. Waiters pass through a gate one
// at a time, and a request records itself in every window and takes its
// tokens at the instant it leaves the gate to be sent: the recorded times
// are the send times, so no window of the quota's length ever holds more
// than the quota (see the package tests).
type datasetLimiter struct {
	id       string
	limits   Limits
	inFlight chan struct{}
	gate     chan struct{}
	burst    int // rows bucket size

	mu          sync.Mutex
	reqBucket   *rate.Limiter
	rowsBucket  *rate.Limiter
	reqWindow   *window
	rowsWindow  *window
	largeWindow *window // every send, checked once the large-table rule applies
	large       bool    // a table reached LargeTableRows (sticky)
	fifo        bool    // basicFIFO retention: a table holds at most FIFOMaxTableRows
	pausedUntil time.Time
	posted      map[string]int64 // rows accepted per table, since start or DeleteRows
	pending     map[string]int64 // rows in flight per table
}

func newDatasetLimiter(id string, l Limits) *datasetLimiter {
	l = l.WithDefaults()
	rw := l.RequestWindow + windowMargin(l.RequestWindow)
	ow := l.RowsWindow + windowMargin(l.RowsWindow)
	lw := l.LargeTableWindow + windowMargin(l.LargeTableWindow)
	// Rows are not paced: a backlog may use the whole hourly quota at once
	// (Power BI counts rows per hour, not per second), so the bucket holds
	// the whole quota and the sliding window is what keeps the limit.
	burst := max(1, l.RowsPerHour)
	return &datasetLimiter{
		id:          id,
		limits:      l,
		inFlight:    make(chan struct{}, l.MaxInFlight),
		gate:        make(chan struct{}, 1),
		burst:       burst,
		reqBucket:   bucket(l.RequestsPerMinute, rw, 1),
		rowsBucket:  bucket(l.RowsPerHour, ow, burst),
		reqWindow:   newWindow(l.RequestsPerMinute, rw),
		rowsWindow:  newWindow(l.RowsPerHour, ow),
		largeWindow: newWindow(l.LargeTableRequestsPerHour, lw),
		fifo:        l.Retention == RetentionBasicFIFO,
		posted:      make(map[string]int64),
		pending:     make(map[string]int64),
	}
}

// setRetention records the dataset's retention policy as Power BI reported
// it (it overrides Limits.Retention: the service knows better than the
// config).
func (d *datasetLimiter) setRetention(policy string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fifo = policy == RetentionBasicFIFO
}

// heldLocked is how many rows table holds once extra more rows land: what
// pushd posted plus InitialTableRows, but never more than a basicFIFO
// table keeps (Power BI drops its oldest rows past 200,000 and lets it
// float up to FIFOMaxTableRows). d.mu is held.
func (d *datasetLimiter) heldLocked(table string, extra int64) int64 {
	n := d.posted[table] + extra + int64(d.limits.InitialTableRows)
	if d.fifo {
		n = min(n, FIFOMaxTableRows)
	}
	return n
}

// largeLocked reports whether a request to table falls under the
// large-table rule: some table already holds LargeTableRows, or this one
// will once the rows in flight to it land. The requests sent before the
// rule applied count in its window, as they do in Power BI's.
func (d *datasetLimiter) largeLocked(table string) bool {
	if d.limits.LargeTableRows < 0 {
		return false
	}
	if d.large {
		return true
	}
	return d.heldLocked(table, d.pending[table]) >= int64(d.limits.LargeTableRows)
}

// isLarge reports whether the 250,000-row rule is in force for the dataset.
func (d *datasetLimiter) isLarge() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.large
}

// acquire waits, in ctx, for an in-flight slot, the end of any pause, and
// room in every quota for one request of rows rows, then takes it. release
// gives the in-flight slot back; call addRows before it when the rows were
// accepted. A batch larger than the row bucket takes the whole bucket, and
// one larger than the row quota waits for an empty window (neither may wait
// forever).
func (d *datasetLimiter) acquire(ctx context.Context, clock Clock, table string, rows int, m *Metrics) (release func(), err error) {
	start := clock.Now()
	select {
	case d.inFlight <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	select {
	case d.gate <- struct{}{}:
	case <-ctx.Done():
		<-d.inFlight
		return nil, context.Cause(ctx)
	}
	defer func() { <-d.gate }()
	rows = max(rows, 1)
	n := min(rows, d.burst)
	for {
		now := clock.Now()
		d.mu.Lock()
		wait := d.pausedUntil.Sub(now)
		if wait <= 0 {
			wait = max(tokenDelay(d.reqBucket, 1, now), tokenDelay(d.rowsBucket, n, now),
				d.reqWindow.delay(now, 1), d.rowsWindow.delay(now, rows))
			if d.largeLocked(table) {
				wait = max(wait, d.largeWindow.delay(now, 1))
			}
			// Nothing else takes tokens while the gate is held, so both
			// buckets hold what tokenDelay saw.
			if wait <= 0 && d.reqBucket.AllowN(now, 1) && d.rowsBucket.AllowN(now, n) {
				d.reqWindow.add(now, 1)
				d.rowsWindow.add(now, rows)
				if d.limits.LargeTableRows >= 0 {
					d.largeWindow.prune(now)
					d.largeWindow.add(now, 1)
				}
				d.pending[table] += int64(rows)
				reqLeft := float64(d.reqWindow.limit - d.reqWindow.sum)
				rowsLeft := float64(d.rowsWindow.limit - d.rowsWindow.sum)
				d.mu.Unlock()
				m.quota(d.id, reqLeft, rowsLeft)
				m.waited(d.id, now.Sub(start))
				m.inFlightAdd(d.id, 1)
				return func() {
					d.mu.Lock()
					d.pending[table] -= int64(rows)
					d.mu.Unlock()
					m.inFlightAdd(d.id, -1)
					<-d.inFlight
				}, nil
			}
			wait = max(wait, time.Microsecond)
		}
		d.mu.Unlock()
		if err := clock.Sleep(ctx, wait); err != nil {
			<-d.inFlight
			return nil, err
		}
	}
}

// tokenDelay is how long until lim holds n tokens, rounded up to the
// microsecond so that the bucket really holds them after the sleep.
func tokenDelay(lim *rate.Limiter, n int, now time.Time) time.Duration {
	missing := float64(n) - lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	r := float64(lim.Limit())
	if r <= 0 {
		return time.Hour
	}
	us := math.Ceil(missing / r * 1e6)
	return time.Duration(us+1) * time.Microsecond
}

// pause holds every request of the dataset until until (after a 429).
func (d *datasetLimiter) pause(until time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if until.After(d.pausedUntil) {
		d.pausedUntil = until
	}
}

// addRows counts rows accepted into table and applies the 250,000-row rule
// to the rows the table holds (see heldLocked). It reports whether this
// call put the dataset under the rule.
func (d *datasetLimiter) addRows(table string, n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.posted[table] += int64(n)
	if d.large || d.limits.LargeTableRows < 0 {
		return false
	}
	if d.heldLocked(table, 0) >= int64(d.limits.LargeTableRows) {
		d.large = true
		return true
	}
	return false
}

// resetTable forgets the rows of a table after DeleteRows emptied it. The
// hourly quota, once in force, stays: Power BI does not say it lifts.
func (d *datasetLimiter) resetTable(table string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.posted[table] = -int64(d.limits.InitialTableRows)
}
