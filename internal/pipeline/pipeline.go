// Package pipeline wires one configured pipeline: it reads events from a
// source, maps them to rows, batches the rows, sends the batches with a
// bounded number of requests in flight, writes what cannot be delivered to
// the dead letter and acks every event once all its rows are settled.
//
// Shutdown happens in two steps: when the run context ends, reading stops,
// the current batch is flushed and the batches in hand are sent; when the
// shutdown timeout passes as well, sending is cancelled. Events whose rows
// were not delivered are acked with an error, so the source does not commit
// them and they come again after a restart.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/reduce"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
)

// ErrShutdownTimeout is returned by Run when sends were still in flight at
// the end of the shutdown timeout and had to be cancelled.
var ErrShutdownTimeout = errors.New("shutdown timeout passed with rows still unsent")

// DeadLetter takes the events, or the parts of events, that cannot be
// delivered. Write must not block the stream for long; an error stops the
// pipeline rather than lose the event.
type DeadLetter interface {
	Write(ctx context.Context, r Rejection) error
}

// Rejection is one event (or one object of an array event, or one row)
// that goes to the dead letter, with why.
type Rejection struct {
	Pipeline string
	// Target names the target that refused the row (rejected); empty for
	// an event refused before it became rows.
	Target string
	Event  source.Event
	// Index is the object's position in an array event (0 for an object).
	Index int
	// Kind is "source" (the source could not frame the event), "mapping"
	// (the schema refused it), "rejected" (Power BI refused the row),
	// "late" (its reduce window was already emitted) or "reduce" (the
	// reduction could not use the row: no event time).
	Kind string
	// Field and Rule name the column and the rule it broke (mapping).
	Field, Rule string
	// Status and Code are Power BI's answer (rejected).
	Status int
	Code   string
	// Message says what is wrong in words.
	Message string
	// Row is the encoded row Power BI refused (rejected).
	Row json.RawMessage
}

// Options configure a pipeline. Source, Mapper, DeadLetter and a target
// (Targets, or Sender and Target) are required.
type Options struct {
	Name   string
	Source source.Source
	Mapper *schema.Mapper
	// Targets are where the rows go, each with its own batching and
	// senders. When empty, Sender and Target make the one Power BI target,
	// with Batch and Senders.
	Targets    []TargetOptions
	Batch      batcher.Config
	Target     pushapi.Target
	Sender     pushapi.Sender
	DeadLetter DeadLetter
	// MaxUnacked bounds the events read but not yet acked (default 5,000).
	MaxUnacked int
	// Senders is the number of requests the target made of Sender and
	// Target sends at once (default 5, Power BI's in-flight limit per
	// dataset; the pushapi limiter enforces the limit, this only needs to
	// be enough to use it). Each of Targets has its own.
	Senders int
	// ShutdownTimeout bounds sending after the run context ends
	// (default 30s).
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	Metrics         *Metrics
	// Reducer, when set, folds the mapped rows before batching (see
	// package reduce and reduce.go).
	Reducer *reduce.Reducer
	// QuotaRowsPerSecond is what the target dataset's quota carries, for
	// the rate metrics, the over-quota warning and when: overloaded
	// (0: unknown).
	QuotaRowsPerSecond float64
}

// Summary counts what a run did, for the exit report.
type Summary struct {
	EventsRead         int64
	RowsMapped         int64
	RowsAccepted       int64
	RowsDeadLettered   int64
	EventsDeadLettered int64 // events or objects refused before they became rows
	Requests           int64 // successful POST rows requests
	EventsFailed       int64 // acked with an error: not delivered
	EventsWithdrawn    int64 // taken back by their source before they were sent (HTTP)
	EventsAcked        int64
	BatchesSplit       int64
	ShutdownTimedOut   bool
	// Targets counts what each target did (the totals above add them up).
	Targets []TargetSummary
}

// TargetSummary counts what one target of a pipeline did.
type TargetSummary struct {
	Name             string
	RowsAccepted     int64
	RowsDeadLettered int64
	Requests         int64 // successful sends (requests, produced batches)
	BatchesSplit     int64
}

