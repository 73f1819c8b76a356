package pushapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPostRowsRequestShape(t *testing.T) {
	tests := []struct {
		name     string
		target   Target
		wantPath string
	}{
		{"workspace", Target{WorkspaceID: "ws-1", DatasetID: "ds-1", Table: "Telemetry"},
			"/v1.0/myorg/groups/ws-1/datasets/ds-1/tables/Telemetry/rows"},
		{"my workspace", Target{DatasetID: "ds-1", Table: "Telemetry"},
			"/v1.0/myorg/datasets/ds-1/tables/Telemetry/rows"},
		{"table name escaped", Target{WorkspaceID: "ws-1", DatasetID: "ds-1", Table: "Device Events"},
			"/v1.0/myorg/groups/ws-1/datasets/ds-1/tables/Device%20Events/rows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &script{steps: []func(http.ResponseWriter, *http.Request){ok}}
			srv := httptest.NewServer(s)
			defer srv.Close()
			c, _ := newTestClient(t, testConfig(srv.URL), srv.Client(), newFakeClock(), nil)
			rows := []json.RawMessage{json.RawMessage(`{"a":1}`), json.RawMessage(`{"b":"x, y"}`)}
			if err := c.PostRows(context.Background(), tt.target, rows); err != nil {
				t.Fatalf("PostRows: %v", err)
			}
			reqs := s.requests()
			if len(reqs) != 1 {
				t.Fatalf("requests = %d, want 1", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodPost || r.path != tt.wantPath {
				t.Errorf("request = %s %s, want POST %s", r.method, r.path, tt.wantPath)
			}
			if want := `{"rows":[{"a":1},{"b":"x, y"}]}`; r.body != want {
				t.Errorf("body = %s, want %s", r.body, want)
			}
			if r.auth != "Bearer token-1" {
				t.Errorf("Authorization = %q", r.auth)
			}
			if r.ctype != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", r.ctype)
			}
		})
	}
}

func TestPostRowsRejectsIncompleteTarget(t *testing.T) {
	c, _ := newTestClient(t, testConfig("http://127.0.0.1:1"), nil, newFakeClock(), nil)
	err := c.PostRows(context.Background(), Target{Table: "t"}, rowsN(1))
	if err == nil || !IsPermanent(err) {
		t.Fatalf("err = %v, want a permanent error", err)
	}
	if err := c.PostRows(context.Background(), Target{Table: "t"}, nil); err != nil {
		t.Fatalf("no rows: err = %v, want nil", err)
	}
}

