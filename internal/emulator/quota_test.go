package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRowsPerRequest: 10,000 rows accepted, 10,001 refused.
func TestRowsPerRequest(t *testing.T) {
	e := start(t, nil)
	id := e.dataset("")
	wantStatus(t, e.post(id, 0, 10_000), http.StatusOK)
	r := e.post(id, 10_000, 10_001)
	wantError(t, r, http.StatusBadRequest, "BadRequest")
	if !strings.Contains(string(r.body), "10000") {
		t.Fatalf("message does not name the limit: %s", r.body)
	}
	if n := e.s.RowCount(id, "T"); n != 10_000 {
		t.Fatalf("table holds %d rows, want 10000", n)
	}
}

// TestBodySize: a body over the limit gets 413, at the limit it is read.
func TestBodySize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		chunked bool
	}{{"content-length", false}, {"chunked", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, nil)
			id := e.dataset("")
			big := rowsBody(0, 10_000)
			// pad with whitespace (valid JSON) past 16 MiB
			over := append(append([]byte{}, big[:len(big)-1]...), bytes.Repeat([]byte(" "), 16<<20)...)
			over = append(over, '}')
			var body io.Reader = bytes.NewReader(over)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length
			}
			req, _ := http.NewRequest("POST", e.s.URL()+rowsPath(id, "T"), body)
			req.Header.Set("Authorization", "Bearer "+e.tok)
			resp, err := e.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantError(t, response{status: resp.StatusCode, header: resp.Header, body: b}, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge")
		})
	}
}

// TestRequestsPerMinute: the 121st POST rows in a minute gets 429 with a
// Retry-After after which the next POST succeeds.
func TestRequestsPerMinute(t *testing.T) {
	e := start(t, nil)
	id := e.dataset("")
	for i := range 120 {
		wantStatus(t, e.post(id, i, 1), http.StatusOK)
		if i%10 == 9 {
			e.clock.Advance(time.Second) // the first ten arrive at t0, the next at t0+1s, …
		}
	}
	r := e.post(id, 120, 1)
	wantError(t, r, http.StatusTooManyRequests, "TooManyRequests")
	// the oldest request left the window 60s after t0; the clock is at t0+12s
	if got := r.retryAfter(); got != 48 {
		t.Fatalf("Retry-After = %d, want 48", got)
	}
	e.clock.Advance(47 * time.Second)
	r = e.post(id, 120, 1)
	wantError(t, r, http.StatusTooManyRequests, "TooManyRequests")
	if got := r.retryAfter(); got != 1 {
		t.Fatalf("Retry-After one second before = %d, want 1", got)
	}
	e.clock.Advance(time.Second)
	wantStatus(t, e.post(id, 120, 1), http.StatusOK)
	ds := e.s.Stats().Datasets[id]
	if ds.Throttled != 2 || ds.PostRows != 121 {
		t.Fatalf("stats: throttled %d, post_rows %d", ds.Throttled, ds.PostRows)
	}
	// the quota is per dataset: another dataset is not throttled
	other := e.dataset("")
	wantStatus(t, e.post(other, 0, 1), http.StatusOK)
}

// TestInFlight: a 6th concurrent POST rows gets 429 while five are in flight.
func TestInFlight(t *testing.T) {
	e := start(t, func(c *Config) { c.Now = nil })
	id := e.dataset("")
	var wg sync.WaitGroup
	writers := make([]*io.PipeWriter, 5)
	statuses := make([]int, 5)
	for i := range writers {
		pr, pw := io.Pipe()
		writers[i] = pw
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", e.s.URL()+rowsPath(id, "T"), pr)
			req.Header.Set("Authorization", "Bearer "+e.tok)
			resp, err := e.c.Do(req)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
		_, _ = pw.Write([]byte(`{"rows":[`)) // the handler now waits for the rest
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.s.Stats().Datasets[id].InFlight < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("in flight = %d, want 5", e.s.Stats().Datasets[id].InFlight)
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := e.post(id, 0, 1)
	wantError(t, r, http.StatusTooManyRequests, "TooManyRequests")
	if r.retryAfter() < 1 {
		t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
	}
	for i, pw := range writers {
		_, _ = fmt.Fprintf(pw, `{"n":%d}]}`, i)
		pw.Close()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("request %d answered %d", i, s)
		}
	}
	wantStatus(t, e.post(id, 5, 1), http.StatusOK)
	st := e.s.Stats()
	if st.Datasets[id].MaxInFlight != 5 || st.MaxInFlight != 5 || st.Throttled != 1 {
		t.Fatalf("stats: dataset max in flight %d, server %d, throttled %d", st.Datasets[id].MaxInFlight, st.MaxInFlight, st.Throttled)
	}
}

