package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/pushd/pushd/internal/secret"
)

func testHTTPConfig() HTTPConfig {
	cfg := DefaultConfig().HTTP
	cfg.Listen = "127.0.0.1:0"
	cfg.ResponseTimeout = 10 * time.Second
	return cfg
}

func newTestHTTP(t *testing.T, cfg HTTPConfig, opts HTTPOptions) (*HTTP, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	h, err := NewHTTP(cfg, opts)
	if err != nil {
		t.Fatalf("NewHTTP: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.Close(ctx)
	})
	return h, "http://" + h.Addr().String() + cfg.Path
}

// fakePipeline reads events from s and acks each with decide's answer,
// recording what it read, until ctx ends.
type fakePipeline struct {
	mu     sync.Mutex
	events []Event
}

func runPipeline(ctx context.Context, s Source, decide func(Event) error) *fakePipeline {
	p := &fakePipeline{}
	go func() {
		for {
			ev, ack, err := s.Read(ctx)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.events = append(p.events, ev)
			p.mu.Unlock()
			ack(decide(ev))
		}
	}()
	return p
}

func (p *fakePipeline) read() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Event(nil), p.events...)
}

type httpResult struct {
	code   int
	header http.Header
	body   string
}

func post(t *testing.T, url, contentType, token string, body []byte) httpResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpResult{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

func TestHTTPRequests(t *testing.T) {
	t.Parallel()
	const ndjson = "application/x-ndjson"
	tests := []struct {
		name        string
		method      string // default POST
		contentType string
		auth        string
		body        string
		wantCode    int
		wantBody    string   // substring of the answer
		wantEvents  []string // data of the events read, in order
		wantHeader  [2]string
	}{
		{
			name: "ndjson lines are one event each", contentType: ndjson,
			body:     "{\"a\":1}\r\n\n  {\"a\":2}\n[{\"a\":3},{\"a\":4}]\n",
			wantCode: 200, wantBody: `{"accepted":3,"dead_lettered":0}`,
			wantEvents: []string{`{"a":1}`, `{"a":2}`, `[{"a":3},{"a":4}]`},
		},
		{
			name: "no content type is ndjson", body: `{"a":1}` + "\n" + `{"a":2}`,
			wantCode: 200, wantEvents: []string{`{"a":1}`, `{"a":2}`},
		},
		{
			name: "text plain is ndjson", contentType: "text/plain; charset=utf-8", body: `{"a":1}`,
			wantCode: 200, wantEvents: []string{`{"a":1}`},
		},
		{
			name: "json array elements are one event each", contentType: "application/json",
			body:     ` [ {"a":"x,]}\"y"} , {"b":[1,{"c":2}]},{} ] `,
			wantCode: 200, wantBody: `"accepted":3`,
			wantEvents: []string{`{"a":"x,]}\"y"}`, `{"b":[1,{"c":2}]}`, `{}`},
		},
		{
			name: "json object is one event", contentType: "application/json; charset=utf-8",
			body: `{"a":[1,2]}`, wantCode: 200, wantEvents: []string{`{"a":[1,2]}`},
		},
		{
			name: "dead-lettered events are counted apart", contentType: ndjson,
			body:     `{"a":1}` + "\n" + `{"dead":true}` + "\n" + `{"a":3}`,
			wantCode: 200, wantBody: `{"accepted":2,"dead_lettered":1}`,
		},
		{
			name: "invalid ndjson line is named", contentType: ndjson,
			body:     `{"a":1}` + "\n\n" + `{"a":` + "\n",
			wantCode: 400, wantBody: `line 3: invalid JSON`,
		},
		{
			name: "ndjson scalar line is named", contentType: ndjson,
			body: `{"a":1}` + "\n" + `42`, wantCode: 400, wantBody: `line 2: not a JSON object or array`,
		},
		{name: "empty body", contentType: ndjson, body: "", wantCode: 400, wantBody: "empty body"},
		{name: "blank body", contentType: ndjson, body: "\n \n", wantCode: 400, wantBody: "empty body"},
		{name: "empty json body", contentType: "application/json", body: " ", wantCode: 400, wantBody: "empty body"},
		{name: "empty json array", contentType: "application/json", body: "[]", wantCode: 400, wantBody: "empty array"},
		{
			name: "invalid array element is named", contentType: "application/json",
			body: `[{"a":1}, {"a":2}, {"a" 3}]`, wantCode: 400, wantBody: `element 2: invalid JSON`,
		},
		{
			name: "truncated array names the open element", contentType: "application/json",
			body: `[{"a":1},{"b":`, wantCode: 400, wantBody: `element 1: invalid JSON`,
		},
		{
			name: "array element must be an object", contentType: "application/json",
			body: `[{"a":1}, "x"]`, wantCode: 400, wantBody: `element 1: not a JSON object`,
		},
		{
			name: "json scalar body", contentType: "application/json",
			body: `"x"`, wantCode: 400, wantBody: `must be an object or an array of objects`,
		},
		{
			name: "body over max_body_bytes", contentType: ndjson,
			body: `{"a":"` + strings.Repeat("x", 300) + `"}`, wantCode: 413, wantBody: "max_body_bytes (256)",
		},
		{
			name: "more events than max_events_per_request", contentType: ndjson,
			body: "{}\n{}\n{}\n{}\n{}", wantCode: 413, wantBody: "max_events_per_request (4)",
		},
		{name: "unsupported content type", contentType: "application/xml", body: "<a/>", wantCode: 415},
		{
			name: "GET is not allowed", method: http.MethodGet, wantCode: 405,
			wantHeader: [2]string{"Allow", "POST"},
		},
		{
			name: "missing token", auth: "-", body: "{}", wantCode: 401,
			wantHeader: [2]string{"WWW-Authenticate", `Bearer realm="pushd"`},
		},
		{
			name: "wrong token", auth: "Bearer not-the-token", body: "{}", wantCode: 401,
			wantHeader: [2]string{"WWW-Authenticate", `Bearer realm="pushd", error="invalid_token"`},
		},
		{name: "basic auth is not a bearer token", auth: "Basic czNjcjN0", body: "{}", wantCode: 401},
	}
	cfg := testHTTPConfig()
	cfg.MaxBodyBytes = 256
	cfg.MaxEventsPerRequest = 4
	cfg.BearerToken = secret.Value("s3cr3t")
	reg := prometheus.NewRegistry()
	metrics := NewHTTPMetrics(reg)
	h, url := newTestHTTP(t, cfg, HTTPOptions{Metrics: metrics})

	// One request at a time, so the events read belong to the request
	// under test.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pipeline := runPipeline(ctx, h, func(ev Event) error {
		if bytes.Contains(ev.Data, []byte("dead")) {
			return fmt.Errorf("mapping: %w", ErrDeadLettered)
		}
		return nil
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(pipeline.read())
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req, err := http.NewRequest(method, url, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			switch tt.auth {
			case "":
				req.Header.Set("Authorization", "Bearer s3cr3t")
			case "-":
			default:
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", method, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantCode, b)
			}
			if !strings.Contains(string(b), tt.wantBody) {
				t.Fatalf("body %s does not contain %q", b, tt.wantBody)
			}
			if k := tt.wantHeader[0]; k != "" && resp.Header.Get(k) != tt.wantHeader[1] {
				t.Fatalf("%s = %q, want %q", k, resp.Header.Get(k), tt.wantHeader[1])
			}
			got := pipeline.read()[before:]
			if tt.wantCode != 200 && len(got) != 0 {
				t.Fatalf("a %d request produced %d events", tt.wantCode, len(got))
			}
			if tt.wantEvents == nil {
				return
			}
			if len(got) != len(tt.wantEvents) {
				t.Fatalf("read %d events, want %d", len(got), len(tt.wantEvents))
			}
			for i, ev := range got {
				if string(ev.Data) != tt.wantEvents[i] {
					t.Errorf("event %d data %s, want %s", i, ev.Data, tt.wantEvents[i])
				}
				if !strings.HasPrefix(ev.Position, "http:127.0.0.1:") || !strings.HasSuffix(ev.Position, fmt.Sprintf("/%d", i)) {
					t.Errorf("event %d position %q", i, ev.Position)
				}
				if ev.Meta != nil {
					t.Errorf("event %d has metadata", i)
				}
			}
		})
	}
	if got := testutil.ToFloat64(metrics.requests.WithLabelValues("401")); got != 3 {
		t.Errorf("requests_total{code=401} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(metrics.events.WithLabelValues("dead_lettered")); got != 1 {
		t.Errorf("events_total{result=dead_lettered} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(metrics.unacked); got != 0 {
		t.Errorf("unacked_events = %v, want 0", got)
	}
}

func TestHTTPAckErrorAnswers503(t *testing.T) {
	t.Parallel()
	h, url := newTestHTTP(t, testHTTPConfig(), HTTPOptions{RetryAfter: 1500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runPipeline(ctx, h, func(ev Event) error {
		if bytes.Contains(ev.Data, []byte("fail")) {
			return errors.New("posting rows: 500")
		}
		return nil
	})
	r := post(t, url, "application/json", "", []byte(`[{"a":1},{"fail":1},{"a":2}]`))
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "2" {
		t.Fatalf("status %d Retry-After %q, want 503 and 2; body %s", r.code, r.header.Get("Retry-After"), r.body)
	}
	var body struct{ Accepted, Failed int }
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || body.Accepted != 2 || body.Failed != 1 {
		t.Fatalf("body %s (%v), want accepted 2 and failed 1", r.body, err)
	}
}

func TestHTTPSaturationAnswers429(t *testing.T) {
	t.Parallel()
	h, url := newTestHTTP(t, testHTTPConfig(), HTTPOptions{MaxUnacked: 3})
	first := make(chan httpResult, 1)
	go func() { first <- post(t, url, "", "", []byte("{}\n{}\n")) }()
	held := readN(t, h, 2) // the first request's events are in flight

	// One more event fits, two do not: answered at once, not queued.
	r := post(t, url, "", "", []byte("{}\n{}\n"))
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
		t.Fatalf("status %d Retry-After %q, want 429 and 1; body %s", r.code, r.header.Get("Retry-After"), r.body)
	}
	// A request larger than the whole bound can never fit.
	r = post(t, url, "", "", []byte("{}\n{}\n{}\n{}\n"))
	if r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("4 events with max 3: status %d, want 413; body %s", r.code, r.body)
	}
	second := make(chan httpResult, 1)
	go func() { second <- post(t, url, "", "", []byte("{}\n")) }()
	held = append(held, readN(t, h, 1)...)
	for _, e := range held {
		e.ack(nil)
	}
	for name, ch := range map[string]chan httpResult{"first": first, "second": second} {
		if r := <-ch; r.code != http.StatusOK {
			t.Fatalf("%s request: status %d, want 200; body %s", name, r.code, r.body)
		}
	}
	// Room again once acknowledged.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runPipeline(ctx, h, func(Event) error { return nil })
	if r := post(t, url, "", "", []byte("{}\n{}\n{}\n")); r.code != http.StatusOK {
		t.Fatalf("after the acks: status %d, want 200; body %s", r.code, r.body)
	}
}

// TestHTTPRoomIsFreeWhenAnswered: once a request is answered, its events'
// slots are free and counted. A client at max_unacked_events that sends its
// next body on the answer is never refused 429, and a scrape after the
// answer sees every event counted and none unacked.
func TestHTTPRoomIsFreeWhenAnswered(t *testing.T) {
	t.Parallel()
	metrics := NewHTTPMetrics(prometheus.NewRegistry())
	h, url := newTestHTTP(t, testHTTPConfig(), HTTPOptions{MaxUnacked: 3, Metrics: metrics})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runPipeline(ctx, h, func(Event) error { return nil })
	for i := 1; i <= 300; i++ {
		if r := post(t, url, "", "", []byte("{}\n{}\n{}\n")); r.code != http.StatusOK {
			t.Fatalf("request %d: status %d, want 200; body %s", i, r.code, r.body)
		}
		if got := h.unacked.Load(); got != 0 {
			t.Fatalf("after answer %d: %d events unacked, want 0", i, got)
		}
		if got := testutil.ToFloat64(metrics.unacked); got != 0 {
			t.Fatalf("after answer %d: unacked_events = %v, want 0", i, got)
		}
		if got := testutil.ToFloat64(metrics.events.WithLabelValues("accepted")); got != float64(3*i) {
			t.Fatalf("after answer %d: events_total{result=accepted} = %v, want %d", i, got, 3*i)
		}
	}
}

func TestHTTPResponseTimeoutAnswers503(t *testing.T) {
	t.Parallel()
	cfg := testHTTPConfig()
	cfg.ResponseTimeout = 200 * time.Millisecond
	h, url := newTestHTTP(t, cfg, HTTPOptions{MaxUnacked: 5})
	result := make(chan httpResult, 1)
	go func() { result <- post(t, url, "", "", []byte("{}\n{}\n")) }()
	held := readN(t, h, 2)
	r := <-result
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "response_timeout") {
		t.Fatalf("status %d Retry-After %q body %s, want 503 naming response_timeout", r.code, r.header.Get("Retry-After"), r.body)
	}
	// The late acks still free the room.
	if got := h.unacked.Load(); got != 2 {
		t.Fatalf("unacked = %d before the late acks, want 2", got)
	}
	for _, e := range held {
		e.ack(nil)
	}
	if got := h.unacked.Load(); got != 0 {
		t.Fatalf("unacked = %d after the late acks, want 0", got)
	}
}