func TestPostRowsRetryAndClassification(t *testing.T) {
	start := newFakeClock().Now()
	type step = func(http.ResponseWriter, *http.Request)
	tests := []struct {
		name       string
		steps      []step
		maxElapsed time.Duration
		wantErr    bool
		wantRow    bool // IsRowError
		wantStatus int  // of the *APIError, when wantErr
		wantCode   string
		wantReqs   int
		wantSleeps []time.Duration
		wantAuth   []string // Authorization of each request, when set
	}{
		{name: "success", steps: []step{ok}, wantReqs: 1},
		{name: "429 with Retry-After seconds", steps: []step{status(429, "TooManyRequests", "Retry-After", "7"), ok},
			wantReqs: 2, wantSleeps: []time.Duration{7 * time.Second}},
		{name: "429 with Retry-After HTTP date", steps: []step{status(429, "", "Retry-After", start.Add(12*time.Second).Format(http.TimeFormat)), ok},
			wantReqs: 2, wantSleeps: []time.Duration{12 * time.Second}},
		{name: "429 Retry-After capped by MaxRetryAfter", steps: []step{status(429, "", "Retry-After", "86400"), ok},
			wantReqs: 2, wantSleeps: []time.Duration{10 * time.Minute}},
		{name: "429 Retry-After shorter than backoff sleeps the backoff", steps: []step{status(429, "", "Retry-After", "0"), ok},
			wantReqs: 2, wantSleeps: []time.Duration{500 * time.Millisecond}},
		{name: "429 without Retry-After backs off exponentially", steps: []step{status(429, ""), status(429, ""), status(429, ""), ok},
			wantReqs: 4, wantSleeps: []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}},
		{name: "5xx then success", steps: []step{status(500, "InternalServerError"), status(502, ""), status(503, "", "Retry-After", "3"), status(504, ""), ok},
			wantReqs: 5, wantSleeps: []time.Duration{500 * time.Millisecond, time.Second, 3 * time.Second, 4 * time.Second}},
		{name: "backoff capped at MaxBackoff", steps: []step{status(500, ""), status(500, ""), status(500, ""), status(500, ""), status(500, ""), status(500, ""), ok},
			wantReqs: 7, wantSleeps: []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}},
		{name: "401 renews the token once", steps: []step{status(401, "PowerBINotAuthorizedException"), ok},
			wantReqs: 2, wantAuth: []string{"Bearer token-1", "Bearer token-2"}},
		{name: "403 TokenExpired renews the token once", steps: []step{status(403, "TokenExpired"), ok},
			wantReqs: 2, wantAuth: []string{"Bearer token-1", "Bearer token-2"}},
		{name: "401 after renewal is permanent", steps: []step{status(401, ""), status(401, "PowerBINotAuthorizedException")},
			wantErr: true, wantStatus: 401, wantCode: "PowerBINotAuthorizedException", wantReqs: 2},
		{name: "403 without TokenExpired is permanent", steps: []step{status(403, "Forbidden")},
			wantErr: true, wantStatus: 403, wantCode: "Forbidden", wantReqs: 1},
		{name: "413 is a row error", steps: []step{status(413, "RequestEntityTooLarge")},
			wantErr: true, wantRow: true, wantStatus: 413, wantCode: "RequestEntityTooLarge", wantReqs: 1},
		{name: "400 is a row error", steps: []step{status(400, "BadRequest")},
			wantErr: true, wantRow: true, wantStatus: 400, wantCode: "BadRequest", wantReqs: 1},
		{name: "404 table missing is permanent, not a row error", steps: []step{status(404, "ItemNotFound")},
			wantErr: true, wantStatus: 404, wantCode: "ItemNotFound", wantReqs: 1},
		{name: "MaxElapsed gives up", steps: []step{status(503, "")}, maxElapsed: 3 * time.Second,
			wantErr: true, wantStatus: 503, wantReqs: 3, wantSleeps: []time.Duration{500 * time.Millisecond, time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &script{steps: tt.steps}
			srv := httptest.NewServer(s)
			defer srv.Close()
			cfg := testConfig(srv.URL)
			cfg.Retry.MaxElapsed = tt.maxElapsed
			clock := newFakeClock()
			c, _ := newTestClient(t, cfg, srv.Client(), clock, nil)
			// Only retry sleeps are under test here, not quota pacing.
			c.SetLimits("ds", Limits{RequestsPerMinute: 1_000_000})
			err := c.PostRows(context.Background(), Target{WorkspaceID: "ws", DatasetID: "ds", Table: "t"}, rowsN(3))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				var ae *APIError
				if !errors.As(err, &ae) {
					t.Fatalf("err = %v, want an *APIError inside", err)
				}
				if ae.Status != tt.wantStatus || ae.Code != tt.wantCode {
					t.Errorf("APIError = %d %q, want %d %q", ae.Status, ae.Code, tt.wantStatus, tt.wantCode)
				}
				if !IsPermanent(err) {
					t.Errorf("IsPermanent = false for %v", err)
				}
				if IsRowError(err) != tt.wantRow {
					t.Errorf("IsRowError = %v, want %v", IsRowError(err), tt.wantRow)
				}
				if tt.maxElapsed > 0 && !errors.Is(err, ErrRetriesExhausted) {
					t.Errorf("err = %v, want ErrRetriesExhausted", err)
				}
			}
			reqs := s.requests()
			if len(reqs) != tt.wantReqs {
				t.Errorf("requests = %d, want %d", len(reqs), tt.wantReqs)
			}
			// Sleeps under a millisecond are the (effectively unlimited)
			// limiter's pacing, not retries.
			var got []time.Duration
			for _, d := range clock.slept() {
				if d >= time.Millisecond {
					got = append(got, d)
				}
			}
			if !equalDurations(got, tt.wantSleeps) {
				t.Errorf("sleeps = %v, want %v", got, tt.wantSleeps)
			}
			for i, want := range tt.wantAuth {
				if i < len(reqs) && reqs[i].auth != want {
					t.Errorf("request %d Authorization = %q, want %q", i, reqs[i].auth, want)
				}
			}
		})
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAPIErrorFromBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("RequestId", "req-42")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":{"code":"BadRequest","message":"Bad Request","details":[{"message":"value 'abc' is not Int64","target":"rows[3].temp"}]}}`))
	}))
	defer srv.Close()
	c, _ := newTestClient(t, testConfig(srv.URL), srv.Client(), newFakeClock(), nil)
	err := c.PostRows(context.Background(), Target{DatasetID: "ds", Table: "t"}, rowsN(5))
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *APIError", err)
	}
	want := APIError{Op: "PostRows", Status: 400, Code: "BadRequest", Message: "Bad Request; rows[3].temp: value 'abc' is not Int64", RequestID: "req-42"}
	if *ae != want {
		t.Errorf("APIError = %+v, want %+v", *ae, want)
	}
	for _, s := range []string{"HTTP 400", "BadRequest", "rows[3].temp", "req-42", `table "t"`} {
		if !contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
}