// Pipeline is one running pipeline. Make it with New, run it with Run.
type Pipeline struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics

	sem        chan struct{} // tokens for unacked events
	readMetric prometheus.Counter
	ackHook    func(error) // p.onAck, made once

	eventsRead, rowsMapped, rowsAccepted, rowsDead, eventsDead atomic.Int64
	requests, eventsFailed, eventsAcked, splits                atomic.Int64
	eventsWithdrawn                                            atomic.Int64

	stage *reduceStage // nil without a reduction
	// out hands rows to the targets (made by New).
	out *fanOut
	// idle (cap 1) is signalled when a target has nothing queued or in
	// flight any more (sendSide.done), for admit to look again.
	idle chan struct{}
	// newestAccepted is the newest Kafka record timestamp (Unix ms) among
	// the accepted unreduced rows, for the freshness metric.
	newestAccepted atomic.Int64

	failOnce sync.Once
	failErr  error
	failed   chan struct{} // closed on a fatal error
}

// New checks opts and returns a pipeline ready to Run.
func New(opts Options) (*Pipeline, error) {
	switch {
	case opts.Source == nil:
		return nil, errors.New("pipeline: no source")
	case opts.Mapper == nil:
		return nil, errors.New("pipeline: no schema mapper")
	case len(opts.Targets) == 0 && opts.Sender == nil:
		return nil, errors.New("pipeline: no target")
	case opts.DeadLetter == nil:
		return nil, errors.New("pipeline: no dead letter")
	}
	if opts.MaxUnacked <= 0 {
		opts.MaxUnacked = 5000
	}
	if opts.Senders <= 0 {
		opts.Senders = 5
	}
	if len(opts.Targets) == 0 {
		opts.Targets = []TargetOptions{{Name: "powerbi", Target: PowerBI{Sender: opts.Sender, Table: opts.Target},
			Batch: opts.Batch, Senders: opts.Senders}}
	}
	opts.Targets = append([]TargetOptions(nil), opts.Targets...)
	for i, t := range opts.Targets {
		if t.Target == nil {
			return nil, fmt.Errorf("pipeline: target %d (%s) is nil", i, t.Name)
		}
		if t.Senders <= 0 {
			opts.Targets[i].Senders = 5
		}
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{
		opts:       opts,
		log:        opts.Logger.With("pipeline", opts.Name),
		metrics:    opts.Metrics,
		sem:        make(chan struct{}, opts.MaxUnacked),
		readMetric: opts.Metrics.eventsCounter(opts.Name),
		failed:     make(chan struct{}),
		idle:       make(chan struct{}, 1),
	}
	p.ackHook = p.onAck
	p.out = &fanOut{p: p}
	for _, t := range opts.Targets {
		side, err := newSendSide(p, t)
		if err != nil {
			return nil, fmt.Errorf("pipeline %s: target %s: %w", opts.Name, t.Name, err)
		}
		p.out.sides = append(p.out.sides, side)
	}
	if opts.Reducer != nil {
		p.stage = newReduceStage(p, opts.Reducer)
	}
	return p, nil
}

// Run moves events until the source ends (ErrEndOfInput), ctx ends
// (graceful shutdown) or a fatal error occurs (the dead letter cannot be
// written, Power BI refuses the target itself). It returns nil after a clean
// end or shutdown, ErrShutdownTimeout when sends had to be cancelled, or the
// fatal error.
func (p *Pipeline) Run(ctx context.Context) (Summary, error) {
	// sendCtx outlives ctx by the shutdown timeout.
	sendCtx, cancelSend := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSend()

	b := p.out
	var senders sync.WaitGroup
	for _, side := range b.sides {
		senders.Go(func() { side.run(sendCtx) })
	}

	// Reading stops when ctx ends or a fatal error occurs.
	readCtx, cancelRead := context.WithCancel(ctx)
	defer cancelRead()
	go func() {
		select {
		case <-p.failed:
			cancelRead()
		case <-readCtx.Done():
		}
	}()

	monCtx, stopMonitor := context.WithCancel(readCtx)
	var monitorDone sync.WaitGroup
	monitorDone.Go(func() { (&monitor{p: p, st: p.stage}).run(monCtx, sendCtx, b) })

	readErr := p.readLoop(readCtx, sendCtx, b)
	stopMonitor()
	monitorDone.Wait()

	// Drain: flush what is batched, let the senders finish, and cancel them
	// if the shutdown timeout passes first.
	drained := make(chan struct{})
	go func() {
		if p.stage != nil {
			p.stage.flush(sendCtx, b) // open windows and intervals go out too
		}
		for _, side := range b.sides {
			side.close(sendCtx)
		}
		senders.Wait()
		close(drained)
	}()

	timedOut := false
	if ctx.Err() != nil || p.isFailed() {
		timer := time.NewTimer(p.opts.ShutdownTimeout)
		select {
		case <-drained:
		case <-timer.C:
			timedOut = true
			p.log.Warn("shutdown timeout passed; cancelling sends", "timeout", p.opts.ShutdownTimeout)
			cancelSend()
			<-drained
		}
		timer.Stop()
	} else {
		<-drained
	}

	s := p.summary()
	s.ShutdownTimedOut = timedOut
	switch {
	case p.isFailed():
		return s, p.failErr
	case readErr != nil:
		return s, readErr
	case timedOut:
		return s, ErrShutdownTimeout
	}
	return s, nil
}

// readLoop reads, maps and batches events until the end of input, ctx ends
// or a fatal error. It returns an error only for a source failure.
func (p *Pipeline) readLoop(ctx, sendCtx context.Context, b *fanOut) error {
	var rows []json.RawMessage
	done := ctx.Done()
	for {
		// Stop at once when ctx ends, even while the semaphore has room
		// (the fast path below would not see it).
		select {
		case <-done:
			return nil
		default:
		}
		if !p.admit(ctx, sendCtx, b) {
			return nil
		}
		ev, ack, err := p.opts.Source.Read(ctx)
		if err != nil {
			<-p.sem
			switch {
			case errors.Is(err, source.ErrEndOfInput):
				p.log.Debug("end of input")
				return nil
			case ctx.Err() != nil:
				return nil
			}
			return fmt.Errorf("pipeline %s: reading: %w", p.opts.Name, err)
		}
		p.eventsRead.Add(1)
		if p.readMetric != nil {
			p.readMetric.Inc()
		}
		rows = p.handle(sendCtx, b, ev, ack, rows[:0])
	}
}

// admit takes a slot for one more unacked event, waiting while
// max_unacked_events are unacked; false when ctx ends first. While it
// waits with nothing of any target queued or in flight, the open batches
// are closed: no ack can come to make room for more rows, so waiting for
// the linger would only delay them. While rows are in flight, the batches
// stay open: their acks make room, and the rows read then join them, so
// requests do not shrink under a standing backlog.
func (p *Pipeline) admit(ctx, sendCtx context.Context, b *fanOut) bool {
	select {
	case p.sem <- struct{}{}: // the common case, without a many-way select
		return true
	default:
	}
	if p.stage != nil {
		// A reduction emits its oldest window first, to free the events
		// it holds.
		p.stage.flushOldest(sendCtx, b)
	}
	for {
		b.flushIfIdle(ctx)
		select {
		case p.sem <- struct{}{}:
			return true
		case <-p.idle: // a target has nothing in flight any more: look again
		case <-ctx.Done():
			return false
		}
	}
}

// onAck runs after every event's ack: it counts the outcome and frees the
// event's slot. One function for all events, so acks cost no closure each.
func (p *Pipeline) onAck(err error) {
	switch {
	case errors.Is(err, source.ErrWithdrawn):
		// The source took it back and told its client: not a failure.
		p.eventsWithdrawn.Add(1)
	case err != nil && !errors.Is(err, source.ErrDeadLettered):
		p.eventsFailed.Add(1)
	}
	p.eventsAcked.Add(1)
	<-p.sem
}

// handle maps one event into rows and hands them to the batcher.
func (p *Pipeline) handle(ctx context.Context, b *fanOut, ev source.Event, ack source.Ack, rows []json.RawMessage) []json.RawMessage {
	tr := batcher.NewTrackerWithHook(ev, ack, p.ackHook)
	defer tr.Seal()

	if ev.Err != nil {
		p.reject(ctx, tr, Rejection{Event: ev, Kind: "source", Rule: "source", Message: ev.Err.Error()})
		return rows
	}
	// A reduction that keeps no row (aggregate) gets them in memory that
	// the next event reuses: no allocation per event for rows read once.
	reducing := p.stage != nil && p.stage.active.Load()
	var err error
	if reducing && p.stage.arena != nil {
		rows, err = p.opts.Mapper.MapInto(ev.Data, metaOf(ev), rows, p.stage.arena)
	} else {
		rows, err = p.opts.Mapper.Map(ev.Data, metaOf(ev), rows)
	}
	if err != nil {
		var me *schema.MappingError
		if errors.As(err, &me) {
			for _, f := range me.Failures {
				p.reject(ctx, tr, Rejection{Event: ev, Index: f.Index, Kind: "mapping", Field: f.Column, Rule: f.Rule, Message: f.String()})
			}
		} else {
			p.reject(ctx, tr, Rejection{Event: ev, Kind: "mapping", Rule: "syntax", Message: err.Error()})
		}
	}
	p.rowsMapped.Add(int64(len(rows)))
	if reducing {
		p.stage.add(ctx, b, ev, tr, rows)
		return rows
	}
	for _, row := range rows {
		if err := b.Add(ctx, row, tr); err != nil {
			tr.Fail(fmt.Errorf("pipeline %s: batching %s: %w", p.opts.Name, ev.Where(), err))
			break
		}
	}
	return rows
}

// metaOf returns the event's metadata as a schema.Meta, nil when it has
// none (a nil *Metadata in a non-nil interface would still answer).
func metaOf(ev source.Event) schema.Meta {
	if ev.Meta == nil {
		return nil
	}
	return ev.Meta
}

// reject writes r to the dead letter. If that fails, the event is acked
// with the error and the pipeline stops: losing the event is not an option.
func (p *Pipeline) reject(ctx context.Context, tr *batcher.Tracker, r Rejection) {
	r.Pipeline = p.opts.Name
	if err := p.opts.DeadLetter.Write(ctx, r); err != nil {
		err = fmt.Errorf("pipeline %s: writing the dead letter for %s: %w", p.opts.Name, r.Event.Where(), err)
		tr.Fail(err)
		p.fail(err)
		return
	}
	tr.MarkDeadLettered()
	if r.Kind == "rejected" {
		p.rowsDead.Add(1)
	} else {
		p.eventsDead.Add(1)
	}
	p.log.Warn("dead-lettered", rejectionAttrs(r)...)
}

// rejectionAttrs are the log attributes of a rejection, leaving out the
// ones that do not apply (a mapping failure has no HTTP status).
func rejectionAttrs(r Rejection) []any {
	attrs := []any{"position", r.Event.Where(), "kind", r.Kind}
	if r.Target != "" {
		attrs = append(attrs, "target", r.Target)
	}
	if r.Index != 0 {
		attrs = append(attrs, "index", r.Index)
	}
	if r.Field != "" {
		attrs = append(attrs, "field", r.Field)
	}
	if r.Rule != "" {
		attrs = append(attrs, "rule", r.Rule)
	}
	if r.Status != 0 {
		attrs = append(attrs, "status", r.Status)
	}
	if r.Code != "" {
		attrs = append(attrs, "code", r.Code)
	}
	return append(attrs, "err", r.Message)
}

// observeAccepted records the newest Kafka record timestamp of an accepted
// batch for the freshness metric (reduced rows record their own).
func (p *Pipeline) observeAccepted(b *batcher.Batch) {
	if len(b.Trackers) == 0 {
		return
	}
	meta := b.Trackers[len(b.Trackers)-1].Event().Meta
	if meta == nil || meta.Timestamp.IsZero() {
		return
	}
	ms := meta.Timestamp.UnixMilli()
	for {
		cur := p.newestAccepted.Load()
		if ms <= cur || p.newestAccepted.CompareAndSwap(cur, ms) {
			return
		}
	}
}

// fail records a fatal error and stops reading.
func (p *Pipeline) fail(err error) {
	p.failOnce.Do(func() {
		p.failErr = err
		p.log.Error("pipeline stopping", "err", err)
		close(p.failed)
	})
}

func (p *Pipeline) isFailed() bool {
	select {
	case <-p.failed:
		return true
	default:
		return false
	}
}

// Stats returns the counts so far; safe to call while running.
func (p *Pipeline) Stats() Summary { return p.summary() }

func (p *Pipeline) summary() Summary {
	return Summary{
		EventsRead:         p.eventsRead.Load(),
		RowsMapped:         p.rowsMapped.Load(),
		RowsAccepted:       p.rowsAccepted.Load(),
		RowsDeadLettered:   p.rowsDead.Load(),
		EventsDeadLettered: p.eventsDead.Load(),
		Requests:           p.requests.Load(),
		EventsFailed:       p.eventsFailed.Load(),
		EventsWithdrawn:    p.eventsWithdrawn.Load(),
		EventsAcked:        p.eventsAcked.Load(),
		BatchesSplit:       p.splits.Load(),
		Targets:            p.targetSummaries(),
	}
}
