package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
)

// sliceSource yields fixed events and records their acks.
type sliceSource struct {
	mu     sync.Mutex
	events [][]byte
	next   int
	acks   map[int]error
	acked  chan struct{}
	block  bool // after the events, block instead of ending
}

func newSliceSource(events ...string) *sliceSource {
	s := &sliceSource{acks: map[int]error{}, acked: make(chan struct{}, len(events))}
	for _, e := range events {
		s.events = append(s.events, []byte(e))
	}
	return s
}

func (s *sliceSource) Read(ctx context.Context) (source.Event, source.Ack, error) {
	s.mu.Lock()
	if s.next >= len(s.events) {
		s.mu.Unlock()
		if s.block {
			<-ctx.Done()
			return source.Event{}, nil, ctx.Err()
		}
		return source.Event{}, nil, source.ErrEndOfInput
	}
	i := s.next
	s.next++
	s.mu.Unlock()
	return source.Event{Data: s.events[i], Position: fmt.Sprintf("test:%d", i)}, func(err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, dup := s.acks[i]; dup {
			panic(fmt.Sprintf("event %d acked twice", i))
		}
		s.acks[i] = err
		s.acked <- struct{}{}
	}, nil
}

func (s *sliceSource) Close(context.Context) error { return nil }

// fakeSender accepts rows unless a row contains a marker, in which case it
// answers 400 for the whole request, as Power BI does.
type fakeSender struct {
	mu       sync.Mutex
	accepted []string
	requests int
	bad      string
	fail     error // returned for every request when set
}

func (f *fakeSender) PostRows(ctx context.Context, t pushapi.Target, rows []json.RawMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if f.fail != nil {
		return f.fail
	}
	for _, r := range rows {
		if f.bad != "" && bytes.Contains(r, []byte(f.bad)) {
			return &pushapi.APIError{Op: "PostRows", Status: http.StatusBadRequest, Code: "BadRequest", Message: "value does not fit column"}
		}
	}
	for _, r := range rows {
		f.accepted = append(f.accepted, string(r))
	}
	return nil
}

type memDeadLetter struct {
	mu   sync.Mutex
	got  []Rejection
	fail error
}

func (m *memDeadLetter) Write(_ context.Context, r Rejection) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.got = append(m.got, r)
	return nil
}

