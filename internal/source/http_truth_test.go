package source

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// errTestFailed is an ack error: the event was not delivered.
var errTestFailed = errors.New("posting rows: 500")

// postKey posts body as NDJSON with an Idempotency-Key (none when key is "").
func postKey(t *testing.T, url, key string, body []byte) httpResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return httpResult{code: resp.StatusCode, header: resp.Header, body: b.String()}
}

type answer503 struct {
	Accepted, Failed int
	FailedEvents     []int `json:"failed_events"`
	PendingEvents    []int `json:"pending_events"`
}

func decode503(t *testing.T, r httpResult) answer503 {
	t.Helper()
	var a answer503
	if r.code != http.StatusServiceUnavailable || json.Unmarshal([]byte(r.body), &a) != nil {
		t.Fatalf("status %d body %s, want a 503 with the events' outcome", r.code, r.body)
	}
	return a
}

// TestHTTPTimeoutWithdrawsWhatIsNotSent: a request past response_timeout
// is answered 503 naming its events: those not yet taken for sending are
// withdrawn (failed_events: they never reach the pipeline's sender), those
// already taken are pending_events. Before, every event stayed queued and
// landed after the 503, so a client's retry duplicated them.
func TestHTTPTimeoutWithdrawsWhatIsNotSent(t *testing.T) {
	cfg := testHTTPConfig()
	cfg.ResponseTimeout = time.Second // room for the test to act before it on a loaded machine
	h, url := newTestHTTP(t, cfg, HTTPOptions{})
	got := make(chan httpResult, 1)
	go func() { got <- postKey(t, url, "", []byte("{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n")) }()
	// The pipeline reads the first event and takes it for sending (as a
	// sender does with Batch.Take), then reads nothing more until the
	// answer came.
	held := readN(t, h, 1)
	if !held[0].ev.Claim.Take() {
		t.Fatal("a fresh event could not be taken")
	}
	a := decode503(t, <-got)
	if a.Accepted != 0 || a.Failed != 2 || len(a.FailedEvents) != 2 || a.FailedEvents[0] != 1 || a.FailedEvents[1] != 2 ||
		len(a.PendingEvents) != 1 || a.PendingEvents[0] != 0 {
		t.Fatalf("answer %+v, want events 1 and 2 failed (withdrawn) and 0 pending", a)
	}
	// The withdrawn events never come out of Read; they are acked.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if ev, _, err := h.Read(ctx); err == nil {
		t.Fatalf("Read returned withdrawn event %s", ev.Data)
	}
	held[0].ack(nil)
	if n := h.unacked.Load(); n != 0 {
		t.Fatalf("%d events still count as in flight", n)
	}
}

