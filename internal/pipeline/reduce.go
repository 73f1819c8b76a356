package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/reduce"
	"github.com/pushd/pushd/internal/source"
)

// reduceStage is the seam between the pipeline and package reduce: it feeds
// the mapped rows of each event to the reducer and hands what the reducer
// emits to the batcher, each emission with one tracker that releases the
// folded events' holds once its rows are settled.
//
// Holding costs no unacked slot per event for an offset-ordered source
// (Kafka): a window holds only the earliest event of each partition, the
// others are acked when folded and free their slot at once. Other sources'
// events are held one by one and keep their slot; at the unacked bound the
// read loop emits the oldest window early (flushOldest) so it never stalls.
type reduceStage struct {
	p       *Pipeline
	mode    string
	ordered bool
	// overload decides for when: overloaded; nil for when: always.
	overload *reduce.Overload
	// parts is the source when it reads partitions (Kafka), which the
	// reducer waits for; partsKnown once it named them.
	parts      source.Partitioned
	partsKnown bool
	active     atomic.Bool

	mu   sync.Mutex // guards r and seen
	r    *reduce.Reducer
	seen reduce.Stats // counted into the metrics so far
	// scratch holds the emissions of add; only the read loop uses it.
	scratch []reduce.Emission
	// arena, when the reducer keeps no row, holds the rows of the event
	// being added (schema.Mapper.MapInto); only the read loop uses it.
	arena *[]byte

	// newest is the newest event time (Unix ms) of an accepted reduced row.
	newest atomic.Int64
	// lastEarlyLog limits the early-emission warning to one a minute.
	lastEarlyLog time.Time
	early        int64 // early emissions since the last warning
}

func newReduceStage(p *Pipeline, r *reduce.Reducer) *reduceStage {
	cfg := r.Config()
	st := &reduceStage{p: p, r: r, mode: cfg.Mode}
	if !r.KeepsRows() {
		st.arena = new([]byte)
	}
	if o, ok := p.opts.Source.(source.OffsetOrdered); ok && o.OffsetOrdered() {
		st.ordered = true
	}
	if pt, ok := p.opts.Source.(source.Partitioned); ok && st.ordered {
		st.parts = pt
		pt.Partitions() // says it will ask: the source learns each partition's offsets
		r.AwaitPartitions()
	}
	if cfg.When == reduce.WhenOverloaded {
		st.overload = &reduce.Overload{MaxLag: cfg.MaxLag}
	} else {
		st.active.Store(true)
	}
	return st
}

// add folds the rows of one event (followed by tr) into the reduction, then
// sends what that completes. Rows the reduction refuses (late, no event
// time) go to the dead letter.
func (st *reduceStage) add(ctx context.Context, b *fanOut, ev source.Event, tr *batcher.Tracker, rows []json.RawMessage) {
	// Folded, the event is as good as sent: its source may no longer take
	// it back (an HTTP caller's 503 must not name an event that lands).
	if !ev.Claim.Take() {
		tr.Fail(source.ErrWithdrawn)
		return
	}
	ref := reduce.Ref{Holder: tr}
	if st.ordered && ev.Meta != nil {
		ref.Ordered, ref.Topic, ref.Partition, ref.Offset = true, ev.Meta.Topic, ev.Meta.Partition, ev.Meta.Offset
	}
	now := time.Now().UnixMilli()
	type refused struct {
		index int
		row   json.RawMessage
		err   error
	}
	var bad []refused
	out := st.scratch[:0]
	st.mu.Lock()
	if st.parts != nil && !st.partsKnown {
		st.updatePartitions(now)
	}
	for i, row := range rows {
		var err error
		if out, err = st.r.Add(row, ref, now, out); err != nil {
			// A copy: the row may be in st.arena, which the next event
			// reuses, and a dead letter may keep what it is given.
			bad = append(bad, refused{i, bytes.Clone(row), err})
		}
	}
	st.mu.Unlock()

	for _, f := range bad {
		r := Rejection{Event: ev, Index: f.index, Kind: "reduce", Rule: "reduce", Message: f.err.Error(), Row: f.row}
		var re *reduce.RowError
		if errors.As(f.err, &re) {
			r.Rule = re.Rule
			if re.Rule == "late" {
				r.Kind = "late"
			}
		}
		st.p.reject(ctx, tr, r)
	}
	if len(out) > 0 {
		st.send(ctx, b, out)
		clear(out)
	}
	st.scratch = out[:0]
}

