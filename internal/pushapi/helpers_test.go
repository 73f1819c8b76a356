package pushapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
)

// fakeTokens hands out token-1, token-2, ... and renews after Invalidate.
type fakeTokens struct {
	mu          sync.Mutex
	issued      int
	current     string
	invalidated []string
	err         error
}

func (f *fakeTokens) Token(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", f.err
	}
	if f.current == "" {
		f.issued++
		f.current = fmt.Sprintf("token-%d", f.issued)
	}
	return f.current, nil
}

func (f *fakeTokens) Invalidate(t string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, t)
	if t == f.current {
		f.current = ""
	}
}

// fakeClock advances only when slept on; it records every sleep.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
	// onSleep, when set, runs before each sleep returns (e.g. to cancel).
	onSleep func()
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	hook := c.onSleep
	c.mu.Unlock()
	if hook != nil {
		hook()
	}
	return ctx.Err()
}

func (c *fakeClock) slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// recorded is one request as the fake Power BI saw it.
type recorded struct {
	at     time.Time
	method string
	path   string // escaped path
	auth   string
	ctype  string
	body   string
}

// script answers requests in order with its steps (the last one repeats)
// and records them. now stamps each request (the test's clock).
type script struct {
	mu    sync.Mutex
	steps []func(w http.ResponseWriter, r *http.Request)
	reqs  []recorded
	now   func() time.Time
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	at := time.Now()
	if s.now != nil {
		at = s.now()
	}
	s.reqs = append(s.reqs, recorded{at: at, method: r.Method, path: r.URL.EscapedPath(),
		auth: r.Header.Get("Authorization"), ctype: r.Header.Get("Content-Type"), body: string(body)})
	i := min(len(s.reqs)-1, len(s.steps)-1)
	step := s.steps[i]
	s.mu.Unlock()
	step(w, r)
}

func (s *script) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.reqs...)
}

func ok(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }

// status answers with a Power BI error document.
func status(code int, pbiCode string, header ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if pbiCode != "" {
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": pbiCode, "message": "msg " + pbiCode}})
		}
	}
}

// handlerTransport serves requests with an in-process handler: no sockets,
// so a testing/synctest bubble controls every wait.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// testConfig points a Config at an API base with quick retries.
func testConfig(api string) Config {
	return Config{
		APIURL:  api,
		Timeout: 5 * time.Second,
		Retry:   RetryConfig{InitialBackoff: 500 * time.Millisecond, MaxBackoff: 8 * time.Second, MaxRetryAfter: 10 * time.Minute},
	}
}

// newTestClient builds a Client with fakeTokens and, unless clock is nil, a
// fake clock; jitter returns the full backoff (deterministic).
func newTestClient(t *testing.T, cfg Config, hc *http.Client, clock Clock, m *Metrics) (*Client, *fakeTokens) {
	t.Helper()
	tok := &fakeTokens{}
	c, err := NewClient(cfg, tok, hc, ClientOptions{Clock: clock, Metrics: m})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	c.jitter = func(d time.Duration) time.Duration { return d }
	return c, tok
}

func rowsN(n int) []json.RawMessage {
	rows := make([]json.RawMessage, n)
	for i := range rows {
		rows[i] = json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))
	}
	return rows
}

// maxInWindow is the largest total weight of events in any window
// (t-w, t] — the emulator's sliding window.
func maxInWindow(at []time.Time, weight []int, w time.Duration) int {
	best := 0
	for j := range at {
		sum := 0
		for i := j; i >= 0 && at[i].After(at[j].Add(-w)); i-- {
			sum += weight[i]
		}
		best = max(best, sum)
	}
	return best
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

type unmarshalFunc func([]byte) error

func (f unmarshalFunc) Unmarshal(b []byte) error { return f(b) }

type marshalFunc func() ([]byte, error)

func (f marshalFunc) Marshal() ([]byte, error) { return f() }

var (
	cacheExportHints  = cache.ExportHints{}
	cacheReplaceHints = cache.ReplaceHints{}
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
