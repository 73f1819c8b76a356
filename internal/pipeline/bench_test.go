package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
	"gopkg.in/yaml.v3"
)

// loopSource yields the sample events over and over, n in all, as stdin
// would: each event is its own buffer.
type loopSource struct {
	events [][]byte
	n      int
	i      int
}

func (s *loopSource) Read(context.Context) (source.Event, source.Ack, error) {
	if s.i >= s.n {
		return source.Event{}, nil, source.ErrEndOfInput
	}
	ev := s.events[s.i%len(s.events)]
	s.i++
	return source.Event{Data: ev, Position: "bench"}, nil, nil
}

func (s *loopSource) Close(context.Context) error { return nil }

// encodingSender builds each request body exactly as pushapi does and
// throws it away.
type encodingSender struct {
	buf   []byte
	bytes atomic.Int64
}

func (e *encodingSender) PostRows(_ context.Context, _ pushapi.Target, rows []json.RawMessage) error {
	b := append(e.buf[:0], `{"rows":[`...)
	for i, r := range rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r...)
	}
	b = append(b, "]}"...)
	e.buf = b
	e.bytes.Add(int64(len(b)))
	return nil
}

// quickstartSchema reads the schema of configs/quickstart.yaml.
func quickstartSchema(tb testing.TB) schema.Config {
	tb.Helper()
	data, err := os.ReadFile("../../configs/quickstart.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	var doc struct {
		Pipelines []struct {
			Schema schema.Config `yaml:"schema"`
		} `yaml:"pipelines"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		tb.Fatal(err)
	}
	return doc.Pipelines[0].Schema
}

// BenchmarkPipeline measures map, batch and encode of the sample events
// (configs/sample-events.ndjson with the quick start's schema) through the
// real read loop, trackers and acks, with a sender that only encodes the
// request bodies. One op is one event, which makes one row.
//
//	go test -run '^$' -bench Pipeline -benchmem -cpu 1 ./internal/pipeline/
func BenchmarkPipeline(b *testing.B) {
	data, err := os.ReadFile("../../configs/sample-events.ndjson")
	if err != nil {
		b.Fatal(err)
	}
	events := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	mapper, err := schema.New(quickstartSchema(b))
	if err != nil {
		b.Fatal(err)
	}
	snd := &encodingSender{}
	p, err := New(Options{
		Name:       "bench",
		Source:     &loopSource{events: events, n: b.N},
		Mapper:     mapper,
		Batch:      batcher.Config{MaxRows: batcher.LimitRows, MaxBytes: batcher.LimitBytes, Linger: time.Second},
		Target:     pushapi.Target{DatasetID: "ds", Table: "t"},
		Sender:     snd,
		DeadLetter: &memDeadLetter{},
		Senders:    1,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	s, err := p.Run(context.Background())
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if s.RowsAccepted != int64(b.N) {
		b.Fatalf("%d rows accepted, want %d", s.RowsAccepted, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(snd.bytes.Load())/float64(b.N), "body-bytes/row")
}
