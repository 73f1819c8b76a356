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

// windowLimiter returns a token bucket that never lets more than quota
// events happen in any window of length window (sliding, both ends
// included), given that every event takes its tokens at the moment it
// happens.
//
// A bucket with burst B refilled at r per second allows at most B + r·W
// events in any span W: B saved up at the start plus what refills during it.
// Choosing r = (quota − B)/W makes that bound exactly the quota; a small B
// keeps the pace smooth and wastes little (B = 1 for requests uses
// (quota−1)/quota of the quota). When quota ≤ B no such rate exists and the
// bucket refills at quota/W, which can exceed the quota by the burst once.
func windowLimiter(quota, burst int, window time.Duration) *rate.Limiter {
	per := float64(quota - burst)
	if per <= 0 {
		per = float64(quota)
	}
	return rate.NewLimiter(rate.Limit(per/window.Seconds()), burst)
}

// rowsBurst is the rows bucket's size: big enough for a full request
// (10,000 rows) under the default quota, at most half the hourly quota so
// the refill rate stays meaningful for small configured quotas.
func rowsBurst(rowsPerHour int) int {
	return max(1, min(MaxRowsPerRequest, rowsPerHour/2))
}

// datasetLimiter keeps one dataset under its quotas; its tables share it.
//
// Waiters pass through a gate one at a time, and a request takes its tokens
// (from the request and row buckets at once) only when both have enough, at
// the instant it leaves the gate to be sent. So the time a token is taken is
// the time the request goes out, which is what makes windowLimiter's bound
// hold for what Power BI sees (up to network jitter smaller than the gap
// between two requests).
//
// The large-table rule is kept with a log of the last
// LargeTableRequestsPerHour send times rather than a bucket: the hourly
// quota starts in the middle of a stream, and the requests sent before it
// applies still count in Power BI's window (and in the emulator's), which a
// bucket cannot remember. Once the rule is in force a request waits until
// the oldest logged send has left the window.
type datasetLimiter struct {
	id       string
	limits   Limits
	inFlight chan struct{}
	gate     chan struct{}
	burst    int // rows bucket size

	mu          sync.Mutex
	requests    *rate.Limiter
	rows        *rate.Limiter
	sends       []time.Time // ring of the last LargeTableRequestsPerHour send times
	next        int         // ring position of the oldest send once full
	large       bool        // a table reached LargeTableRows (sticky)
	pausedUntil time.Time
	posted      map[string]int64 // rows accepted per table, since start or DeleteRows
	pending     map[string]int64 // rows in flight per table
}

func newDatasetLimiter(id string, l Limits) *datasetLimiter {
	l = l.WithDefaults()
	d := &datasetLimiter{
		id:       id,
		limits:   l,
		inFlight: make(chan struct{}, l.MaxInFlight),
		gate:     make(chan struct{}, 1),
		burst:    rowsBurst(l.RowsPerHour),
		requests: windowLimiter(l.RequestsPerMinute, 1, l.RequestWindow),
		sends:    make([]time.Time, 0, l.LargeTableRequestsPerHour),
		posted:   make(map[string]int64),
		pending:  make(map[string]int64),
	}
	d.rows = windowLimiter(l.RowsPerHour, d.burst, l.RowsWindow)
	return d
}

// largeLocked reports whether a request to table falls under the
// large-table rule: some table already reached LargeTableRows, or this one
// will have once the rows in flight to it land.
func (d *datasetLimiter) largeLocked(table string) bool {
	if d.limits.LargeTableRows < 0 {
		return false
	}
	if d.large {
		return true
	}
	return d.posted[table]+d.pending[table]+int64(d.limits.InitialTableRows) >= int64(d.limits.LargeTableRows)
}

// largeDelayLocked is how long until one more request fits the large-table
// window.
func (d *datasetLimiter) largeDelayLocked(now time.Time) time.Duration {
	if len(d.sends) < cap(d.sends) {
		return 0
	}
	return d.sends[d.next].Add(d.limits.LargeTableWindow).Sub(now)
}

func (d *datasetLimiter) logSendLocked(now time.Time) {
	if len(d.sends) < cap(d.sends) {
		d.sends = append(d.sends, now)
		return
	}
	d.sends[d.next] = now
	d.next = (d.next + 1) % len(d.sends)
}

// isLarge reports whether the 250,000-row rule is in force for the dataset.
func (d *datasetLimiter) isLarge() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.large
}

// acquire waits, in ctx, for an in-flight slot, the end of any pause, one
// request token, the batch's row tokens and (under the large-table rule)
// room in the hourly window, then takes them. release gives the in-flight
// slot back; call addRows before it when the rows were accepted. A batch
// larger than the row bucket takes the whole bucket (it must not wait
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
	n := min(max(rows, 1), d.burst)
	for {
		now := clock.Now()
		d.mu.Lock()
		wait := d.pausedUntil.Sub(now)
		if wait <= 0 {
			wait = max(tokenDelay(d.requests, 1, now), tokenDelay(d.rows, n, now))
			if d.largeLocked(table) {
				wait = max(wait, d.largeDelayLocked(now))
			}
			// Nothing else takes tokens while the gate is held, so both
			// buckets hold what tokenDelay saw.
			if wait <= 0 && d.requests.AllowN(now, 1) && d.rows.AllowN(now, n) {
				d.logSendLocked(now)
				d.pending[table] += int64(rows)
				m.quota(d.id, d.requests.TokensAt(now), d.rows.TokensAt(now))
				d.mu.Unlock()
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

// pausedUntilTime returns the end of the current pause (zero when none).
func (d *datasetLimiter) pausedUntilTime() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pausedUntil
}

// addRows counts rows accepted into table and applies the 250,000-row rule.
// It reports whether this call put the dataset under the rule.
func (d *datasetLimiter) addRows(table string, n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.posted[table] += int64(n)
	if d.large || d.limits.LargeTableRows < 0 {
		return false
	}
	if d.posted[table]+int64(d.limits.InitialTableRows) >= int64(d.limits.LargeTableRows) {
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
