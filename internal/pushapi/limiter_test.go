package pushapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// runWorkers posts batches of batchRows rows from workers goroutines to the
// targets (round robin) until run has passed, inside the caller's synctest
// bubble, and fails the test on any error other than the end of the run.
func runWorkers(t *testing.T, c *Client, targets []Target, workers, batchRows int, run time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			tgt := targets[w%len(targets)]
			for ctx.Err() == nil {
				err := c.PostRows(ctx, tgt, rowsN(batchRows))
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("PostRows: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func syncClient(t *testing.T, h http.Handler, l Limits) *Client {
	t.Helper()
	c, _ := newTestClient(t, testConfig("https://api.example"), &http.Client{Transport: handlerTransport{h}}, nil, nil)
	c.SetLimits("ds", l)
	c.SetLimits("other", l)
	return c
}

func weights(reqs []recorded, rows bool) ([]time.Time, []int) {
	at := make([]time.Time, len(reqs))
	w := make([]int, len(reqs))
	for i, r := range reqs {
		at[i], w[i] = r.at, 1
		if rows {
			var body struct{ Rows []json.RawMessage }
			_ = json.Unmarshal([]byte(r.body), &body)
			w[i] = len(body.Rows)
		}
	}
	return at, w
}

// TestLimiterKeepsEveryWindow drives a dataset flat out and checks, at the
// server, that no sliding window of the quota's length ever holds more than
// the quota while at least 90% of it is used.
func TestLimiterKeepsEveryWindow(t *testing.T) {
	tests := []struct {
		name      string
		limits    Limits
		workers   int
		batchRows int
		run       time.Duration
		rows      bool // check the rows quota rather than the request quota
		quota     int
		window    time.Duration
	}{
		{name: "10 requests per 2s", limits: Limits{RequestsPerMinute: 10, RequestWindow: 2 * time.Second},
			workers: 8, batchRows: 1, run: 20 * time.Second, quota: 10, window: 2 * time.Second},
		{name: "Power BI default 120 requests per minute", limits: Limits{},
			workers: 8, batchRows: 100, run: 5 * time.Minute, quota: 120, window: time.Minute},
		{name: "rows per window", limits: Limits{RequestsPerMinute: 1000, RequestWindow: time.Second, RowsPerHour: 100_000, RowsWindow: 10 * time.Second, LargeTableRows: -1},
			workers: 5, batchRows: 3_000, run: time.Minute, rows: true, quota: 100_000, window: 10 * time.Second},
		{name: "batch bigger than the rows quota does not deadlock", limits: Limits{RowsPerHour: 4_000, RowsWindow: 10 * time.Second},
			workers: 2, batchRows: 5_000, run: 35 * time.Second, rows: true, quota: 5_000, window: 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &script{steps: []func(http.ResponseWriter, *http.Request){ok}}
				c := syncClient(t, s, tt.limits)
				runWorkers(t, c, []Target{{DatasetID: "ds", Table: "a"}, {DatasetID: "ds", Table: "b"}}, tt.workers, tt.batchRows, tt.run)
				at, w := weights(s.requests(), tt.rows)
				total := 0
				for _, x := range w {
					total += x
				}
				if got := maxInWindow(at, w, tt.window); got > tt.quota {
					t.Errorf("a %s window held %d, quota %d", tt.window, got, tt.quota)
				}
				allowed := float64(tt.quota) * tt.run.Seconds() / tt.window.Seconds()
				if tt.quota < tt.batchRows*tt.workers && tt.rows {
					allowed = 0 // oversize batches: only progress is checked
				}
				if float64(total) < 0.9*allowed || total == 0 {
					t.Errorf("used %d of %.0f allowed (%.1f%%), want >= 90%%", total, allowed, 100*float64(total)/allowed)
				}
				t.Logf("used %d of %.0f allowed; busiest window %d", total, allowed, maxInWindow(at, w, tt.window))
			})
		})
	}
}

// TestLimiterInFlight checks at most MaxInFlight requests per dataset are
// at the server at once, and that the bound is reached.
func TestLimiterInFlight(t *testing.T) {
	for _, limit := range []int{1, 2, 5} {
		t.Run(fmt.Sprintf("max %d", limit), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var now, peak atomic.Int32
				s := &script{steps: []func(http.ResponseWriter, *http.Request){func(w http.ResponseWriter, r *http.Request) {
					n := now.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					time.Sleep(3 * time.Second) // a slow Power BI
					now.Add(-1)
					w.WriteHeader(http.StatusOK)
				}}}
				c := syncClient(t, s, Limits{MaxInFlight: limit, RequestsPerMinute: 6000})
				runWorkers(t, c, []Target{{DatasetID: "ds", Table: "a"}}, 12, 1, 30*time.Second)
				if p := int(peak.Load()); p != limit {
					t.Errorf("peak in flight = %d, want %d", p, limit)
				}
			})
		})
	}
}