// TestHTTPConcurrentClients posts from several clients at once while the
// pipeline acks in batches out of order: every answered event was read and
// acked exactly once.
func TestHTTPConcurrentClients(t *testing.T) {
	t.Parallel()
	h, url := newTestHTTP(t, testHTTPConfig(), HTTPOptions{MaxUnacked: 1000})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	seen := map[string]int{}
	go func() {
		rng := rand.New(rand.NewPCG(3, 4))
		var batch []Ack
		flush := func() {
			rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
			for _, a := range batch {
				a(nil)
			}
			batch = batch[:0]
		}
		for {
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Millisecond)
			ev, ack, err := h.Read(rctx)
			rcancel()
			if err != nil {
				flush() // idle: flush what is held, like a batcher's age limit
				if ctx.Err() != nil {
					return
				}
				continue
			}
			mu.Lock()
			seen[string(ev.Data)]++
			mu.Unlock()
			if batch = append(batch, ack); len(batch) == 37 {
				flush()
			}
		}
	}()
	const clients, requests, perRequest = 6, 25, 20
	var wg sync.WaitGroup
	accepted := make([]int, clients)
	for c := range clients {
		wg.Go(func() {
			for r := range requests {
				var body bytes.Buffer
				body.WriteByte('[')
				for i := range perRequest {
					if i > 0 {
						body.WriteByte(',')
					}
					fmt.Fprintf(&body, `{"c":%d,"r":%d,"i":%d}`, c, r, i)
				}
				body.WriteByte(']')
				for {
					res := post(t, url, "application/json", "", body.Bytes())
					if res.code == http.StatusTooManyRequests {
						time.Sleep(time.Millisecond)
						continue
					}
					if res.code != http.StatusOK {
						t.Errorf("client %d request %d: status %d; body %s", c, r, res.code, res.body)
						return
					}
					var got struct{ Accepted int }
					_ = json.Unmarshal([]byte(res.body), &got)
					accepted[c] += got.Accepted
					break
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for _, n := range accepted {
		total += n
	}
	if total != clients*requests*perRequest {
		t.Fatalf("accepted %d events, want %d", total, clients*requests*perRequest)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != total {
		t.Fatalf("read %d distinct events, want %d", len(seen), total)
	}
	for data, n := range seen {
		if n != 1 {
			t.Fatalf("event %s read %d times", data, n)
		}
	}
}

func TestHTTPClose(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// ackDuringClose acks the read events while Close waits.
		ackDuringClose bool
		wantInFlight   int
		wantCloseErr   bool
	}{
		{name: "requests in flight are answered when acked", ackDuringClose: true, wantInFlight: 200},
		{name: "requests still unacked at the deadline get 503", wantInFlight: 503, wantCloseErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, url := newTestHTTP(t, testHTTPConfig(), HTTPOptions{})
			inFlight := make(chan httpResult, 1)
			go func() { inFlight <- post(t, url, "", "", []byte("{}\n{}\n")) }()
			held := readN(t, h, 2)
			// A second request whose events nobody reads.
			queued := make(chan httpResult, 1)
			go func() { queued <- post(t, url, "", "", []byte(`{"q":1}`)) }()
			for h.unacked.Load() != 3 {
				time.Sleep(time.Millisecond)
			}

			// The shutdown budget: long enough for the acks of the first
			// case on a loaded machine, spent in full by the second.
			budget := 300 * time.Millisecond
			if tt.ackDuringClose {
				budget = 10 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), budget)
			defer cancel()
			closed := make(chan error, 1)
			go func() { closed <- h.Close(ctx) }()
			if r := <-queued; r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
				t.Fatalf("unread request: status %d, want 503 with Retry-After; body %s", r.code, r.body)
			}
			if tt.ackDuringClose {
				for _, e := range held {
					e.ack(nil)
				}
			}
			if r := <-inFlight; r.code != tt.wantInFlight {
				t.Fatalf("in-flight request: status %d, want %d; body %s", r.code, tt.wantInFlight, r.body)
			}
			if err := <-closed; (err != nil) != tt.wantCloseErr {
				t.Fatalf("Close = %v, want error %v", err, tt.wantCloseErr)
			}
			if _, _, err := h.Read(context.Background()); !errors.Is(err, ErrEndOfInput) {
				t.Fatalf("Read after Close = %v, want ErrEndOfInput", err)
			}
			if _, err := http.Post(url, "", strings.NewReader("{}")); err == nil {
				t.Fatal("POST after Close reached a server")
			}
			for _, e := range held {
				e.ack(nil) // late (or repeated) acks are harmless
			}
		})
	}
}

func TestHTTPBearerTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := dir + "/token"
	if err := os.WriteFile(path, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testHTTPConfig()
	cfg.BearerTokenFile = path
	h, url := newTestHTTP(t, cfg, HTTPOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runPipeline(ctx, h, func(Event) error { return nil })
	if r := post(t, url, "", "Bearer from-file", []byte("{}")); r.code != http.StatusOK {
		t.Fatalf("token from file: status %d; body %s", r.code, r.body)
	}
	if r := post(t, url, "", "", []byte("{}")); r.code != http.StatusUnauthorized {
		t.Fatalf("no token: status %d, want 401", r.code)
	}
}

func TestNewHTTPErrors(t *testing.T) {
	t.Parallel()
	busy, _ := newTestHTTP(t, testHTTPConfig(), HTTPOptions{})
	tests := []struct {
		name    string
		mutate  func(*HTTPConfig)
		wantErr string
	}{
		{"invalid config", func(c *HTTPConfig) { c.Path = "events" }, "path: must start with /"},
		{"missing token file", func(c *HTTPConfig) { c.BearerTokenFile = "/nonexistent/token" }, "bearer_token_file"},
		{"address in use", func(c *HTTPConfig) { c.Listen = busy.Addr().String() }, "listening on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testHTTPConfig()
			tt.mutate(&cfg)
			_, err := NewHTTP(cfg, HTTPOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewHTTP = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
