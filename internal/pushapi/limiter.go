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
type datasetLimiter struct {
	id       string
	limits   Limits
	inFlight chan struct{}
	gate     chan struct{}
	burst    int // rows bucket size

	mu          sync.Mutex
	requests    *rate.Limiter // per minute, or per hour once a table is large
	rows        *rate.Limiter
	large       bool
	pausedUntil time.Time
	tableRows   map[string]int64
}

func newDatasetLimiter(id string, l Limits, now time.Time) *datasetLimiter {
	l = l.WithDefaults()
	d := &datasetLimiter{
		id:        id,
		limits:    l,
		inFlight:  make(chan struct{}, l.MaxInFlight),
		gate:      make(chan struct{}, 1),
		burst:     rowsBurst(l.RowsPerHour),
		requests:  windowLimiter(l.RequestsPerMinute, 1, time.Minute),
		tableRows: make(map[string]int64),
	}
	d.rows = windowLimiter(l.RowsPerHour, d.burst, time.Hour)
	if l.LargeTableRows >= 0 && l.InitialTableRows >= l.LargeTableRows {
		d.enterLargeLocked(now)
	}
	return d
}

// enterLargeLocked switches the request bucket to the hourly quota. The new
// bucket starts empty: requests sent in the last hour count against it.
func (d *datasetLimiter) enterLargeLocked(now time.Time) {
	d.large = true
	d.requests = windowLimiter(d.limits.LargeTableRequestsPerHour, 1, time.Hour)
	d.requests.AllowN(now, 1)
}

// isLarge reports whether the 250,000-row rule is in force.
func (d *datasetLimiter) isLarge() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.large
}

// acquire waits, in ctx, for an in-flight slot, the end of any pause, one
// request token and the batch's row tokens, then takes them. release gives
// the in-flight slot back. A batch larger than the row bucket takes the whole
// bucket (it must not wait forever).
func (d *datasetLimiter) acquire(ctx context.Context, clock Clock, rows int, m *Metrics) (release func(), err error) {
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
		req, rl := d.requests, d.rows
		d.mu.Unlock()
		if wait <= 0 {
			wait = max(tokenDelay(req, 1, now), tokenDelay(rl, n, now))
			if wait <= 0 && req.AllowN(now, 1) {
				if rl.AllowN(now, n) {
					m.quota(d.id, req.TokensAt(now), rl.TokensAt(now))
					m.waited(d.id, now.Sub(start))
					m.inFlightAdd(d.id, 1)
					return func() {
						m.inFlightAdd(d.id, -1)
						<-d.inFlight
					}, nil
				}
				// Cannot happen while the gate is held (nothing else
				// takes row tokens); give the request token back.
				req.AllowN(now, -1)
				wait = time.Microsecond
			}
		}
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
// It reports whether this call switched the dataset to the hourly quota.
func (d *datasetLimiter) addRows(table string, n int, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tableRows[table] += int64(n)
	if d.large || d.limits.LargeTableRows < 0 {
		return false
	}
	if d.tableRows[table]+int64(d.limits.InitialTableRows) >= int64(d.limits.LargeTableRows) {
		d.enterLargeLocked(now)
		return true
	}
	return false
}

// resetTable forgets the rows of a table after DeleteRows emptied it. The
// hourly quota, once in force, stays: Power BI does not say it lifts.
func (d *datasetLimiter) resetTable(table string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tableRows[table] = -int64(d.limits.InitialTableRows)
}