// TestThrottlePausesWholeDataset: after a 429 with Retry-After, no request
// of that dataset (any table) reaches the server before the Retry-After has
// passed, while another dataset goes on.
func TestThrottlePausesWholeDataset(t *testing.T) {
	const (
		datasetBody  = `{"error":{"code":"TooManyRequests","message":"You are over your rows per hour limit for this dataset. Retry your push later."}}`
		identityBody = `{"message":"You have exceeded the amount of requests allowed in the current time frame and further requests will fail. Retry in 5 seconds."}`
	)
	tests := []struct {
		name       string
		retryAfter func(now time.Time) string
		pause      time.Duration
		body       string
		identity   bool // every dataset pauses
	}{
		{"seconds", func(time.Time) string { return "5" }, 5 * time.Second, datasetBody, false},
		{"http date", func(now time.Time) string { return now.Add(8 * time.Second).UTC().Format(http.TimeFormat) }, 7 * time.Second, datasetBody, false},
		{"per-user throttling pauses every dataset", func(time.Time) string { return "5" }, 5 * time.Second, identityBody, true},
		{"a 429 without a body is taken for the identity", func(time.Time) string { return "5" }, 5 * time.Second, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var (
					mu        sync.Mutex
					throttled time.Time
				)
				s := &script{steps: []func(http.ResponseWriter, *http.Request){func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					defer mu.Unlock()
					now := time.Now()
					// The first request to ds after 3s is throttled.
					if contains(r.URL.Path, "/datasets/ds/") && throttled.IsZero() && now.Sub(start(t)) >= 3*time.Second {
						throttled = now
						w.Header().Set("Retry-After", tt.retryAfter(now))
						w.WriteHeader(http.StatusTooManyRequests)
						_, _ = w.Write([]byte(tt.body))
						return
					}
					w.WriteHeader(http.StatusOK)
				}}}
				c := syncClient(t, s, Limits{RequestsPerMinute: 600})
				runWorkers(t, c, []Target{{DatasetID: "ds", Table: "a"}, {DatasetID: "ds", Table: "b"}, {DatasetID: "other", Table: "a"}}, 6, 10, 20*time.Second)
				if throttled.IsZero() {
					t.Fatal("no 429 was sent")
				}
				var during, other, after int
				for _, r := range s.requests() {
					inPause := r.at.After(throttled) && r.at.Before(throttled.Add(tt.pause))
					switch {
					case inPause && contains(r.path, "/datasets/ds/"):
						during++
					case inPause:
						other++
					case r.at.After(throttled) && contains(r.path, "/datasets/ds/"):
						after++
					}
				}
				if during != 0 {
					t.Errorf("%d requests to the paused dataset within the Retry-After", during)
				}
				switch {
				case tt.identity && other != 0:
					t.Errorf("%d requests to the other dataset while Power BI throttled the identity", other)
				case !tt.identity && other == 0:
					t.Error("the other dataset was paused too")
				}
				if after == 0 {
					t.Error("the dataset never resumed")
				}
			})
		})
	}
}

// start returns the bubble's start time (synctest starts at 2000-01-01 UTC).
func start(*testing.T) time.Time { return time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) }

// TestLargeTableRule: once a table holds LargeTableRows rows, the dataset
// keeps to LargeTableRequestsPerHour per window, counting the requests sent
// before the rule applied, as the server does.
func TestLargeTableRule(t *testing.T) {
	tests := []struct {
		name    string
		limits  Limits
		crossAt int // request index after which the table is large (-1: from the start)
		// requests sent under the rule in 5 minutes: 3 per window, and
		// when crossed after 10 requests in the first 10s, none until those
		// 10 have left the window.
		wantMin, wantMax int
	}{
		{"crossed while posting", Limits{RequestsPerMinute: 60, LargeTableRows: 1_000, LargeTableRequestsPerHour: 3, LargeTableWindow: time.Minute}, 10, 12, 12},
		{"large from InitialTableRows", Limits{RequestsPerMinute: 60, LargeTableRows: 1_000, LargeTableRequestsPerHour: 3, LargeTableWindow: time.Minute, InitialTableRows: 5_000}, -1, 15, 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &script{steps: []func(http.ResponseWriter, *http.Request){ok}}
				c := syncClient(t, s, tt.limits)
				runWorkers(t, c, []Target{{DatasetID: "ds", Table: "a"}}, 3, 100, 5*time.Minute)
				reqs := s.requests()
				if !c.limiter("ds").isLarge() {
					t.Fatal("the dataset never came under the large-table rule")
				}
				// The server judges each request after the crossing by all
				// requests in its window (the emulator's model).
				from := tt.crossAt
				if from < 0 {
					from = 0
				}
				for j := from; j < len(reqs); j++ {
					n := 0
					for i := j; i >= 0 && reqs[i].at.After(reqs[j].at.Add(-time.Minute)); i-- {
						n++
					}
					if n > 3 {
						t.Fatalf("request %d at %s: %d requests in the hour window, quota 3", j, reqs[j].at.Sub(start(t)), n)
					}
				}
				if got := len(reqs) - from; got < tt.wantMin || got > tt.wantMax {
					t.Errorf("%d requests under the rule in 5 minutes, want %d..%d", got, tt.wantMin, tt.wantMax)
				}
			})
		})
	}
}

func TestWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := newWindow(10, time.Second)
	for i := range 4 {
		w.add(t0.Add(time.Duration(i)*100*time.Millisecond), 2)
	}
	tests := []struct {
		name string
		at   time.Duration
		n    int
		want time.Duration
	}{
		{"fits", 400 * time.Millisecond, 2, 0},
		{"needs the oldest gone", 400 * time.Millisecond, 4, 600*time.Millisecond + 1},
		{"needs two gone", 500 * time.Millisecond, 6, 600*time.Millisecond + 1},
		{"oversize waits for an empty window", 500 * time.Millisecond, 50, 800*time.Millisecond + 1},
		{"after the window", 1500 * time.Millisecond, 10, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ww := *w
			ww.at = append([]time.Time(nil), w.at...)
			ww.n = append([]int(nil), w.n...)
			if got := ww.delay(t0.Add(tt.at), tt.n); got != tt.want {
				t.Errorf("delay = %v, want %v", got, tt.want)
			}
		})
	}
}

// transit is a fake Power BI whose requests take time on the way in and on
// the way back: each request spends pre (chosen by the test's seeded
// sequence) before it arrives, where next records it, and post after,
// before its answer.
type transit struct {
	mu   sync.Mutex
	i    int
	seq  func(i int) (pre, post time.Duration)
	next http.Handler
}

func (h *transit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	pre, post := h.seq(h.i)
	h.i++
	h.mu.Unlock()
	time.Sleep(pre)
	h.next.ServeHTTP(w, r)
	time.Sleep(post)
}

// TestLimiterExactWhateverTheArrival: Power BI counts a request when it
// arrives, anywhere between its send and its answer. With round trips of up
// to 800ms split at random between the way in and the way back, no window of
// the quota's length at the server holds more than the quota (the worst
// cases: early requests arriving just before their answer, later ones just
// after their send), and the cost is about one round trip per window.
func TestLimiterExactWhateverTheArrival(t *testing.T) {
	tests := []struct {
		name          string
		limits        Limits
		batchRows     int
		rows          bool
		quota         int
		window        time.Duration
		minUsed       float64 // of the quota over the run
		split         func(r *rand.Rand) (pre, post time.Duration)
		workers, runS int
	}{
		{name: "requests, random split", limits: Limits{RequestsPerMinute: 10, RequestWindow: 2 * time.Second},
			batchRows: 1, quota: 10, window: 2 * time.Second, minUsed: 0.65, workers: 8, runS: 40,
			split: func(r *rand.Rand) (time.Duration, time.Duration) {
				rt := time.Duration(r.IntN(800)) * time.Millisecond
				pre := time.Duration(r.Int64N(int64(rt) + 1))
				return pre, rt - pre
			}},
		{name: "requests, arrival at either end", limits: Limits{RequestsPerMinute: 10, RequestWindow: 2 * time.Second},
			batchRows: 1, quota: 10, window: 2 * time.Second, minUsed: 0.65, workers: 8, runS: 40,
			split: func(r *rand.Rand) (time.Duration, time.Duration) {
				if r.IntN(2) == 0 {
					return 0, 500 * time.Millisecond
				}
				return 500 * time.Millisecond, 0
			}},
		{name: "rows, random split", limits: Limits{RequestsPerMinute: 1000, RequestWindow: time.Second, RowsPerHour: 1_000, RowsWindow: 2 * time.Second, LargeTableRows: -1},
			batchRows: 100, rows: true, quota: 1_000, window: 2 * time.Second, minUsed: 0.65, workers: 8, runS: 40,
			split: func(r *rand.Rand) (time.Duration, time.Duration) {
				rt := time.Duration(r.IntN(800)) * time.Millisecond
				pre := time.Duration(r.Int64N(int64(rt) + 1))
				return pre, rt - pre
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rnd := rand.New(rand.NewPCG(1, 2))
				s := &script{steps: []func(http.ResponseWriter, *http.Request){ok}}
				h := &transit{next: s, seq: func(int) (time.Duration, time.Duration) { return tt.split(rnd) }}
				c := syncClient(t, h, tt.limits)
				run := time.Duration(tt.runS) * time.Second
				runWorkers(t, c, []Target{{DatasetID: "ds", Table: "a"}, {DatasetID: "ds", Table: "b"}}, tt.workers, tt.batchRows, run)
				at, w := weights(s.requests(), tt.rows)
				total := 0
				for _, x := range w {
					total += x
				}
				if got := maxInWindow(at, w, tt.window); got > tt.quota {
					t.Errorf("a %s window at the server held %d, quota %d", tt.window, got, tt.quota)
				}
				allowed := float64(tt.quota) * run.Seconds() / tt.window.Seconds()
				if float64(total) < tt.minUsed*allowed {
					t.Errorf("used %d of %.0f allowed (%.1f%%), want >= %.0f%%", total, allowed, 100*float64(total)/allowed, 100*tt.minUsed)
				}
				t.Logf("used %d of %.0f allowed; busiest window %d", total, allowed, maxInWindow(at, w, tt.window))
			})
		})
	}
}