func testMapper(t *testing.T) *schema.Mapper {
	t.Helper()
	m, err := schema.New(schema.Config{Columns: []schema.Column{
		{Name: "id", Type: "Int64", Required: true},
		{Name: "name", Type: "String"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newTestPipeline(t *testing.T, src source.Source, snd pushapi.Sender, dl DeadLetter, maxRows int) *Pipeline {
	t.Helper()
	p, err := New(Options{
		Name:       "test",
		Source:     src,
		Mapper:     testMapper(t),
		Batch:      batcher.Config{MaxRows: maxRows, MaxBytes: 16_000_000, Linger: 10 * time.Millisecond},
		Target:     pushapi.Target{DatasetID: "ds", Table: "t"},
		Sender:     snd,
		DeadLetter: dl,
		Senders:    2,
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunDeliversAndAcksEveryEvent(t *testing.T) {
	var events []string
	for i := range 1000 {
		events = append(events, fmt.Sprintf(`{"id":%d,"name":"n%d"}`, i, i))
	}
	// An array event fans out into rows that straddle batches.
	events = append(events, `[{"id":5000},{"id":5001},{"id":5002}]`)
	src := newSliceSource(events...)
	snd := &fakeSender{}
	dl := &memDeadLetter{}
	s, err := newTestPipeline(t, src, snd, dl, 7).Run(context.Background())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s.RowsAccepted != 1003 || len(snd.accepted) != 1003 {
		t.Fatalf("accepted %d rows (sender saw %d), want 1003", s.RowsAccepted, len(snd.accepted))
	}
	if len(src.acks) != len(events) {
		t.Fatalf("%d events acked, want %d", len(src.acks), len(events))
	}
	for i, err := range src.acks {
		if err != nil {
			t.Errorf("event %d acked with %v", i, err)
		}
	}
	if len(dl.got) != 0 {
		t.Errorf("dead letter got %d entries, want 0", len(dl.got))
	}
}

func TestRunIsolatesTheBadRow(t *testing.T) {
	var events []string
	for i := range 100 {
		name := fmt.Sprintf("n%d", i)
		if i == 42 {
			name = "BAD"
		}
		events = append(events, fmt.Sprintf(`{"id":%d,"name":%q}`, i, name))
	}
	src := newSliceSource(events...)
	snd := &fakeSender{bad: "BAD"}
	dl := &memDeadLetter{}
	s, err := newTestPipeline(t, src, snd, dl, 100).Run(context.Background())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s.RowsAccepted != 99 || s.RowsDeadLettered != 1 {
		t.Fatalf("accepted %d, dead-lettered %d; want 99 and 1", s.RowsAccepted, s.RowsDeadLettered)
	}
	if len(dl.got) != 1 {
		t.Fatalf("dead letter holds %d entries, want 1", len(dl.got))
	}
	r := dl.got[0]
	if r.Event.Position != "test:42" || r.Status != 400 || r.Code != "BadRequest" || r.Kind != "rejected" {
		t.Errorf("dead letter entry = %+v, want event test:42 rejected with 400 BadRequest", r)
	}
	if !errors.Is(src.acks[42], source.ErrDeadLettered) {
		t.Errorf("bad event acked with %v, want ErrDeadLettered", src.acks[42])
	}
	for i, err := range src.acks {
		if i != 42 && err != nil {
			t.Errorf("event %d acked with %v", i, err)
		}
	}
}

func TestRunDeadLettersEventsThatDoNotMap(t *testing.T) {
	src := newSliceSource(
		`{"id":1}`,
		`not json`,
		`[{"id":2},{"name":"no id"},{"id":3}]`,
		`{"id":"x"}`,
	)
	snd := &fakeSender{}
	dl := &memDeadLetter{}
	s, err := newTestPipeline(t, src, snd, dl, 100).Run(context.Background())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s.RowsAccepted != 3 {
		t.Errorf("accepted %d rows, want 3", s.RowsAccepted)
	}
	want := []struct {
		pos, field, rule string
		index            int
	}{
		{"test:1", "", "syntax", 0},
		{"test:2", "id", "required", 1},
		{"test:3", "id", "type", 0},
	}
	if len(dl.got) != len(want) {
		t.Fatalf("dead letter = %+v, want %d entries", dl.got, len(want))
	}
	for i, w := range want {
		g := dl.got[i]
		if g.Event.Position != w.pos || g.Field != w.field || g.Rule != w.rule || g.Index != w.index || g.Kind != "mapping" {
			t.Errorf("entry %d = {pos %s field %q rule %q index %d kind %s}, want %+v", i, g.Event.Position, g.Field, g.Rule, g.Index, g.Kind, w)
		}
	}
	if src.acks[0] != nil || !errors.Is(src.acks[1], source.ErrDeadLettered) || !errors.Is(src.acks[3], source.ErrDeadLettered) {
		t.Errorf("acks = %v", src.acks)
	}
}

func TestRunStopsWhenTheTargetIsRefused(t *testing.T) {
	src := newSliceSource(`{"id":1}`, `{"id":2}`)
	src.block = true
	snd := &fakeSender{fail: &pushapi.APIError{Op: "PostRows", Status: 404, Code: "ItemNotFound", Message: "Dataset ds is not Push API dataset."}}
	dl := &memDeadLetter{}
	_, err := newTestPipeline(t, src, snd, dl, 100).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ItemNotFound") {
		t.Fatalf("Run error = %v, want the 404 ItemNotFound", err)
	}
	if len(dl.got) != 0 {
		t.Errorf("dead letter got %d entries; a refused target must not dead-letter the stream", len(dl.got))
	}
	for i, e := range src.acks {
		if e == nil || errors.Is(e, source.ErrDeadLettered) {
			t.Errorf("event %d acked with %v, want a delivery error (it must come again)", i, e)
		}
	}
}

func TestRunStopsWhenTheDeadLetterFails(t *testing.T) {
	src := newSliceSource(`{"id":1}`, `bad`, `{"id":3}`)
	src.block = true
	snd := &fakeSender{}
	dl := &memDeadLetter{fail: errors.New("disk full")}
	_, err := newTestPipeline(t, src, snd, dl, 100).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Run error = %v, want the dead letter failure", err)
	}
	if e := src.acks[1]; e == nil || errors.Is(e, source.ErrDeadLettered) {
		t.Errorf("event whose dead letter failed acked with %v, want an error", e)
	}
}

// slowSender blocks every request until its context ends.
type slowSender struct{}

func (slowSender) PostRows(ctx context.Context, _ pushapi.Target, _ []json.RawMessage) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestRunShutdownTimeoutCancelsSendsAndAcksWithError(t *testing.T) {
	src := newSliceSource(`{"id":1}`, `{"id":2}`)
	src.block = true
	p, err := New(Options{
		Name: "test", Source: src, Mapper: testMapper(t),
		Batch:  batcher.Config{MaxRows: 1, MaxBytes: 1000, Linger: time.Millisecond},
		Target: pushapi.Target{DatasetID: "ds", Table: "t"}, Sender: slowSender{}, DeadLetter: &memDeadLetter{},
		ShutdownTimeout: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for range 2 { // wait until both events are read... then stop
			for {
				src.mu.Lock()
				n := src.next
				src.mu.Unlock()
				if n == 2 {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		cancel()
	}()
	s, err := p.Run(ctx)
	if !errors.Is(err, ErrShutdownTimeout) || !s.ShutdownTimedOut {
		t.Fatalf("Run = %v (timed out %v), want ErrShutdownTimeout", err, s.ShutdownTimedOut)
	}
	if len(src.acks) != 2 {
		t.Fatalf("%d events acked, want 2", len(src.acks))
	}
	for i, e := range src.acks {
		if e == nil {
			t.Errorf("event %d acked as delivered although its send was cancelled", i)
		}
	}
}

// tooLargeSender answers 413 to any request of more than max rows, as
// Power BI does for a body over its size limit.
type tooLargeSender struct {
	fakeSender
	max int
}

func (s *tooLargeSender) PostRows(ctx context.Context, t pushapi.Target, rows []json.RawMessage) error {
	if len(rows) > s.max {
		s.mu.Lock()
		s.requests++
		s.mu.Unlock()
		return &pushapi.APIError{Op: "PostRows", Status: http.StatusRequestEntityTooLarge, Code: "RequestEntityTooLarge", Message: "request too large"}
	}
	return s.fakeSender.PostRows(ctx, t, rows)
}

func TestRunSplitsABatchRefusedAsTooLarge(t *testing.T) {
	var events []string
	for i := range 100 {
		events = append(events, fmt.Sprintf(`{"id":%d}`, i))
	}
	src := newSliceSource(events...)
	snd := &tooLargeSender{max: 30}
	dl := &memDeadLetter{}
	s, err := newTestPipeline(t, src, snd, dl, 100).Run(context.Background())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s.RowsAccepted != 100 || len(snd.accepted) != 100 || len(dl.got) != 0 {
		t.Fatalf("accepted %d (sender %d), dead-lettered %d; want all 100 accepted after splitting", s.RowsAccepted, len(snd.accepted), len(dl.got))
	}
	if s.BatchesSplit == 0 {
		t.Error("no batch was split")
	}
	for i, err := range src.acks {
		if err != nil {
			t.Errorf("event %d acked with %v", i, err)
		}
	}
}

// staticTokens hands out one token; the fake Power BI does not check it.
type staticTokens struct{}

func (staticTokens) Token(context.Context) (string, error) { return "token", nil }
func (staticTokens) Invalidate(string)                     {}

// TestRunDeadLettersRowsWhenRetriesRunOut: with powerbi.retry.max_elapsed
// set, the rows of a batch that still fails when it has passed (Power BI
// answering 503 throughout) go to the dead letter with rule
// retries_exhausted, their events are acked as dead-lettered (so a source
// commits them), and the pipeline goes on rather than stop.
func TestRunDeadLettersRowsWhenRetriesRunOut(t *testing.T) {
	var posts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"ServiceUnavailable","message":"try later"}}`))
	}))
	defer srv.Close()
	client, err := pushapi.NewClient(pushapi.Config{
		APIURL: srv.URL,
		Retry:  pushapi.RetryConfig{InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxElapsed: 100 * time.Millisecond},
	}, staticTokens{}, srv.Client(), pushapi.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := newSliceSource(`{"id":1}`, `{"id":2}`, `{"id":3}`)
	dl := &memDeadLetter{}
	s, err := newTestPipeline(t, src, client, dl, 100).Run(context.Background())
	if err != nil {
		t.Fatalf("Run = %v, want nil: running out of retries dead-letters, it does not stop the pipeline", err)
	}
	if posts.Load() < 2 {
		t.Errorf("%d requests, want retries before giving up", posts.Load())
	}
	if s.RowsDeadLettered != 3 || len(dl.got) != 3 || s.EventsFailed != 0 {
		t.Fatalf("summary %+v, %d dead letters; want all 3 rows dead-lettered and no event failed", s, len(dl.got))
	}
	for _, r := range dl.got {
		if r.Kind != "rejected" || r.Rule != "retries_exhausted" || !strings.Contains(r.Message, "503") || len(r.Row) == 0 {
			t.Errorf("dead letter %+v, want kind rejected, rule retries_exhausted, the last answer and the row", r)
		}
	}
	for i, e := range src.acks {
		if !errors.Is(e, source.ErrDeadLettered) {
			t.Errorf("event %d acked with %v, want ErrDeadLettered", i, e)
		}
	}
}