// TestRowsPerHour: the rows budget (1,000,000 an hour, scaled down to
// 10,000 so the test stays fast under -race), then 429 with a Retry-After
// that frees enough rows.
func TestRowsPerHour(t *testing.T) {
	e := start(t, func(c *Config) { c.Limits.RowsPerWindow = 10_000 })
	id := e.dataset("")
	body := rowsBody(0, 100)
	for i := range 100 {
		wantStatus(t, e.do("POST", rowsPath(id, "T"), body), http.StatusOK)
		if i%2 == 1 {
			e.clock.Advance(time.Minute) // 100 requests in 50 minutes: under 120 a minute
		}
	}
	// 10,000 rows accepted at t0 … t0+49m; now t0+50m
	r := e.post(id, 0, 1)
	wantError(t, r, http.StatusTooManyRequests, "TooManyRequests")
	if !strings.Contains(string(r.body), "rows per hour") {
		t.Fatalf("message = %s", r.body)
	}
	if got := r.retryAfter(); got != 10*60 {
		t.Fatalf("Retry-After = %d, want 600", got)
	}
	e.clock.Advance(10 * time.Minute)
	wantStatus(t, e.post(id, 0, 100), http.StatusOK)
	wantStatus(t, e.post(id, 0, 100), http.StatusOK) // the two posts of t0 left the window
	wantError(t, e.post(id, 0, 1), http.StatusTooManyRequests, "TooManyRequests")
	if got := e.s.Stats().Datasets[id].RowsAccepted; got != 10_200 {
		t.Fatalf("rows accepted = %d", got)
	}
}

// TestLargeTableRule: once a table holds 250,000 rows the dataset gets 120
// POST rows an hour (scaled down: 1,000 rows and 5 requests).
func TestLargeTableRule(t *testing.T) {
	e := start(t, func(c *Config) {
		c.Limits.LargeTableRows = 1_000
		c.Limits.LargeTableRequestsPerWindow = 5
	})
	id := e.dataset("")
	wantStatus(t, e.post(id, 0, 999), http.StatusOK) // 999 rows: rule not in force
	for range 3 {
		e.clock.Advance(time.Minute)
		wantStatus(t, e.post(id, 0, 1), http.StatusOK) // the first brings the table to 1,000
	}
	// four requests in the last hour (t0 … t0+3m); one more is allowed
	e.clock.Advance(time.Minute)
	wantStatus(t, e.post(id, 0, 1), http.StatusOK)
	r := e.post(id, 0, 1)
	wantError(t, r, http.StatusTooManyRequests, "TooManyRequests")
	// the oldest (t0) leaves at t0+60m; now t0+4m
	if got := r.retryAfter(); got != 56*60 {
		t.Fatalf("Retry-After = %d, want %d", got, 56*60)
	}
	if rec := e.s.Stats().Datasets[id].Posts; rec[len(rec)-1].Reason != "large_table" {
		t.Fatalf("last record = %+v", rec[len(rec)-1])
	}
	e.clock.Advance(56 * time.Minute)
	wantStatus(t, e.post(id, 0, 1), http.StatusOK)
	// the small product table of the same dataset is not limited by the
	// rule, but its request counts towards the dataset's hour
	wantStatus(t, e.do("POST", rowsPath(id, "Product"), `{"rows":[{"ProductID":1}]}`), http.StatusOK)
	wantError(t, e.post(id, 0, 1), http.StatusTooManyRequests, "TooManyRequests")
}

