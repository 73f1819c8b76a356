package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/daemon"
	"github.com/pushd/pushd/internal/emulator"
)

// httpSource is an HTTP source section on a free loopback port.
func httpSource(extra string) string {
	return "      type: http\n      http:\n        listen: 127.0.0.1:0\n" + extra
}

// runDaemon runs the daemon in-process with the config text and returns it
// once its pipelines are built, with a stop function that ends the run (as
// SIGTERM does) and returns its error.
func runDaemon(t *testing.T, text string) (*daemon.Daemon, func() error) {
	t.Helper()
	cfg, err := config.Parse([]byte(text), "e2e.yaml")
	if err != nil {
		t.Fatalf("config:\n%v\n%s", err, text)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *daemon.Daemon, 1)
	done := make(chan error, 1)
	go func() {
		_, err := daemon.Run(ctx, daemon.Options{
			Config: cfg,
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError})),
			Ready:  func(d *daemon.Daemon) { ready <- d },
		})
		done <- err
	}()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	select {
	case d := <-ready:
		return d, stop
	case err := <-done:
		t.Fatalf("daemon.Run ended before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon not ready after 30s")
	}
	return nil, nil
}

// testWriter sends the daemon's error logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// post sends body to url and returns the status, Retry-After and body.
func post(t *testing.T, url, contentType string, body []byte) (int, string, []byte) {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Errorf("POST %s: %v", url, err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), data
}

// TestHTTPSource drives the HTTP ingest source inside the real daemon:
// concurrent clients whose 200-answered events all land (through injected
// 5xx answers that pushd retries), 413 for an oversize body, 400 for
// malformed ones, and 429 or 503 with Retry-After when the pipeline is
// saturated.
func TestHTTPSource(t *testing.T) {
	t.Parallel()
	emu, ca, id := testEmulator(t, func(c *emulator.Config) {
		noQuotas(c)
		c.Faults.ErrorRate = 0.1
		c.Seed = 11
	})
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	const maxBody = 64 << 10
	d, stop := runDaemon(t, s.config("http", pipelineOptions{
		source: httpSource(fmt.Sprintf("        max_body_bytes: %d\n", maxBody)),
		batch:  "{max_rows: 1000, linger: 20ms}",
		limits: raisedLimits,
	}))
	url := "http://" + d.HTTPSourceAddr("telemetry") + "/v1/events"

	t.Run("concurrent clients", func(t *testing.T) {
		const clients, perRequest, n = 8, 25, 4000
		events := telemetry(t, n)
		var mu sync.Mutex
		answered := map[int64]bool{} // seqs of events answered 200
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				// Client c posts every clients-th request of perRequest events.
				for start := c * perRequest; start < n; start += clients * perRequest {
					body := append(bytes.Join(events[start:start+perRequest], []byte("\n")), '\n')
					status, _, resp := post(t, url, "application/x-ndjson", body)
					var counts struct{ Accepted, DeadLettered int }
					if status != http.StatusOK || json.Unmarshal(resp, &counts) != nil || counts.Accepted != perRequest {
						t.Errorf("client %d, events %d..: %d %s, want 200 with %d accepted", c, start+1, status, resp, perRequest)
						continue
					}
					mu.Lock()
					for seq := start + 1; seq <= start+perRequest; seq++ {
						answered[int64(seq)] = true
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(answered) != n {
			t.Fatalf("%d of %d events answered 200", len(answered), n)
		}
		// Answered means landed: no waiting.
		counts := seqCounts(t, emu, id)
		for seq := range answered {
			if counts[seq] != 1 {
				t.Fatalf("seq %d was answered 200 and landed %d times", seq, counts[seq])
			}
		}
		if st := emu.Stats(); st.InjectedErrors == 0 {
			t.Fatal("no 5xx was injected: the test shows less than it claims")
		} else {
			t.Logf("%d events from %d clients answered 200, all landed once, through %d injected 5xx answers", n, clients, st.InjectedErrors)
		}
	})

	for _, tc := range []struct {
		name        string
		contentType string
		body        []byte
		wantStatus  int
		wantInBody  string
	}{
		{"oversize body", "application/x-ndjson", bytes.Repeat([]byte(`{"seq":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`+"\n"), maxBody/80+10), http.StatusRequestEntityTooLarge, "max_body_bytes"},
		{"malformed NDJSON line", "application/x-ndjson", []byte("{\"seq\":1}\n{\"seq\":\n"), http.StatusBadRequest, "line 2"},
		{"malformed JSON array", "application/json", []byte(`[{"seq":1},{"seq":2]`), http.StatusBadRequest, ""},
		{"not an object", "application/x-ndjson", []byte("42\n"), http.StatusBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := emu.RowCount(id, table)
			status, _, body := post(t, url, tc.contentType, tc.body)
			if status != tc.wantStatus || !strings.Contains(string(body), tc.wantInBody) {
				t.Fatalf("%d %s, want %d naming %q", status, body, tc.wantStatus, tc.wantInBody)
			}
			if after := emu.RowCount(id, table); after != before {
				t.Fatalf("a refused request added %d rows", after-before)
			}
		})
	}
	if err := stop(); err != nil {
		t.Fatalf("daemon run: %v", err)
	}

	t.Run("saturated", func(t *testing.T) {
		emu, ca, _ := testEmulator(t, noQuotas)
		s := setup{emu: emu, ca: ca, dir: t.TempDir()}
		const maxUnacked, perRequest = 20, 10
		d, stop := runDaemon(t, s.config("saturated", pipelineOptions{
			source:     httpSource("        response_timeout: 2s\n"),
			batch:      "{max_rows: 1000, linger: 20ms}",
			limits:     raisedLimits,
			maxUnacked: maxUnacked,
		}))
		url := "http://" + d.HTTPSourceAddr("telemetry") + "/v1/events"
		emu.SetFaults(emulator.Faults{ThrottleFor: time.Minute, ThrottleRetryAfter: time.Second})
		events := telemetry(t, 1000)
		body := func(i int) []byte {
			return append(bytes.Join(events[i*perRequest:(i+1)*perRequest], []byte("\n")), '\n')
		}

		// Four requests of 10 events at once: two fill max_unacked_events
		// and wait for a Power BI that answers 429 until response_timeout
		// (503); the others are turned away at once (429).
		type answer struct {
			status     int
			retryAfter string
			body       []byte
		}
		answers := make(chan answer, 4)
		for i := range 4 {
			go func() {
				status, retryAfter, resp := post(t, url, "application/x-ndjson", body(i))
				answers <- answer{status, retryAfter, resp}
			}()
		}
		byStatus := map[int]int{}
		for range 4 {
			a := <-answers
			if a.status != http.StatusTooManyRequests && a.status != http.StatusServiceUnavailable {
				t.Fatalf("answer %d %s, want 429 or 503 while saturated", a.status, a.body)
			}
			if n, err := strconv.Atoi(a.retryAfter); err != nil || n < 1 {
				t.Fatalf("answer %d with Retry-After %q, want whole seconds", a.status, a.retryAfter)
			}
			byStatus[a.status]++
		}
		if byStatus[http.StatusTooManyRequests] < 2 || byStatus[http.StatusServiceUnavailable] < 1 {
			t.Fatalf("answers by status %v: want at least two 429 (no room for their events) and a 503 (admitted, undelivered at response_timeout)", byStatus)
		}
		t.Logf("saturated with %d events in flight: answers by status %v, all with Retry-After", maxUnacked, byStatus)
		emu.SetFaults(emulator.Faults{})
		if err := stop(); err != nil {
			t.Fatalf("daemon run: %v", err)
		}
	})
}
