package emulator

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults Faults
		check  func(t *testing.T, e *env, id string)
	}{
		{"error rate 1 answers 500 or 503 and stores nothing", Faults{ErrorRate: 1}, func(t *testing.T, e *env, id string) {
			seen := map[int]bool{}
			for range 20 {
				r := e.post(id, 0, 1)
				if r.status != 500 && r.status != 503 {
					t.Fatalf("status %d", r.status)
				}
				seen[r.status] = true
			}
			if !seen[500] || !seen[503] {
				t.Fatalf("saw %v, want both 500 and 503", seen)
			}
			if e.s.RowCount(id, "T") != 0 || e.s.Stats().InjectedErrors != 20 {
				t.Fatalf("rows %d, injected %d", e.s.RowCount(id, "T"), e.s.Stats().InjectedErrors)
			}
			// other routes are spared unless AllRoutes
			wantStatus(t, e.do("GET", "/v1.0/myorg/datasets", nil), http.StatusOK)
		}},
		{"error rate on all routes", Faults{ErrorRate: 1, AllRoutes: true}, func(t *testing.T, e *env, _ string) {
			if r := e.do("GET", "/v1.0/myorg/datasets", nil); r.status != 500 && r.status != 503 {
				t.Fatalf("status %d", r.status)
			}
		}},
		{"cut rate 1 stores the rows and breaks the response", Faults{CutRate: 1}, func(t *testing.T, e *env, id string) {
			r := e.post(id, 0, 3)
			if r.err == nil {
				t.Fatalf("want a broken response, got %d", r.status)
			}
			if n := e.s.RowCount(id, "T"); n != 3 {
				t.Fatalf("rows stored = %d, want 3", n)
			}
			// The cut is counted as the connection closes, which the client
			// may see first: wait for it (a real-time bound).
			cut := e.s.Stats().ConnectionsCut
			for deadline := time.Now().Add(5 * time.Second); cut == 0 && time.Now().Before(deadline); cut = e.s.Stats().ConnectionsCut {
				time.Sleep(5 * time.Millisecond)
			}
			if cut != 1 {
				t.Fatalf("cut = %d", cut)
			}
		}},
		{"throttle window with a given Retry-After", Faults{ThrottleFor: 30 * time.Second, ThrottleRetryAfter: 5 * time.Second}, func(t *testing.T, e *env, id string) {
			r := e.post(id, 0, 1)
			wantError(t, r, http.StatusTooManyRequests, "TooManyRequests")
			if r.retryAfter() != 5 {
				t.Fatalf("Retry-After = %d", r.retryAfter())
			}
			e.clock.Advance(30 * time.Second)
			wantStatus(t, e.post(id, 0, 1), http.StatusOK)
		}},
		{"throttle window until a time", Faults{ThrottleUntil: newFakeClock().Now().Add(90 * time.Second)}, func(t *testing.T, e *env, id string) {
			r := e.post(id, 0, 1)
			wantError(t, r, http.StatusTooManyRequests, "TooManyRequests")
			if r.retryAfter() != 90 {
				t.Fatalf("Retry-After = %d, want the time left", r.retryAfter())
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, func(c *Config) { c.Faults = tc.faults })
			id := e.dataset("")
			tc.check(t, e, id)
		})
	}
}

// TestLatency: requests wait and hold their in-flight slot meanwhile.
func TestLatency(t *testing.T) {
	e := start(t, func(c *Config) { c.Now = nil; c.Faults.Latency = 200 * time.Millisecond })
	id := e.dataset("")
	begin := time.Now()
	wantStatus(t, e.post(id, 0, 1), http.StatusOK)
	if d := time.Since(begin); d < 200*time.Millisecond {
		t.Fatalf("answered after %s, want at least the latency", d)
	}
}