// updatePartitions tells the reducer the source's partitions and how far
// behind each is read. The caller holds st.mu.
func (st *reduceStage) updatePartitions(now int64) {
	states, ok := st.parts.Partitions()
	if !ok {
		return
	}
	parts := make([]reduce.Partition, len(states))
	for i, s := range states {
		parts[i] = reduce.Partition{Topic: s.Topic, Partition: s.Partition, Unread: s.Unread}
	}
	st.r.Partitions(parts, now)
	st.partsKnown = true
}

// tick emits what is due (windows closed by the clock, intervals), after
// telling the reducer which partitions still have records to read.
func (st *reduceStage) tick(ctx context.Context, b *fanOut, now time.Time) {
	st.mu.Lock()
	if st.parts != nil {
		st.updatePartitions(now.UnixMilli())
	}
	ems := st.r.Tick(now.UnixMilli(), nil)
	st.mu.Unlock()
	st.send(ctx, b, ems)
}

// flushOldest emits the oldest window early, at the unacked bound.
func (st *reduceStage) flushOldest(ctx context.Context, b *fanOut) {
	st.mu.Lock()
	ems := st.r.FlushOldest(nil)
	st.mu.Unlock()
	st.send(ctx, b, ems)
}

// flush emits everything the reduction holds: at the end of input, at
// shutdown, and when an overloaded pipeline has caught up.
func (st *reduceStage) flush(ctx context.Context, b *fanOut) {
	st.mu.Lock()
	ems := st.r.Flush(nil)
	st.mu.Unlock()
	st.send(ctx, b, ems)
}

// send hands each emission's rows to the batcher with one tracker that
// releases the folded events when the rows are settled.
func (st *reduceStage) send(ctx context.Context, b *fanOut, ems []reduce.Emission) {
	for _, em := range ems {
		if em.Early {
			st.noteEarly(em)
		}
		if len(em.Rows) == 0 {
			em.Acks.Done(nil) // everything was sampled out or superseded
			continue
		}
		acks, eventTime := em.Acks, em.EventTime
		tr := batcher.NewTracker(source.Event{Position: "reduce:" + st.p.opts.Name + " " + em.Label}, func(err error) {
			if err == nil || errors.Is(err, source.ErrDeadLettered) {
				st.observe(eventTime)
			}
			acks.Done(err)
		})
		for _, row := range em.Rows {
			// A row too large for a target is dead-lettered by b.Add.
			if err := b.Add(ctx, row, tr); err != nil {
				tr.Fail(fmt.Errorf("pipeline %s: batching the reduced rows of %s: %w", st.p.opts.Name, em.Label, err))
				break
			}
		}
		tr.Seal()
	}
}

// observe records the event time of accepted rows for the freshness metric.
func (st *reduceStage) observe(ms int64) {
	for {
		cur := st.newest.Load()
		if ms <= cur || st.newest.CompareAndSwap(cur, ms) {
			return
		}
	}
}

// noteEarly logs, at most once a minute, that max_groups or the unacked
// bound forced emissions before their time.
func (st *reduceStage) noteEarly(em reduce.Emission) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.early++
	if time.Since(st.lastEarlyLog) < time.Minute {
		return
	}
	st.p.log.Warn("reduce: emitted before its time to stay within reduce.max_groups or max_unacked_events; raise them or shorten the window",
		"emission", em.Label, "early_emissions", st.early, "rows", len(em.Rows))
	st.lastEarlyLog, st.early = time.Now(), 0
}

// updateMetrics copies the reducer's counts into the metrics.
func (st *reduceStage) updateMetrics(m *Metrics) {
	st.mu.Lock()
	s := st.r.Stats()
	prev := st.seen
	st.seen = s
	st.mu.Unlock()
	if m == nil {
		return
	}
	name := st.p.opts.Name
	m.reduceEvents.WithLabelValues(name).Add(float64(s.Events - prev.Events))
	m.reduceRows.WithLabelValues(name).Add(float64(s.Rows - prev.Rows))
	m.reduceLate.WithLabelValues(name).Add(float64(s.Late - prev.Late))
	m.reduceEarly.WithLabelValues(name).Add(float64(s.Early - prev.Early))
	m.reduceGroups.WithLabelValues(name).Set(float64(s.OpenGroups))
	active := 0.0
	if st.active.Load() {
		active = 1
	}
	m.reduceActive.WithLabelValues(name, st.mode).Set(active)
}
