package pushapi

import (
	"context"
	"errors"
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

// bucket returns the token bucket that paces a quota evenly: quota tokens
// per window, burst tokens at most. It smooths the flow; the sliding window
// beside it (window) is what guarantees the quota.
func bucket(quota int, window time.Duration, burst int) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(float64(quota)/window.Seconds()), burst)
}

// waitForAnswer is what window.delay returns when only the answer to a
// request in flight can make room.
const waitForAnswer time.Duration = -1

// window is a sliding window of weighted requests that keeps a quota
// exactly although Power BI counts a request at an instant the client
// cannot see: when it arrives, somewhere between its send and its answer.
//
// A request is held (counted, with no end) from its send until its answer,
// and then counted at its answer time like an event of the window. A
// request of weight n is admitted at t only if the held requests and the
// answered ones in (t-length, t] weigh at most limit-n together with it.
//
// Why that is exact: suppose some window (u-length, u] of arrival times
// held more than the limit. Take the request k of those sent last; each
// other one j was sent before k and arrived after u-length, so it was
// answered after u-length too, while k was sent at or before its own
// arrival (at most u): when k was admitted, j was still held or answered
// within length of k's send, and was counted. So k's admission saw more
// than limit-n: a contradiction. The cost is one round trip per window: a
// request occupies the quota from its send to its answer plus the window,
// not the window alone.
type window struct {
	length time.Duration
	limit  int
	// raiseTo, when above 0, is a higher limit that applies from raiseAt
	// (see setLimit).
	raiseTo int
	raiseAt time.Time
	at      []time.Time
	n       []int
	head    int
	sum     int // weight of the answered requests in at/n
	held    int // weight of the requests sent and not answered
}

func newWindow(limit int, length time.Duration) *window {
	return &window{length: length, limit: limit}
}

// setLimit lowers the limit at once; a higher one applies only a window
// after now (or at once when immediate). A process's share grows when
// another process writing the dataset gave its part up, and that process's
// last requests may still be in Power BI's window: after one window they
// are not.
func (w *window) setLimit(now time.Time, limit int, immediate bool) {
	if limit <= w.limit || immediate {
		w.limit, w.raiseTo = limit, 0
		return
	}
	w.raiseTo, w.raiseAt = limit, now.Add(w.length)
}