// TestHTTPIdempotencyKey: a retry with the same key never queues an event
// twice: after the request landed it is answered from what is known; while
// its events are pending it waits for them; after a partial failure only
// the failed events are queued again; another body under the key is 422.
func TestHTTPIdempotencyKey(t *testing.T) {
	cfg := testHTTPConfig()
	cfg.ResponseTimeout = time.Second // room for the test to act before it on a loaded machine
	h, url := newTestHTTP(t, cfg, HTTPOptions{})
	body := []byte("{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n")

	// First attempt: event 0 is taken and stays pending, 1 fails, 2 is
	// withdrawn at the timeout.
	got := make(chan httpResult, 1)
	go func() { got <- postKey(t, url, "k1", body) }()
	held := readN(t, h, 2)
	held[0].ev.Claim.Take()
	held[1].ev.Claim.Take()
	held[1].ack(errTestFailed)
	a := decode503(t, <-got)
	if len(a.PendingEvents) != 1 || a.PendingEvents[0] != 0 || len(a.FailedEvents) != 2 {
		t.Fatalf("first answer %+v, want 0 pending and 1, 2 failed", a)
	}

	// The retry queues only 1 and 2; 0 is still pending and is not sent
	// again. It lands, and so do the two others: 200 for all three.
	go func() { got <- postKey(t, url, "k1", body) }()
	again := readN(t, h, 2)
	for _, e := range again {
		if i := e.ev.Position[strings.LastIndexByte(e.ev.Position, '/')+1:]; i != "1" && i != "2" {
			t.Fatalf("retry queued event %s (%s), want only 1 and 2", i, e.ev.Data)
		}
		e.ack(nil)
	}
	held[0].ack(nil)
	if r := <-got; r.code != http.StatusOK || !strings.Contains(r.body, `"accepted":3`) {
		t.Fatalf("retry: status %d body %s, want 200 with the 3 events accepted", r.code, r.body)
	}

	// After it landed: answered at once, nothing queued.
	if r := postKey(t, url, "k1", body); r.code != http.StatusOK || !strings.Contains(r.body, `"accepted":3`) {
		t.Fatalf("retry after landing: status %d body %s, want 200", r.code, r.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if ev, _, err := h.Read(ctx); err == nil {
		t.Fatalf("a retry of a landed request queued %s", ev.Data)
	}

	// Another body under the same key is refused.
	if r := postKey(t, url, "k1", []byte("{\"i\":9}\n")); r.code != http.StatusUnprocessableEntity {
		t.Fatalf("another body under the key: status %d body %s, want 422", r.code, r.body)
	}
	if r := postKey(t, url, "bad key", body); r.code != http.StatusBadRequest {
		t.Fatalf("key with a space: status %d, want 400", r.code)
	}
}

// TestHTTPIdempotencyRetention: keys are forgotten after idempotency_ttl
// and past idempotency_max_keys, oldest first, never while their events
// are in flight.
func TestHTTPIdempotencyRetention(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := newIngestStore(time.Hour, 2, func() time.Time { return now })
	settled := func(key string) *ingestEntry {
		e, created := s.lookup(key)
		if !created {
			t.Fatalf("key %s already known", key)
		}
		e.init([32]byte{}, 1)
		return e
	}
	settled("a")
	b := settled("b")
	b.queue([]int{0}, make([]Claim, 1)) // b has an event in flight
	settled("c")                        // over max: a goes, b stays
	if _, created := s.lookup("a"); !created {
		t.Fatal("the oldest settled key was kept past idempotency_max_keys")
	}
	if _, created := s.lookup("b"); created {
		t.Fatal("a key with events in flight was forgotten")
	}
	now = now.Add(2 * time.Hour)
	s.lookup("d")
	if _, created := s.lookup("c"); !created {
		t.Fatal("a key was kept past idempotency_ttl")
	}
	if _, created := s.lookup("b"); created {
		t.Fatal("a key with events in flight expired")
	}
}

// TestHTTPDrainRefusesAtOnce: once shutdown starts, a request is answered
// 503 with Retry-After at once, and the events queued but not read are
// answered as not landed.
func TestHTTPDrainRefusesAtOnce(t *testing.T) {
	h, url := newTestHTTP(t, testHTTPConfig(), HTTPOptions{})
	got := make(chan httpResult, 1)
	go func() { got <- postKey(t, url, "", []byte("{}\n")) }()
	for h.unacked.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	h.Drain()
	if a := decode503(t, <-got); len(a.FailedEvents) != 1 {
		t.Fatalf("queued request: %+v, want its event failed", a)
	}
	start := time.Now()
	r := postKey(t, url, "", []byte("{}\n"))
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || time.Since(start) > 5*time.Second {
		t.Fatalf("during drain: status %d Retry-After %q after %v, want 503 at once", r.code, r.header.Get("Retry-After"), time.Since(start))
	}
}

// TestHTTPRetryAfterPassesOnThePause: Retry-After says how long Power BI
// asked to wait, not always 1.
func TestHTTPRetryAfterPassesOnThePause(t *testing.T) {
	h, url := newTestHTTP(t, testHTTPConfig(), HTTPOptions{MaxUnacked: 1, RetryAfterHint: func() time.Duration { return 29500 * time.Millisecond }})
	first := make(chan httpResult, 1)
	go func() { first <- postKey(t, url, "", []byte("{}\n")) }()
	held := readN(t, h, 1)
	r := postKey(t, url, "", []byte("{}\n"))
	held[0].ack(nil)
	<-first
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") != "30" {
		t.Fatalf("status %d Retry-After %q, want 429 and 30", r.code, r.header.Get("Retry-After"))
	}
}

// TestHTTPBodyReadTimeout: a body trickling in slower than
// body_read_timeout is answered 408, so it cannot hold a handler (nor
// shutdown) longer.
func TestHTTPBodyReadTimeout(t *testing.T) {
	cfg := testHTTPConfig()
	cfg.BodyReadTimeout = 300 * time.Millisecond
	h, _ := newTestHTTP(t, cfg, HTTPOptions{})
	conn, err := net.Dial("tcp", h.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: pushd\r\nContent-Length: 100\r\n\r\n{")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a trickling body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", resp.StatusCode)
	}
}
