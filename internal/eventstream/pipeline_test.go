package eventstream_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/pipeline"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
)

// backlog has n events {"id":0} to {"id":n-1} waiting from the start, as
// a Kafka topic with lag has, and counts their acks.
type backlog struct {
	mu    sync.Mutex
	n, i  int
	acked map[int]int
}

func (b *backlog) Read(context.Context) (source.Event, source.Ack, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.i >= b.n {
		return source.Event{}, nil, source.ErrEndOfInput
	}
	i := b.i
	b.i++
	return source.Event{Data: []byte(`{"id":` + strconv.Itoa(i) + `}`), Position: "backlog:" + strconv.Itoa(i)}, func(err error) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if err == nil {
			b.acked[i]++
		}
	}, nil
}

func (b *backlog) Close(context.Context) error { return nil }

type noDeadLetter struct{ t *testing.T }

func (d noDeadLetter) Write(_ context.Context, r pipeline.Rejection) error {
	d.t.Errorf("dead-lettered: %+v", r)
	return nil
}

// TestPipelineBacklogToEventstream: a pipeline whose target is the
// eventstream (five senders sharing the target's queue, which takes every
// waiting row up to the batch bounds) moves a standing backlog: each
// produce carries a full batch of the target's default 1,000 rows, every
// event lands once and is acked once.
func TestPipelineBacklogToEventstream(t *testing.T) {
	const n = 20_000
	e := start(t, 4)
	cfg := e.Config()
	tg := newTarget(t, cfg, nil)
	m, err := schema.New(schema.Config{Columns: []schema.Column{{Name: "id", Type: "Int64", Required: true}}})
	if err != nil {
		t.Fatal(err)
	}
	batch := cfg.Batch
	batch.Linger = time.Minute // a batch closes for the bounds only: what is counted here
	src := &backlog{n: n, acked: map[int]int{}}
	p, err := pipeline.New(pipeline.Options{Name: "p", Source: src, Mapper: m, DeadLetter: noDeadLetter{t},
		Targets:    []pipeline.TargetOptions{{Name: "fabric", Target: tg, Batch: batch, Senders: cfg.MaxInFlight}},
		MaxUnacked: 5_000})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	sum, err := p.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v (summary %+v)", err, sum)
	}
	ideal := (n + batch.MaxRows - 1) / batch.MaxRows
	if got := sum.Targets[0].Requests; sum.RowsAccepted != n || got > int64(ideal+ideal/100) {
		t.Errorf("%d rows accepted in %d produces, want %d in at most %d", sum.RowsAccepted, got, n, ideal+ideal/100)
	}
	msgs, err := e.Messages(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[int]int, n)
	for _, msg := range msgs {
		var row struct{ ID int }
		if err := json.Unmarshal(msg.Value, &row); err != nil {
			t.Fatalf("message %q: %v", msg.Value, err)
		}
		seen[row.ID]++
	}
	for i := range n {
		if seen[i] != 1 || src.acked[i] != 1 {
			t.Fatalf("event %d: produced %d times, acked %d times; want once each", i, seen[i], src.acked[i])
		}
	}
	if count, err := e.Count(ctx); err != nil || count != n {
		t.Errorf("%d messages in the topic (%v), want %d", count, err, n)
	}
}