func (w *window) prune(now time.Time) {
	if w.raiseTo > 0 && !now.Before(w.raiseAt) {
		w.limit, w.raiseTo = w.raiseTo, 0
	}
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

// delay is how long until a request of weight n fits (0: now), or
// waitForAnswer when the answered requests leaving the window cannot make
// room without an answer to a held one. A weight above the limit is treated
// as the limit: it waits for an empty window.
func (w *window) delay(now time.Time, n int) time.Duration {
	w.prune(now)
	n = min(n, w.limit)
	need := w.sum + w.held + n - w.limit
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
	return waitForAnswer
}

// hold counts a request of weight n from its send until answer.
func (w *window) hold(n int) { w.held += n }

// answer ends the hold of a request of weight n and counts it at now.
func (w *window) answer(now time.Time, n int) {
	w.held -= n
	w.add(now, n)
}

func (w *window) add(now time.Time, n int) {
	w.at = append(w.at, now)
	w.n = append(w.n, n)
	w.sum += n
}

// used is the weight counted in the window at now: answered in the last
// length, plus held.
func (w *window) used(now time.Time) int {
	w.prune(now)
	return w.sum + w.held
}

// share scales a quota to a share of it: rounded down, at least 1 (a
// process that may send nothing would hold its events forever).
func share(quota int, s float64) int {
	if s >= 1 {
		return quota
	}
	return max(1, int(math.Floor(float64(quota)*s+1e-9)))
}

// datasetLimiter keeps one dataset under its quotas; its tables share it.
//
// Each quota (requests per window, rows per window, and requests per hour
// under the large-table rule) is kept exactly by a sliding window that
// counts each request from its send to its answer plus the window (see
// window). Requests and rows are also paced by token buckets
// (golang.org/x/time/rate) at quota/window: requests with a burst of one,
// so they flow evenly rather than in a burst at the start of each window;
// rows with a burst of the whole quota, so a backlog is not held back below
// what Power BI accepts. Waiters pass through a gate one at a time; an
// answer wakes the waiter at the gate, since it may make room.
//
// When several processes write one dataset, each keeps to its share of
// every quota (setShare): the quotas, the in-flight bound and the
// large-table request quota are scaled down, and a table's row count (for
// the large-table rule) is estimated as this process's rows over its share.
type datasetLimiter struct {
	id     string
	limits Limits // the dataset's whole quotas, defaults applied
	gate   chan struct{}

	mu          sync.Mutex
	share       float64
	maxInFlight int
	inFlight    int
	// inFlightAt holds the in-flight count after each send of the last
	// request window, for the in-flight use ratio.
	inFlightAt  []levelAt
	burst       int // rows bucket size
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
	// wake, when set, ends the sleep of the waiter at the gate.
	wake context.CancelFunc
}

type levelAt struct {
	at time.Time
	n  int
}

func newDatasetLimiter(id string, l Limits) *datasetLimiter {
	l = l.WithDefaults()
	d := &datasetLimiter{
		id:          id,
		limits:      l,
		gate:        make(chan struct{}, 1),
		reqWindow:   newWindow(l.RequestsPerMinute, l.RequestWindow),
		rowsWindow:  newWindow(l.RowsPerHour, l.RowsWindow),
		largeWindow: newWindow(l.LargeTableRequestsPerHour, l.LargeTableWindow),
		fifo:        l.Retention == RetentionBasicFIFO,
		posted:      make(map[string]int64),
		pending:     make(map[string]int64),
	}
	d.setShareLocked(time.Time{}, l.Share, true)
	return d
}

// setShareLocked scales every quota to share s of the dataset's (0 or
// above 1: the whole). A smaller quota applies at once, a larger one a
// window of that quota after now (see window.setLimit) unless immediate;
// the in-flight bound applies at once.
func (d *datasetLimiter) setShareLocked(now time.Time, s float64, immediate bool) {
	if s <= 0 || s > 1 {
		s = 1
	}
	l := d.limits
	d.share = s
	d.maxInFlight = share(l.MaxInFlight, s)
	d.reqWindow.setLimit(now, share(l.RequestsPerMinute, s), immediate)
	d.rowsWindow.setLimit(now, share(l.RowsPerHour, s), immediate)
	d.largeWindow.setLimit(now, share(l.LargeTableRequestsPerHour, s), immediate)
	// Rows are not paced: a backlog may use the whole hourly quota at once
	// (Power BI counts rows per hour, not per second), so the bucket holds
	// the whole quota and the sliding window is what keeps the limit. The
	// buckets take the new rates at once: they only smooth, the windows
	// keep the quotas.
	reqs, rows := share(l.RequestsPerMinute, s), share(l.RowsPerHour, s)
	d.burst = rows
	if d.reqBucket == nil {
		d.reqBucket = bucket(reqs, l.RequestWindow, 1)
		d.rowsBucket = bucket(rows, l.RowsWindow, d.burst)
		return
	}
	d.reqBucket.SetLimitAt(now, rate.Limit(float64(reqs)/l.RequestWindow.Seconds()))
	d.rowsBucket.SetLimitAt(now, rate.Limit(float64(rows)/l.RowsWindow.Seconds()))
	d.rowsBucket.SetBurstAt(now, d.burst)
}

// setShare sets the share of the dataset's quotas this process keeps to and
// reports the one before. Requests in flight finish; the next ones wait
// under the new quotas. A larger share applies a window after now (each
// quota's own window) unless immediate: the first share a Kafka source
// learns applies at once.
func (d *datasetLimiter) setShare(now time.Time, s float64, immediate bool) (previous float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	previous = d.share
	d.setShareLocked(now, s, immediate)
	d.wakeLocked()
	return previous
}

func (d *datasetLimiter) wakeLocked() {
	if d.wake != nil {
		d.wake()
		d.wake = nil
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
// float up to FIFOMaxTableRows). When processes share the dataset, this
// one posted its share of the rows: the others post in proportion to
// theirs. d.mu is held.
func (d *datasetLimiter) heldLocked(table string, extra int64) int64 {
	n := int64(math.Ceil(float64(d.posted[table]+extra)/d.share)) + int64(d.limits.InitialTableRows)
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

// acquire waits, in ctx, for the end of any pause, an in-flight slot and
// room in every quota for one request of rows rows, then takes it. Call the
// returned release when the answer came (or the request failed): that is
// when the request starts leaving the quotas' windows. Call addRows before
// it when the rows were accepted. A batch larger than the row bucket takes
// the whole bucket, and one larger than the row quota waits for an empty
// window (neither may wait forever).
//
// grow, when not nil, is called once, at the instant the request is
// admitted, with the most rows the row quotas admit now (at least rows); it
// returns how many the request carries (up to room), and that is what the
// quotas count; none (every row withdrawn meanwhile) gives errNothingTaken
// and takes nothing. A sender whose rows are still arriving thus takes them
// when it may send, not before waiting (see Client.PostRowsFrom).
func (d *datasetLimiter) acquire(ctx context.Context, clock Clock, table string, rows int, grow func(room int) int, m *Metrics) (release func(), err error) {
	start := clock.Now()
	select {
	case d.gate <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	defer func() { <-d.gate }()
	rows = max(rows, 1)
	for {
		now := clock.Now()
		d.mu.Lock()
		wait := d.delayLocked(now, table, rows)
		if wait == 0 && grow != nil {
			// Outside the lock: taking rows may settle events (withdrawn
			// ones), whose acks run arbitrary code. The gate is held, so
			// no other request takes tokens meanwhile; answers only free
			// room. Then look again with the rows taken.
			room := max(rows, d.rowsRoomLocked(now))
			d.mu.Unlock()
			n := grow(room)
			grow = nil
			if n == 0 {
				return nil, errNothingTaken
			}
			rows = n
			continue
		}
		if wait == 0 && d.takeLocked(now, table, rows) {
			reqLeft := float64(d.reqWindow.limit - d.reqWindow.used(now))
			rowsLeft := float64(d.rowsWindow.limit - d.rowsWindow.used(now))
			d.mu.Unlock()
			m.quota(d.id, reqLeft, rowsLeft)
			m.waited(d.id, now.Sub(start))
			m.inFlightAdd(d.id, 1)
			return func() { d.release(clock, table, rows, m) }, nil
		}
		if wait == waitForAnswer {
			// Woken by the next answer; the window's length bounds the
			// sleep in case none comes to this limiter.
			wait = d.limits.RequestWindow
		}
		wait = max(wait, time.Microsecond)
		wctx, wake := context.WithCancel(ctx)
		d.wake = wake
		d.mu.Unlock()
		err := clock.Sleep(wctx, wait)
		wake()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
}

// delayLocked is how long a request of rows rows to table must wait: 0 when
// it may go now, waitForAnswer when only an answer can make room.
func (d *datasetLimiter) delayLocked(now time.Time, table string, rows int) time.Duration {
	if wait := d.pausedUntil.Sub(now); wait > 0 {
		return wait
	}
	if d.inFlight >= d.maxInFlight {
		return waitForAnswer
	}
	delays := []time.Duration{
		tokenDelay(d.reqBucket, 1, now), tokenDelay(d.rowsBucket, min(rows, d.burst), now),
		d.reqWindow.delay(now, 1), d.rowsWindow.delay(now, rows),
	}
	if d.largeLocked(table) {
		delays = append(delays, d.largeWindow.delay(now, 1))
	}
	wait := time.Duration(0)
	for _, w := range delays {
		if w == waitForAnswer {
			return waitForAnswer
		}
		wait = max(wait, w)
	}
	return wait
}

// takeLocked takes the tokens of a request that delayLocked let go and
// holds it in every window. Nothing else takes tokens while the gate is
// held, so both buckets hold what tokenDelay saw; false (never expected)
// means try again.
func (d *datasetLimiter) takeLocked(now time.Time, table string, rows int) bool {
	if !d.reqBucket.AllowN(now, 1) || !d.rowsBucket.AllowN(now, min(rows, d.burst)) {
		return false
	}
	d.reqWindow.hold(1)
	d.rowsWindow.hold(rows)
	if d.limits.LargeTableRows >= 0 {
		d.largeWindow.hold(1)
	}
	d.pending[table] += int64(rows)
	d.inFlight++
	d.noteInFlightLocked(now)
	return true
}

// release ends a request's hold: it is counted in every window from now,
// its answer time, and its in-flight slot is free.
func (d *datasetLimiter) release(clock Clock, table string, rows int, m *Metrics) {
	now := clock.Now()
	d.mu.Lock()
	d.reqWindow.answer(now, 1)
	d.rowsWindow.answer(now, rows)
	if d.limits.LargeTableRows >= 0 {
		d.largeWindow.answer(now, 1)
	}
	d.pending[table] -= int64(rows)
	d.inFlight--
	d.wakeLocked()
	d.mu.Unlock()
	m.inFlightAdd(d.id, -1)
}

// noteInFlightLocked records the in-flight count after a send and forgets
// the records older than a request window.
func (d *datasetLimiter) noteInFlightLocked(now time.Time) {
	cut := now.Add(-d.limits.RequestWindow)
	i := 0
	for i < len(d.inFlightAt) && !d.inFlightAt[i].at.After(cut) {
		i++
	}
	d.inFlightAt = append(d.inFlightAt[:0], d.inFlightAt[i:]...)
	d.inFlightAt = append(d.inFlightAt, levelAt{at: now, n: d.inFlight})
}

// QuotaUse is how much of a dataset's quotas (this process's share of
// them) the last window used: requests and rows counted over their
// windows (in flight included), and the peak of requests in flight during
// the last request window. Each ratio is used/allowed, 0..1.
type QuotaUse struct {
	Dataset                  string
	Share                    float64
	Requests, Rows, InFlight float64
}

// use reports the dataset's QuotaUse at now.
func (d *datasetLimiter) use(now time.Time) QuotaUse {
	d.mu.Lock()
	defer d.mu.Unlock()
	peak := d.inFlight
	cut := now.Add(-d.limits.RequestWindow)
	for _, l := range d.inFlightAt {
		if l.at.After(cut) {
			peak = max(peak, l.n)
		}
	}
	return QuotaUse{
		Dataset:  d.id,
		Share:    d.share,
		Requests: float64(d.reqWindow.used(now)) / float64(d.reqWindow.limit),
		Rows:     float64(d.rowsWindow.used(now)) / float64(d.rowsWindow.limit),
		InFlight: float64(peak) / float64(d.maxInFlight),
	}
}

// errNothingTaken is acquire's answer when grow took no rows: there is no
// request to send.
var errNothingTaken = errors.New("no rows left to send")

// rowsRoomLocked is how many rows the row quotas admit in a request sent
// at now: room in the window (answered and held rows) and in the bucket.
func (d *datasetLimiter) rowsRoomLocked(now time.Time) int {
	tokens := int(min(d.rowsBucket.TokensAt(now), float64(d.burst)))
	return max(0, min(d.rowsWindow.limit-d.rowsWindow.used(now), tokens))
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
	// heldLocked then estimates the table at 0 rows (about: the
	// initial rows scaled by this process's share cancel them).
	d.posted[table] = -int64(math.Floor(float64(d.limits.InitialTableRows) * d.share))
}