func TestAPIErrorPBIErrorForm(t *testing.T) {
	body := []byte(`{"error":{"code":"","pbi.error":{"code":"PowerBINotAuthorizedException","parameters":{},"details":[],"exceptionCulprit":1}}}`)
	ae := newAPIError("GetTables", 401, http.Header{}, body)
	if ae.Code != "PowerBINotAuthorizedException" || ae.Message != "Unauthorized" {
		t.Errorf("APIError = %+v", ae)
	}
}

// TestAPIErrorBodyShapes: the three error bodies Power BI sends each give
// the code and the real message (what logs and dead letters show), and a
// 429 is told apart: per dataset when it says so, else per identity.
func TestAPIErrorBodyShapes(t *testing.T) {
	tests := []struct {
		name, op, body    string
		status            int
		code, message     string
		throttlesIdentity bool
	}{
		{"error with details", opPostRows, `{"error":{"code":"BadRequest","message":"Bad Request","details":[{"code":"X","message":"value 'abc' is not Int64","target":"rows[3].temp"}]}}`, 400,
			"BadRequest", "Bad Request; rows[3].temp: value 'abc' is not Int64", false},
		{"pbi.error with details", opPostRows, `{"error":{"code":"DM_GWPipeline_Gateway_MashupDataAccessError","pbi.error":{"code":"DM_GWPipeline_Gateway_MashupDataAccessError","parameters":{},"details":[{"code":"DM_ErrorDetailNameCode_UnderlyingErrorMessage","detail":{"type":1,"value":"Web.Contents failed (429): Too Many Requests"}},{"code":"DM_ErrorDetailNameCode_UnderlyingHResult","detail":{"type":1,"value":-2147467259}}],"exceptionCulprit":1}}}`, 400,
			"DM_GWPipeline_Gateway_MashupDataAccessError", "DM_ErrorDetailNameCode_UnderlyingErrorMessage: Web.Contents failed (429): Too Many Requests; DM_ErrorDetailNameCode_UnderlyingHResult: -2147467259", false},
		{"bare message (per-user throttling)", opPostRows, `{"message":"You have exceeded the amount of requests allowed in the current time frame and further requests will fail. Retry in 3392 seconds."}`, 429,
			"", "You have exceeded the amount of requests allowed in the current time frame and further requests will fail. Retry in 3392 seconds.", true},
		{"dataset rows quota", opPostRows, `{"error":{"code":"TooManyRequests","message":"You are over your rows per hour limit for this dataset. Retry your push later."}}`, 429,
			"TooManyRequests", "You are over your rows per hour limit for this dataset. Retry your push later.", false},
		{"a 429 to another operation is the identity's", "GetTables", `{"error":{"code":"TooManyRequests","message":"Too many requests for this dataset"}}`, 429,
			"TooManyRequests", "Too many requests for this dataset", true},
		{"not JSON", opPostRows, `<html>busy</html>`, 429, "", "<html>busy</html>", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ae := newAPIError(tt.op, tt.status, http.Header{}, []byte(tt.body))
			if ae.Code != tt.code || ae.Message != tt.message {
				t.Errorf("code %q, message %q; want %q, %q", ae.Code, ae.Message, tt.code, tt.message)
			}
			if tt.status == 429 {
				if got := throttlesIdentity(ae); got != tt.throttlesIdentity {
					t.Errorf("throttlesIdentity = %v, want %v", got, tt.throttlesIdentity)
				}
			}
		})
	}
}

