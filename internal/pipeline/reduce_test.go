package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/logtest"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/reduce"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
)

var reduceCols = []schema.Column{
	{Name: "device", Type: "String"},
	{Name: "ts", Type: "DateTime"},
	{Name: "v", Type: "Int64"},
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func reduceEvent(device string, at time.Duration, v int) string {
	return fmt.Sprintf(`{"device":%q,"ts":%q,"v":%d}`, device, t0.Add(at).Format(time.RFC3339Nano), v)
}

func aggregateReducer(t *testing.T, edit func(*reduce.Config)) *reduce.Reducer {
	t.Helper()
	c := reduce.DefaultConfig()
	c.Mode, c.Window, c.TimeColumn, c.GroupBy = reduce.ModeAggregate, 10*time.Second, "ts", []string{"device"}
	c.Aggregates = []reduce.Aggregate{{Name: "events", Function: "count"}, {Name: "total", Function: "sum", Column: "v"}}
	if edit != nil {
		edit(&c)
	}
	r, err := reduce.New(c, reduceCols)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func reducePipeline(t *testing.T, src source.Source, snd pushapi.Sender, dl DeadLetter, r *reduce.Reducer, maxUnacked int) *Pipeline {
	t.Helper()
	m, err := schema.New(schema.Config{Columns: reduceCols})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{
		Name: "reduce", Source: src, Mapper: m, Sender: snd, DeadLetter: dl, Senders: 2,
		Batch:      batcher.Config{MaxRows: 100, MaxBytes: 16_000_000, Linger: 10 * time.Millisecond},
		Target:     pushapi.Target{DatasetID: "ds", Table: "t"},
		MaxUnacked: maxUnacked, Reducer: r,
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// partitionSource is one Kafka partition as far as acks go: it commits
// below the lowest unacknowledged offset (never past one acked with an
// error), and checks at every commit that the rows of every committed event
// were accepted.
type partitionSource struct {
	mu      sync.Mutex
	events  []string
	window  []string // window key of each event, "" if none
	next    int
	acked   []bool
	failed  int // lowest offset acked with an error, -1 if none
	commit  int // next offset to read: all below are acked
	landed  func(window string) bool
	broken  []string
	ackErrs []error
}

func (s *partitionSource) OffsetOrdered() bool { return true }

func (s *partitionSource) Read(ctx context.Context) (source.Event, source.Ack, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next >= len(s.events) {
		return source.Event{}, nil, source.ErrEndOfInput
	}
	i := s.next
	s.next++
	meta := &source.Metadata{Topic: "events", Partition: 0, Offset: int64(i)}
	return source.Event{Data: []byte(s.events[i]), Meta: meta}, func(err error) { s.ack(i, err) }, nil
}

func (s *partitionSource) ack(i int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acked[i] {
		s.broken = append(s.broken, fmt.Sprintf("offset %d acked twice", i))
	}
	s.acked[i] = true
	s.ackErrs[i] = err
	if err != nil && !errors.Is(err, source.ErrDeadLettered) && (s.failed < 0 || i < s.failed) {
		s.failed = i
	}
	for s.commit < len(s.acked) && s.acked[s.commit] && (s.failed < 0 || s.commit < s.failed) {
		if w := s.window[s.commit]; w != "" && !s.landed(w) {
			s.broken = append(s.broken, fmt.Sprintf("offset %d committed before the row of %s landed", s.commit, w))
		}
		s.commit++
	}
}

func (s *partitionSource) Close(context.Context) error { return nil }

// windowSender records the (window, device) rows it accepts and sums them.
type windowSender struct {
	mu     sync.Mutex
	rows   map[string]map[string]float64 // "device@window" -> column -> value
	failed bool                          // answer every request with an error
}

func (w *windowSender) PostRows(_ context.Context, _ pushapi.Target, rows []json.RawMessage) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed {
		return errors.New("service unavailable")
	}
	for _, r := range rows {
		var m map[string]any
		if err := json.Unmarshal(r, &m); err != nil {
			return err
		}
		k := fmt.Sprint(m["device"], "@", m["window_start"])
		if w.rows[k] == nil {
			w.rows[k] = map[string]float64{}
		}
		w.rows[k]["events"] += m["events"].(float64)
		w.rows[k]["total"] += m["total"].(float64)
		w.rows[k]["rows"]++
	}
	return nil
}

func (w *windowSender) landed(k string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rows[k] != nil
}

// TestReduceAggregateOverKafka folds 4,000 events of 5 devices into four
// 10s windows with only 10 unacked events allowed: the windows hold no
// slot per event, so nothing is emitted early; every (window, device) row
// is exact, and no offset is committed before its row landed.
func TestReduceAggregateOverKafka(t *testing.T) {
	const n = 4000
	snd := &windowSender{rows: map[string]map[string]float64{}}
	src := &partitionSource{acked: make([]bool, n), ackErrs: make([]error, n), failed: -1, landed: snd.landed}
	want := map[string][2]float64{}
	for i := range n {
		dev := fmt.Sprint("d", i%5)
		at := time.Duration(i) * 10 * time.Millisecond // 40s in all
		src.events = append(src.events, reduceEvent(dev, at, i))
		k := fmt.Sprint(dev, "@", t0.Add(at).Truncate(10*time.Second).Format("2006-01-02T15:04:05.000Z"))
		src.window = append(src.window, k)
		c := want[k]
		want[k] = [2]float64{c[0] + 1, c[1] + float64(i)}
	}
	r := aggregateReducer(t, nil)
	p := reducePipeline(t, src, snd, &memDeadLetter{}, r, 10)
	s, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(src.broken) > 0 {
		t.Fatalf("at-least-once broken: %v", src.broken[:min(5, len(src.broken))])
	}
	if src.commit != n {
		t.Errorf("committed up to %d, want %d", src.commit, n)
	}
	for i, err := range src.ackErrs {
		if err != nil {
			t.Fatalf("offset %d acked with %v", i, err)
		}
	}
	if len(snd.rows) != len(want) {
		t.Fatalf("%d (window, device) rows landed, want %d", len(snd.rows), len(want))
	}
	for k, w := range want {
		got := snd.rows[k]
		if got["rows"] != 1 || got["events"] != w[0] || got["total"] != w[1] {
			t.Errorf("%s: got %v, want one row with events %v total %v", k, got, w[0], w[1])
		}
	}
	if st := r.Stats(); st.Early != 0 || st.Events != n || st.Rows != int64(len(want)) {
		t.Errorf("reducer stats %+v: want %d events, %d rows, none early", st, n, len(want))
	}
	if s.EventsAcked != n || s.RowsAccepted != int64(len(want)) {
		t.Errorf("summary %+v", s)
	}
}

// TestReduceHoldsAcksUntilRowsLand: when the rows cannot be sent, no offset
// past the first folded event is committed.
func TestReduceHoldsAcksUntilRowsLand(t *testing.T) {
	const n = 300
	snd := &windowSender{rows: map[string]map[string]float64{}, failed: true}
	src := &partitionSource{acked: make([]bool, n), ackErrs: make([]error, n), failed: -1, landed: snd.landed}
	for i := range n {
		src.events = append(src.events, reduceEvent("d", time.Duration(i)*100*time.Millisecond, 1))
		src.window = append(src.window, fmt.Sprint("d@", t0.Add(time.Duration(i)*100*time.Millisecond).Truncate(10*time.Second).Format("2006-01-02T15:04:05.000Z")))
	}
	p := reducePipeline(t, src, snd, &memDeadLetter{}, aggregateReducer(t, nil), 10)
	if _, err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(src.broken) > 0 {
		t.Fatalf("at-least-once broken: %v", src.broken[:min(5, len(src.broken))])
	}
	if src.commit != 0 {
		t.Errorf("committed up to offset %d although no row landed", src.commit)
	}
}

// TestReduceLateEventDeadLettered: an event for a window already emitted
// goes to the dead letter with kind late and its position, and is acked.
func TestReduceLateEventDeadLettered(t *testing.T) {
	src := newSliceSource(
		reduceEvent("a", time.Second, 1),
		reduceEvent("a", 11*time.Second, 2), // the watermark passes 10s: window 0 is emitted
		reduceEvent("a", 5*time.Second, 3),  // late
		// Mapped after the late one, into the memory an aggregation's
		// rows are reused in: the dead letter still gets the late row.
		reduceEvent("a", 12*time.Second, 4),
	)
	dl := &memDeadLetter{}
	snd := &fakeSender{}
	p := reducePipeline(t, src, snd, dl, aggregateReducer(t, nil), 100)
	if _, err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(dl.got) != 1 {
		t.Fatalf("dead letter %+v, want the late event", dl.got)
	}
	r := dl.got[0]
	if r.Kind != "late" || r.Rule != "late" || r.Event.Where() != "test:2" || !strings.Contains(string(r.Row), `"device":"a"`) || !strings.Contains(string(r.Row), `"v":3`) {
		t.Errorf("rejection %+v (row %s): want kind late, position test:2 and the row of device a, v 3", r, r.Row)
	}
	if err := src.acks[2]; !errors.Is(err, source.ErrDeadLettered) {
		t.Errorf("late event acked with %v, want ErrDeadLettered", err)
	}
	if err := src.acks[0]; err != nil {
		t.Errorf("event 0 acked with %v", err)
	}
	if len(snd.accepted) != 2 {
		t.Errorf("accepted %v, want one row per window", snd.accepted)
	}
}

// TestReduceUnorderedSourceDoesNotStall: a source whose events are held one
// by one fills max_unacked_events within a window; the pipeline then emits
// the window early instead of waiting forever.
func TestReduceUnorderedSourceDoesNotStall(t *testing.T) {
	var events []string
	for i := range 100 {
		events = append(events, reduceEvent("a", time.Duration(i)*time.Millisecond, 1))
	}
	src := newSliceSource(events...)
	snd := &fakeSender{}
	r := aggregateReducer(t, nil)
	p := reducePipeline(t, src, snd, &memDeadLetter{}, r, 5)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := p.Run(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("pipeline stalled at max_unacked_events with a window open")
	}
	var total float64
	for _, row := range snd.accepted {
		var m map[string]any
		if err := json.Unmarshal([]byte(row), &m); err != nil {
			t.Fatal(err)
		}
		total += m["events"].(float64)
	}
	if total != 100 || len(src.acks) != 100 || r.Stats().Early == 0 {
		t.Errorf("counted %v events over %d rows, %d acks, %d early emissions; want 100, 100 and some", total, len(snd.accepted), len(src.acks), r.Stats().Early)
	}
	for i, err := range src.acks {
		if err != nil {
			t.Errorf("event %d acked with %v", i, err)
		}
	}
}

// feedSource yields the events sent on its channel and reports a backlog
// the test sets.
type feedSource struct {
	events  chan string
	backlog atomic.Int64
	n       atomic.Int64
}

func (f *feedSource) Backlog() int64 { return f.backlog.Load() }

func (f *feedSource) Read(ctx context.Context) (source.Event, source.Ack, error) {
	select {
	case e := <-f.events:
		i := f.n.Add(1)
		return source.Event{Data: []byte(e), Position: fmt.Sprint("feed:", i)}, func(error) {}, nil
	case <-ctx.Done():
		return source.Event{}, nil, ctx.Err()
	}
}

func (f *feedSource) Close(context.Context) error { return nil }

// TestReduceWhenOverloaded: with the backlog small every event lands
// unchanged; once the backlog would take longer than max_lag to send at the
// quota, latest starts and only the newest row per key lands per interval;
// when the backlog is gone and the input fits the quota, rows flow
// unreduced again.
func TestReduceWhenOverloaded(t *testing.T) {
	c := reduce.DefaultConfig()
	c.Mode, c.Key, c.When, c.MaxLag, c.Interval = reduce.ModeLatest, []string{"device"}, reduce.WhenOverloaded, 5*time.Second, 100*time.Millisecond
	r, err := reduce.New(c, reduceCols)
	if err != nil {
		t.Fatal(err)
	}
	src := &feedSource{events: make(chan string)}
	snd := &fakeSender{}
	m, _ := schema.New(schema.Config{Columns: reduceCols})
	p, err := New(Options{
		Name: "overload", Source: src, Mapper: m, Sender: snd, DeadLetter: &memDeadLetter{}, Senders: 1,
		Batch:              batcher.Config{MaxRows: 1000, MaxBytes: 16_000_000, Linger: 10 * time.Millisecond},
		Reducer:            r,
		QuotaRowsPerSecond: 100, // a backlog over 500 events is more than max_lag
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := p.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	accepted := func() int {
		snd.mu.Lock()
		defer snd.mu.Unlock()
		return len(snd.accepted)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 20s (%d rows accepted)", what, accepted())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	feed := func(n int, devices int) {
		for i := range n {
			src.events <- reduceEvent(fmt.Sprint("d", i%devices), time.Duration(i)*time.Millisecond, i)
		}
	}

	feed(30, 3)
	waitFor("30 unreduced rows", func() bool { return accepted() == 30 })
	if p.stage.active.Load() {
		t.Fatal("reducing with no backlog")
	}

	src.backlog.Store(10_000) // 100s at the quota
	waitFor("the reduction to start", p.stage.active.Load)
	feed(300, 3)
	waitFor("the reduced rows", func() bool { return accepted() >= 33 })
	time.Sleep(300 * time.Millisecond) // further intervals would add rows, if any were held
	if got := accepted() - 30; got > 9 {
		t.Errorf("%d rows for 300 events of 3 devices while reducing: want one per device and interval", got)
	}

	src.backlog.Store(0)
	waitFor("the reduction to stop", func() bool { return !p.stage.active.Load() })
	before := accepted()
	feed(20, 20)
	waitFor("20 unreduced rows", func() bool { return accepted() == before+20 })
	cancel()
	<-done
}

// TestOverQuotaWarning: without a reduction, an input above what the quota
// carries is logged as a warning with the numbers and the fix, once a
// minute; freshness and rate metrics are kept.
func TestOverQuotaWarning(t *testing.T) {
	src := &feedSource{events: make(chan string)}
	var logs logtest.Buffer
	reg := prometheus.NewRegistry()
	m, _ := schema.New(schema.Config{Columns: reduceCols})
	p, err := New(Options{
		Name: "busy", Source: src, Mapper: m, Sender: &fakeSender{}, DeadLetter: &memDeadLetter{},
		Batch:              batcher.Config{MaxRows: 1000, MaxBytes: 16_000_000, Linger: 10 * time.Millisecond},
		QuotaRowsPerSecond: 10,
		Logger:             slog.New(slog.NewJSONHandler(&logs, nil)),
		Metrics:            NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = p.Run(ctx)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; !strings.Contains(logs.String(), "no reduction is configured"); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no over-quota warning after 20s at about 1,000 rows a second against a quota of 10; logs:\n%s", logs.String())
		}
		src.events <- reduceEvent("d", time.Duration(i)*time.Millisecond, i)
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	line := logs.String()
	for _, want := range []string{`"level":"WARN"`, `"quota_rows_per_second":10`, `"input_rows_per_second"`, `"suggestion":"reduce: {mode: aggregate`} {
		if !strings.Contains(line, want) {
			t.Errorf("warning lacks %s:\n%s", want, line)
		}
	}
	if n := strings.Count(line, "no reduction is configured"); n != 1 {
		t.Errorf("%d warnings, want one a minute", n)
	}
	if v := testutil.ToFloat64(p.metrics.quotaRate.WithLabelValues("busy")); v != 10 {
		t.Errorf("quota gauge %v, want 10", v)
	}
}

// TestReduceLatestAndSampleHoldAcks: rows replaced (latest) or sampled out
// (sample) are not committed while the rows of their interval are not sent.
func TestReduceLatestAndSampleHoldAcks(t *testing.T) {
	for _, mode := range []string{reduce.ModeLatest, reduce.ModeSample} {
		t.Run(mode, func(t *testing.T) {
			const n = 500
			c := reduce.DefaultConfig()
			c.Mode, c.Key, c.TimeColumn = mode, []string{"device"}, "ts"
			if mode == reduce.ModeSample {
				c.TimeColumn, c.OneIn = "", 10
			}
			r, err := reduce.New(c, reduceCols)
			if err != nil {
				t.Fatal(err)
			}
			snd := &windowSender{rows: map[string]map[string]float64{}, failed: true}
			src := &partitionSource{acked: make([]bool, n), ackErrs: make([]error, n), failed: -1, landed: snd.landed}
			for i := range n {
				src.events = append(src.events, reduceEvent(fmt.Sprint("d", i%5), time.Duration(i)*time.Millisecond, i))
				src.window = append(src.window, "")
			}
			p := reducePipeline(t, src, snd, &memDeadLetter{}, r, 10)
			if _, err := p.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if src.commit != 0 || src.failed != 0 {
				t.Errorf("committed up to %d (first failed offset %d) although no row was sent: want 0 and 0", src.commit, src.failed)
			}
			if r.Stats().Early != 0 {
				t.Errorf("%d early emissions with 10 unacked events allowed: the held events took slots", r.Stats().Early)
			}
		})
	}
}

// claimSource yields two events, the first already withdrawn by its source.
type claimSource struct {
	claims [2]source.Claim
	next   int
	acks   [2]error
}

func (c *claimSource) Read(context.Context) (source.Event, source.Ack, error) {
	if c.next >= 2 {
		return source.Event{}, nil, source.ErrEndOfInput
	}
	i := c.next
	c.next++
	ev := source.Event{Data: []byte(reduceEvent("a", time.Duration(i)*time.Second, 1)), Position: fmt.Sprint("claim:", i), Claim: &c.claims[i]}
	return ev, func(err error) { c.acks[i] = err }, nil
}

func (c *claimSource) Close(context.Context) error { return nil }

// TestReduceTakesTheClaim: an event its source withdrew is not folded; a
// folded one can no longer be withdrawn.
func TestReduceTakesTheClaim(t *testing.T) {
	src := &claimSource{}
	src.claims[0].Withdraw()
	snd := &fakeSender{}
	p := reducePipeline(t, src, snd, &memDeadLetter{}, aggregateReducer(t, nil), 10)
	if _, err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(src.acks[0], source.ErrWithdrawn) || src.acks[1] != nil {
		t.Errorf("acks %v, want ErrWithdrawn then nil", src.acks)
	}
	if src.claims[1].Withdraw() {
		t.Error("a folded event could still be withdrawn")
	}
	if len(snd.accepted) != 1 || !strings.Contains(snd.accepted[0], `"events":1`) {
		t.Errorf("accepted %v, want one row counting only the second event", snd.accepted)
	}
}