// TestRetention: basicFIFO keeps the newest rows; None stops at its cap.
func TestRetention(t *testing.T) {
	t.Run("basicFIFO keeps the newest", func(t *testing.T) {
		// 200,000 scaled down to 2,000
		e := start(t, func(c *Config) { c.Limits.FIFORows = 2_000 })
		id := e.dataset(RetentionBasicFIFO)
		for i := range 21 {
			wantStatus(t, e.post(id, i*100, 100), http.StatusOK)
		}
		rows := e.s.Rows(id, "T")
		if len(rows) != 2_000 {
			t.Fatalf("table holds %d rows, want 2000", len(rows))
		}
		if string(rows[0]) != `{"n":100}` || string(rows[len(rows)-1]) != `{"n":2099}` {
			t.Fatalf("first %s last %s", rows[0], rows[len(rows)-1])
		}
		if got := e.s.Stats().Datasets[id].RowsAccepted; got != 2_100 {
			t.Fatalf("rows accepted = %d", got)
		}
	})
	t.Run("None refuses past its cap", func(t *testing.T) {
		e := start(t, func(c *Config) { c.Limits.NoneRetentionMaxRows = 100 })
		id := e.dataset(RetentionNone)
		wantStatus(t, e.post(id, 0, 60), http.StatusOK)
		wantError(t, e.post(id, 60, 41), http.StatusBadRequest, "BadRequest")
		wantStatus(t, e.post(id, 60, 40), http.StatusOK)
		if n := e.s.RowCount(id, "T"); n != 100 {
			t.Fatalf("table holds %d rows", n)
		}
	})
}

// TestQuotasOff: zero limits switch quotas off.
func TestQuotasOff(t *testing.T) {
	e := start(t, func(c *Config) { c.Limits = c.Limits.WithoutQuotas() })
	id := e.dataset("")
	for i := range 130 {
		wantStatus(t, e.post(id, i, 1), http.StatusOK)
	}
	if th := e.s.Stats().Throttled; th != 0 {
		t.Fatalf("throttled %d", th)
	}
}

// TestWindowsConfigurable: a window shorter than a second, in real time.
// 900ms: the three requests must arrive within it, and its Retry-After
// still rounds up to 1.
func TestWindowsConfigurable(t *testing.T) {
	e := start(t, func(c *Config) {
		c.Now = nil
		c.Limits.RequestsPerWindow = 2
		c.Limits.RequestWindow = 900 * time.Millisecond
	})
	id := e.dataset("")
	wantStatus(t, e.post(id, 0, 1), http.StatusOK)
	wantStatus(t, e.post(id, 0, 1), http.StatusOK)
	r := e.post(id, 0, 1)
	wantError(t, r, http.StatusTooManyRequests, "TooManyRequests")
	if r.retryAfter() != 1 {
		t.Fatalf("Retry-After = %d, want 1 (rounded up)", r.retryAfter())
	}
	time.Sleep(time.Duration(r.retryAfter()) * time.Second)
	wantStatus(t, e.post(id, 0, 1), http.StatusOK)
}

// TestPostRecords: every POST rows is recorded with arrival, status and
// Retry-After, and a 429 never precedes... the records let pacing tests
// check clients.
func TestPostRecords(t *testing.T) {
	e := start(t, func(c *Config) { c.Limits.RequestsPerWindow = 1 })
	id := e.dataset("")
	t0 := e.clock.Now()
	wantStatus(t, e.post(id, 0, 3), http.StatusOK)
	wantStatus(t, e.post(id, 0, 1), http.StatusTooManyRequests)
	e.clock.Advance(time.Minute)
	wantStatus(t, e.post(id, 0, 2), http.StatusOK)
	var st Stats
	r := e.do("GET", "/emulator/v1/stats", nil)
	if err := json.Unmarshal(r.body, &st); err != nil {
		t.Fatal(err)
	}
	posts := st.Datasets[id].Posts
	want := []PostRecord{
		{Arrived: t0, Table: "T", Status: 200, Rows: 3},
		{Arrived: t0, Table: "T", Status: 429, RetryAfter: 60, Reason: "requests_per_window"},
		{Arrived: t0.Add(time.Minute), Table: "T", Status: 200, Rows: 2},
	}
	if len(posts) != len(want) {
		t.Fatalf("posts = %+v", posts)
	}
	for i := range want {
		if !posts[i].Arrived.Equal(want[i].Arrived) || posts[i].Status != want[i].Status || posts[i].Rows != want[i].Rows ||
			posts[i].RetryAfter != want[i].RetryAfter || posts[i].Reason != want[i].Reason {
			t.Fatalf("posts[%d] = %+v, want %+v", i, posts[i], want[i])
		}
	}
	if st.Requests[RoutePostRows][429] != 1 || st.RowsAccepted != 5 {
		t.Fatalf("stats = %+v", st)
	}
}