func TestPostRowsCutConnection(t *testing.T) {
	hijack := func(partial bool) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, _ *http.Request) {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			if partial {
				_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{\"va")
				_ = buf.Flush()
			}
			_ = conn.Close()
		}
	}
	tests := []struct {
		name  string
		steps []func(http.ResponseWriter, *http.Request)
	}{
		{"closed before any response", []func(http.ResponseWriter, *http.Request){hijack(false), hijack(false), ok}},
		{"cut in the middle of the response", []func(http.ResponseWriter, *http.Request){hijack(true), ok}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &script{steps: tt.steps}
			srv := httptest.NewServer(s)
			defer srv.Close()
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			clock := newFakeClock()
			c, _ := newTestClient(t, testConfig(srv.URL), srv.Client(), clock, m)
			if err := c.PostRows(context.Background(), Target{DatasetID: "ds", Table: "t"}, rowsN(2)); err != nil {
				t.Fatalf("PostRows: %v", err)
			}
			if got, want := len(s.requests()), len(tt.steps); got != want {
				t.Errorf("requests = %d, want %d", got, want)
			}
			if got := testutil.ToFloat64(m.retries.WithLabelValues("ds", "t")); got != float64(len(tt.steps)-1) {
				t.Errorf("retries metric = %v, want %d", got, len(tt.steps)-1)
			}
			if got := testutil.ToFloat64(m.rowsAccepted.WithLabelValues("ds", "t")); got != 2 {
				t.Errorf("rows accepted = %v, want 2", got)
			}
		})
	}
}

func TestPostRowsRequestTimeoutIsRetried(t *testing.T) {
	var answered atomic.Bool // the handlers of the two requests run on two goroutines
	s := &script{steps: []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) {
			if !answered.Swap(true) {
				<-r.Context().Done() // hold the request until the client gives up
				return
			}
			ok(w, r)
		},
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	cfg := testConfig(srv.URL)
	cfg.Timeout = time.Second // the retry must be answered within it: room for a loaded machine
	c, _ := newTestClient(t, cfg, srv.Client(), newFakeClock(), nil)
	if err := c.PostRows(context.Background(), Target{DatasetID: "ds", Table: "t"}, rowsN(1)); err != nil {
		t.Fatalf("PostRows: %v", err)
	}
	if n := len(s.requests()); n != 2 {
		t.Errorf("requests = %d, want 2", n)
	}
}

func TestPostRowsContextEndsDuringBackoff(t *testing.T) {
	s := &script{steps: []func(http.ResponseWriter, *http.Request){status(503, "")}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clock := newFakeClock()
	clock.onSleep = cancel
	c, _ := newTestClient(t, testConfig(srv.URL), srv.Client(), clock, nil)
	err := c.PostRows(ctx, Target{DatasetID: "ds", Table: "t"}, rowsN(1))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if IsPermanent(err) {
		t.Errorf("IsPermanent(%v) = true; a cancelled batch must not be dead-lettered", err)
	}
}

func TestPostRowsTokenFailureIsRetried(t *testing.T) {
	s := &script{steps: []func(http.ResponseWriter, *http.Request){ok}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	clock := newFakeClock()
	c, tok := newTestClient(t, testConfig(srv.URL), srv.Client(), clock, nil)
	tok.err = &AuthError{Method: AuthClientSecret, Status: 503, Description: "outage"}
	clock.onSleep = func() {
		tok.mu.Lock()
		tok.err = nil // the identity provider comes back
		tok.mu.Unlock()
	}
	if err := c.PostRows(context.Background(), Target{DatasetID: "ds", Table: "t"}, rowsN(1)); err != nil {
		t.Fatalf("PostRows: %v", err)
	}
	if n := len(s.requests()); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
	if n := len(clock.slept()); n != 1 {
		t.Errorf("sleeps = %d, want 1", n)
	}
}

func TestMetricsOfThrottledRun(t *testing.T) {
	s := &script{steps: []func(http.ResponseWriter, *http.Request){status(429, "", "Retry-After", "4"), ok}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	c, _ := newTestClient(t, testConfig(srv.URL), srv.Client(), newFakeClock(), m)
	if err := c.PostRows(context.Background(), Target{DatasetID: "ds", Table: "t"}, rowsN(7)); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"requests 429", m.requests.WithLabelValues("ds", "t", "429"), 1},
		{"requests 200", m.requests.WithLabelValues("ds", "t", "200"), 1},
		{"throttled", m.throttled.WithLabelValues("ds", "t"), 1},
		{"retry-after seconds", m.retryAfter.WithLabelValues("ds"), 4},
		{"retries", m.retries.WithLabelValues("ds", "t"), 1},
		{"rows accepted", m.rowsAccepted.WithLabelValues("ds", "t"), 7},
		{"in flight", m.inFlight.WithLabelValues("ds"), 0},
	}
	for _, ch := range checks {
		if got := testutil.ToFloat64(ch.c); got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, got, ch.want)
		}
	}
	n, err := testutil.GatherAndCount(reg, "pushd_powerbi_request_duration_seconds", "pushd_powerbi_batch_rows",
		"pushd_powerbi_quota_requests_remaining", "pushd_powerbi_quota_rows_remaining")
	if err != nil || n != 4 {
		t.Errorf("gathered %d series (err %v), want 4", n, err)
	}
}

