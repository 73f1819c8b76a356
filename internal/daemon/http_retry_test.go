package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
)

// TestHTTPRetriesUnderThrottleLandOnce is the throttled run of issue 11:
// five clients post while Power BI answers 429 for 30 s; pushd answers 503
// after response_timeout (5 s) and the clients retry every 503 (and 429)
// with the same Idempotency-Key. Every distinct event must land exactly
// once. Before, each 503 left the request's events queued, and the retries
// queued them again: they landed twice.
func TestHTTPRetriesUnderThrottleLandOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 40 s (a 30 s throttle)")
	}
	emu, ca := testEmulator(t, func(c *emulator.Config) {
		c.Faults = emulator.Faults{ThrottleFor: 30 * time.Second}
	})
	id, err := emu.CreateDataset(testWorkspace, emulator.CreateDatasetRequest{
		Name: "Ingest", DefaultMode: "Push",
		Tables: []emulator.Table{{Name: "Events", Columns: []emulator.Column{{Name: "Seq", DataType: "Int64"}}}},
	}, emulator.RetentionNone)
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, powerbiSection(emu, ca)+fmt.Sprintf(`
pipelines:
  - name: ingest
    source:
      type: http
      http:
        listen: 127.0.0.1:0
        response_timeout: 5s
    target:
      workspace_id: %s
      dataset_name: Ingest
      table: Events
    schema:
      columns:
        - {name: Seq, type: Int64, from: seq, required: true}
    batch: {max_rows: 100, linger: 50ms}
    dead_letter:
      path: %s
`, testWorkspace, filepath.Join(t.TempDir(), "dl.ndjson")))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Options{Config: cfg, Ready: func(d *Daemon) { addr <- d.HTTPSourceAddr("ingest") }})
		done <- err
	}()
	url := "http://" + <-addr + "/v1/events"

	const clients, requests, perRequest = 5, 6, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[int]int{}
	for c := range clients {
		wg.Go(func() {
			for r := range requests {
				first := (c*requests + r) * perRequest
				var body bytes.Buffer
				for i := range perRequest {
					fmt.Fprintf(&body, "{\"seq\":%d}\n", first+i)
				}
				codes := postUntilDone(t, url, "client-"+strconv.Itoa(c)+"-"+strconv.Itoa(r), body.Bytes())
				mu.Lock()
				for _, code := range codes {
					answers[code]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("answers by status: %v", answers)
	if answers[http.StatusServiceUnavailable] == 0 {
		t.Fatal("no request was answered 503: the throttle did not bite and the test proves nothing")
	}

	counts := map[int64]int{}
	for _, row := range emu.Rows(id, "Events") {
		var r struct{ Seq int64 }
		if err := json.Unmarshal(row, &r); err != nil {
			t.Fatal(err)
		}
		counts[r.Seq]++
	}
	const n = clients * requests * perRequest
	for seq := range int64(n) {
		if counts[seq] != 1 {
			t.Errorf("event %d landed %d times, want once", seq, counts[seq])
		}
	}
	if len(counts) != n {
		t.Errorf("%d distinct events landed, want %d", len(counts), n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// postUntilDone posts body with key until it is answered 200, waiting what
// Retry-After says (at most 2 s, to retry often during the throttle), and
// returns every status received.
func postUntilDone(t *testing.T, url, key string, body []byte) []int {
	var codes []int
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			t.Error(err)
			return codes
		}
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("POST %s: %v", key, err)
			return codes
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		switch resp.StatusCode {
		case http.StatusOK:
			return codes
		case http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusConflict:
			wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			time.Sleep(min(time.Duration(wait)*time.Second, 2*time.Second))
		default:
			t.Errorf("POST %s: status %d", key, resp.StatusCode)
			return codes
		}
	}
	t.Errorf("POST %s: not answered 200 in 3 minutes (answers %v)", key, codes)
	return codes
}

// TestHTTPRequestsDuringDrainAreRefusedAtOnce: once shutdown starts, while
// the pipeline still drains (its send hangs), a new request is answered
// 503 with Retry-After at once instead of being held until the end.
func TestHTTPRequestsDuringDrainAreRefusedAtOnce(t *testing.T) {
	emu, ca := testEmulator(t, func(c *emulator.Config) { c.Faults.Latency = time.Minute })
	if _, err := emu.CreateDataset(testWorkspace, emulator.CreateDatasetRequest{
		Name: "Ingest", DefaultMode: "Push",
		Tables: []emulator.Table{{Name: "Events", Columns: []emulator.Column{{Name: "Seq", DataType: "Int64"}}}},
	}, emulator.RetentionNone); err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, powerbiSection(emu, ca)+fmt.Sprintf(`
shutdown_timeout: 20s
pipelines:
  - name: ingest
    source:
      type: http
      http:
        listen: 127.0.0.1:0
    target:
      workspace_id: %s
      dataset_name: Ingest
      table: Events
    schema:
      columns:
        - {name: Seq, type: Int64, from: seq}
    batch: {linger: 10ms}
    dead_letter:
      path: %s
`, testWorkspace, filepath.Join(t.TempDir(), "dl.ndjson")))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Options{Config: cfg, Ready: func(d *Daemon) { addr <- d.HTTPSourceAddr("ingest") }})
		done <- err
	}()
	url := "http://" + <-addr + "/v1/events"
	go func() {
		if resp, err := http.Post(url, "application/x-ndjson", bytes.NewReader([]byte("{\"seq\":1}\n"))); err == nil {
			resp.Body.Close()
		}
	}()
	for emu.Stats().MaxInFlight == 0 {
		time.Sleep(20 * time.Millisecond) // the first request's batch is posted and hangs
	}
	cancel()
	var resp *http.Response
	// A request that comes before the drain has begun may still be queued,
	// and then waits for the drain's end: such a one is given up after 2s.
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		// Once the drain has begun every request is refused. The first
		// request holds the drain for up to shutdown_timeout (20 s), so a
		// refusal now is "at once".
		r, err := client.Post(url, "application/x-ndjson", bytes.NewReader([]byte("{\"seq\":2}\n")))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil {
			t.Fatalf("POST during drain: %v", err)
		}
		if r.StatusCode == http.StatusServiceUnavailable {
			resp = r
			break
		}
		r.Body.Close()
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Retry-After") == "" {
		t.Fatalf("503 during drain without Retry-After: %s", body)
	}
	select {
	case <-done:
		t.Fatal("Run ended before the request was refused: the test proves nothing")
	default:
	}
}