// TestControlEndpoints: faults set and read over HTTP, reset, rows.
func TestControlEndpoints(t *testing.T) {
	e := start(t, nil)
	id := e.dataset("")
	r := e.do("POST", "/emulator/v1/faults", `{"throttle_for":"1m","throttle_retry_after":"7s","error_rate":0}`)
	wantStatus(t, r, http.StatusOK)
	r = e.post(id, 0, 1)
	if r.status != 429 || r.retryAfter() != 7 {
		t.Fatalf("after setting faults: %d Retry-After %d", r.status, r.retryAfter())
	}
	r = e.do("GET", "/emulator/v1/faults", nil)
	var fj FaultsJSON
	if err := json.Unmarshal(r.body, &fj); err != nil || fj.ThrottleUntil == nil || fj.ThrottleRetryAfter != "7s" {
		t.Fatalf("faults = %s (%v)", r.body, err)
	}
	for _, bad := range []string{`{"error_rate":2}`, `{"latency":"soon"}`, `{"nope":1}`} {
		wantError(t, e.do("POST", "/emulator/v1/faults", bad), http.StatusBadRequest, "BadRequest")
	}
	wantStatus(t, e.do("POST", "/emulator/v1/faults", `{}`), http.StatusOK)
	wantStatus(t, e.post(id, 0, 2), http.StatusOK)

	r = e.do("GET", "/emulator/v1/datasets/"+id+"/tables/T/rows", nil)
	wantStatus(t, r, http.StatusOK)
	if string(r.body) != `{"count":2,"rows":[{"n":0},{"n":1}]}` {
		t.Fatalf("rows = %s", r.body)
	}
	r = e.do("GET", "/emulator/v1/datasets/"+id+"/tables/T/rows?offset=1&limit=5", nil)
	if string(r.body) != `{"count":2,"rows":[{"n":1}]}` {
		t.Fatalf("rows page = %s", r.body)
	}
	wantError(t, e.do("GET", "/emulator/v1/datasets/"+id+"/tables/X/rows", nil), http.StatusNotFound, "ItemNotFound")

	wantStatus(t, e.do("POST", "/emulator/v1/reset", nil), http.StatusOK)
	st := e.s.Stats()
	if len(st.Datasets) != 0 || st.RowsAccepted != 0 || len(st.Requests) != 0 {
		t.Fatalf("after reset: %+v", st)
	}
	// tokens survive a reset
	wantStatus(t, e.do("GET", "/v1.0/myorg/datasets", nil), http.StatusOK)
	wantError(t, e.do("GET", "/v1.0/nothing", nil), http.StatusNotFound, "NotFound")
	if !strings.Contains(e.s.URL(), "127.0.0.1") {
		t.Fatalf("URL = %s", e.s.URL())
	}
}

// TestIdentityThrottle: with ThrottleIdentity the throttling is per user, as
// the REST API's is: every route and dataset answers 429 to that identity
// with a bare {"message":...} that names no dataset (the body seen from
// Power BI), while another identity is served.
func TestIdentityThrottle(t *testing.T) {
	e := start(t, nil)
	id := e.dataset(RetentionNone)
	throttled := "emulator-test@" + e.s.cfg.Tenant
	e.s.SetFaults(Faults{ThrottleFor: time.Hour, ThrottleRetryAfter: 3392 * time.Second, ThrottleIdentity: throttled})
	for _, r := range []response{e.post(id, 0, 1), e.do("GET", "/v1.0/myorg/datasets", nil)} {
		wantStatus(t, r, http.StatusTooManyRequests)
		if r.retryAfter() != 3392 {
			t.Errorf("Retry-After = %d, want 3392", r.retryAfter())
		}
		var body map[string]any
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatalf("body %s: %v", r.body, err)
		}
		msg, _ := body["message"].(string)
		if len(body) != 1 || !strings.Contains(msg, "exceeded the amount of requests") || !strings.Contains(msg, "3392 seconds") || strings.Contains(strings.ToLower(msg), "dataset") {
			t.Errorf("body %s: want only a message about the identity's requests", r.body)
		}
	}
	other, _ := e.s.issue("another-client", true, time.Hour)
	wantStatus(t, e.doToken("POST", rowsPath(id, "T"), rowsBody(0, 1), other), http.StatusOK)
	e.clock.Advance(time.Hour)
	wantStatus(t, e.post(id, 1, 1), http.StatusOK)
}