func TestNilMetricsIsSafe(t *testing.T) {
	var m *Metrics
	m.request("d", "t", 200, time.Second)
	m.retry("d", "t")
	m.throttle("d", "t", time.Second)
	m.quota("d", 1, 1)
	m.tokenRenewed("x")
	m.tokenFailed("x")
	m.accepted("d", "t", 1)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, value string
		want        time.Duration
	}{
		{"absent", "", 0},
		{"seconds", "30", 30 * time.Second},
		{"fractional seconds", "1.5", 1500 * time.Millisecond},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"capped", "100000", time.Hour},
		{"http date", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"http date in the past", now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"http date capped", now.Add(48 * time.Hour).Format(http.TimeFormat), time.Hour},
		{"garbage", "soon", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseRetryAfter(tt.value, now, time.Hour); got != tt.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.value, got, tt.want)
			}
		})
	}
}

// pieceReader reads r at most size bytes at a time.
type pieceReader struct {
	r    io.Reader
	size int
}

func (p *pieceReader) Read(b []byte) (int, error) { return p.r.Read(b[:min(len(b), p.size)]) }

func TestRowsReader(t *testing.T) {
	tests := []struct {
		name string
		rows []json.RawMessage
		want string
	}{
		{"one", []json.RawMessage{json.RawMessage(`{"a":1}`)}, `{"rows":[{"a":1}]}`},
		{"none", nil, `{"rows":[]}`},
		{"three", []json.RawMessage{json.RawMessage(`{}`), json.RawMessage(`{"s":"]"}`), json.RawMessage(`{"b":true}`)}, `{"rows":[{},{"s":"]"},{"b":true}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Read in every piece size, so that pieces end inside rows,
			// commas and the framing.
			for size := 1; size <= len(tt.want)+1; size++ {
				got, err := io.ReadAll(&pieceReader{r: newRowsReader(tt.rows), size: size})
				if err != nil || string(got) != tt.want {
					t.Errorf("pieces of %d: body %s (%v), want %s", size, got, err, tt.want)
				}
			}
			if n := rowsBodyLen(tt.rows); n != int64(len(tt.want)) {
				t.Errorf("rowsBodyLen = %d, want %d", n, len(tt.want))
			}
		})
	}
}

// TestRetryLogNamesWaitAndRetryAfter checks the retry log's attributes:
// wait is pushd's own pause before the next attempt, retry_after appears
// only when the server sent a Retry-After, with its value.
func TestRetryLogNamesWaitAndRetryAfter(t *testing.T) {
	s := &script{steps: []func(http.ResponseWriter, *http.Request){
		status(503, ""),
		status(429, "TooManyRequests", "Retry-After", "7"),
		status(503, "", "Retry-After", "1"), // shorter than the backoff (2s)
		ok,
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	var logs bytes.Buffer
	c, err := NewClient(testConfig(srv.URL), &fakeTokens{}, srv.Client(), ClientOptions{
		Clock:  newFakeClock(),
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.jitter = func(d time.Duration) time.Duration { return d }
	c.SetLimits("ds", Limits{RequestsPerMinute: 1_000_000})
	if err := c.PostRows(context.Background(), Target{WorkspaceID: "ws", DatasetID: "ds", Table: "t"}, rowsN(1)); err != nil {
		t.Fatal(err)
	}
	type record struct {
		Msg        string
		Attempt    int
		Wait       *time.Duration
		RetryAfter *time.Duration `json:"retry_after"`
	}
	var got []record
	dec := json.NewDecoder(&logs)
	for dec.More() {
		var r record
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		if r.Msg == "request failed; retrying" {
			got = append(got, r)
		}
	}
	d := func(v time.Duration) *time.Duration { return &v }
	want := []struct {
		scenario   string
		wait       time.Duration
		retryAfter *time.Duration
	}{
		{"503 without Retry-After: backoff only", 500 * time.Millisecond, nil},
		{"429 with Retry-After 7: waits what the server asked", 7 * time.Second, d(7 * time.Second)},
		{"503 with Retry-After 1 below the backoff: waits the backoff", 2 * time.Second, d(time.Second)},
	}
	if len(got) != len(want) {
		t.Fatalf("%d retry logs, want %d:\n%s", len(got), len(want), logs.String())
	}
	for i, w := range want {
		r := got[i]
		if r.Attempt != i+1 {
			t.Errorf("%s: attempt = %d, want %d", w.scenario, r.Attempt, i+1)
		}
		if r.Wait == nil || *r.Wait != w.wait {
			t.Errorf("%s: wait = %v, want %v", w.scenario, r.Wait, w.wait)
		}
		switch {
		case w.retryAfter == nil && r.RetryAfter != nil:
			t.Errorf("%s: retry_after = %v, want it absent", w.scenario, *r.RetryAfter)
		case w.retryAfter != nil && (r.RetryAfter == nil || *r.RetryAfter != *w.retryAfter):
			t.Errorf("%s: retry_after = %v, want %v", w.scenario, r.RetryAfter, *w.retryAfter)
		}
	}
}

// expiringTokens hands out tokens that expire lifetime after they were
// handed out, by clock; the name carries the issue time.
type expiringTokens struct {
	clock    Clock
	lifetime time.Duration

	mu      sync.Mutex
	current string
	expires time.Time
}

func (e *expiringTokens) Token(context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	if e.current == "" || !now.Before(e.expires) {
		e.current = "tok@" + strconv.FormatInt(now.UnixNano(), 10)
		e.expires = now.Add(e.lifetime)
	}
	return e.current, nil
}

func (e *expiringTokens) Invalidate(string) {}

// TestPostRowsTakesTokenAfterQuotaWait: a request that waits for the
// dataset's quota longer than its token lives is sent with a token taken
// after the wait, so Power BI never sees an expired one.
func TestPostRowsTakesTokenAfterQuotaWait(t *testing.T) {
	clock := newFakeClock()
	const lifetime = 30 * time.Second
	var expired atomic.Int32
	s := &script{now: clock.Now, steps: []func(http.ResponseWriter, *http.Request){func(w http.ResponseWriter, r *http.Request) {
		issued, err := strconv.ParseInt(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer tok@"), 10, 64)
		if err != nil || !clock.Now().Before(time.Unix(0, issued).Add(lifetime)) {
			expired.Add(1)
			status(http.StatusForbidden, "TokenExpired")(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c, err := NewClient(testConfig(srv.URL), &expiringTokens{clock: clock, lifetime: lifetime}, srv.Client(), ClientOptions{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	c.SetLimits("ds", Limits{RequestsPerMinute: 1})
	for i := range 3 {
		if err := c.PostRows(context.Background(), Target{DatasetID: "ds", Table: "t"}, rowsN(1)); err != nil {
			t.Fatalf("PostRows %d: %v", i, err)
		}
	}
	if slept := clock.slept(); len(slept) == 0 {
		t.Fatal("no quota wait happened; the test proves nothing")
	}
	if n := expired.Load(); n != 0 {
		t.Errorf("%d requests carried a token that expired while waiting for the quota", n)
	}
	if n := len(s.requests()); n != 3 {
		t.Errorf("requests = %d, want 3 (one per batch)", n)
	}
}
