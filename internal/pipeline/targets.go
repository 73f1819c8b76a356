package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/pushd/pushd/internal/batcher"
)

// sendSide is the part of a pipeline that belongs to one target: its
// batcher, the channel of batches, the senders and what they do with each
// answer (accept, split, dead-letter, fail), and its counts.
type sendSide struct {
	p       *Pipeline
	opts    TargetOptions
	batcher *batcher.Batcher
	batches chan *batcher.Batch

	rowsAccepted, rowsDead, requests, splits atomic.Int64
}

// newSendSide makes the send side of t; queue is how many closed batches
// may wait for a sender before the batcher blocks the reader.
func newSendSide(p *Pipeline, t TargetOptions, queue int) (*sendSide, error) {
	s := &sendSide{p: p, opts: t, batches: make(chan *batcher.Batch, queue)}
	b, err := batcher.New(t.Batch, s.batches)
	if err != nil {
		return nil, err
	}
	s.batcher = b
	return s, nil
}

// run sends the batches with the target's senders until close.
func (s *sendSide) run(ctx context.Context) {
	var senders sync.WaitGroup
	for range s.opts.Senders {
		senders.Go(func() {
			for b := range s.batches {
				// Rows of events withdrawn by their source (an HTTP
				// request past its response timeout) are dropped here,
				// before the send; the rest can no longer be withdrawn
				// (the first target to take an event claims it for all).
				if b = b.Take(); b != nil {
					s.settle(ctx, b, s.opts.Target.Send(ctx, b.Rows))
				}
			}
		})
	}
	senders.Wait()
}

// close flushes the open batch, stops the batcher and ends the channel; a
// batch that could not be flushed is settled with an error (its events come
// again).
func (s *sendSide) close(ctx context.Context) {
	if err := s.batcher.Flush(ctx); err != nil && !errors.Is(err, batcher.ErrClosed) {
		s.p.log.Warn("flushing the last batch failed", "target", s.opts.Name, "err", err)
	}
	if unsent := s.batcher.Close(); unsent != nil {
		unsent.Done(fmt.Errorf("pipeline %s: batch for target %s not sent before shutdown", s.p.opts.Name, s.opts.Name))
	}
	close(s.batches)
}

// settle acts on the answer to a batch, as the target's Verdict reads it:
// accepted, split to isolate the rows the target refuses (which go to the
// dead letter), dead-lettered, failed, or fatal. An error that reports each
// row apart (RowErrors) settles each row by its own error.
func (s *sendSide) settle(ctx context.Context, b *batcher.Batch, err error) {
	p := s.p
	if err == nil {
		s.accepted(b.Len())
		s.requests.Add(1)
		p.requests.Add(1)
		p.observeAccepted(b)
		b.Done(nil)
		return
	}
	var re RowErrors
	if errors.As(err, &re) && ctx.Err() == nil {
		s.settleRows(ctx, b, re)
		return
	}
	v := s.opts.Target.Verdict(err)
	switch {
	case v.Outcome == OutcomeSplit && b.Len() > 1:
		s.splits.Add(1)
		p.splits.Add(1)
		first, second := b.Split()
		s.settle(ctx, first, s.opts.Target.Send(ctx, first.Rows))
		s.settle(ctx, second, s.opts.Target.Send(ctx, second.Rows))
	case v.Outcome == OutcomeSplit || v.Outcome == OutcomeDeadLetter:
		for i := range b.Rows {
			s.rejectRow(ctx, b, i, v)
		}
	default:
		if ctx.Err() == nil && v.Outcome == OutcomeFatal {
			// The target itself is refused (dataset gone, access lost):
			// dead-lettering the whole stream would hide it. Stop instead;
			// nothing is acked, everything comes again once it is fixed.
			p.fail(fmt.Errorf("pipeline %s: target %s: %w", p.opts.Name, s.opts.Name, err))
		}
		b.Done(err)
	}
}

// settleRows settles each row of b by its own error in re.
func (s *sendSide) settleRows(ctx context.Context, b *batcher.Batch, re RowErrors) {
	n := 0
	for i := range b.Rows {
		err := re.RowError(i)
		if err == nil {
			n++
			b.RowDone(i, nil)
			continue
		}
		switch v := s.opts.Target.Verdict(err); v.Outcome {
		case OutcomeSplit, OutcomeDeadLetter:
			s.rejectRow(ctx, b, i, v)
		case OutcomeFatal:
			s.p.fail(fmt.Errorf("pipeline %s: target %s: %w", s.p.opts.Name, s.opts.Name, err))
			b.RowDone(i, err)
		default:
			b.RowDone(i, err)
		}
	}
	s.accepted(n)
}

func (s *sendSide) accepted(n int) {
	s.rowsAccepted.Add(int64(n))
	s.p.rowsAccepted.Add(int64(n))
}

// rejectRow writes row i of b to the dead letter with v as the reason and
// settles it; if the dead letter cannot be written, the row fails and the
// pipeline stops.
func (s *sendSide) rejectRow(ctx context.Context, b *batcher.Batch, i int, v Verdict) {
	p := s.p
	r := Rejection{Pipeline: p.opts.Name, Target: s.opts.Name, Event: b.Trackers[i].Event(), Kind: "rejected",
		Rule: v.Rule, Status: v.Status, Code: v.Code, Message: v.Message, Row: b.Rows[i]}
	if werr := p.opts.DeadLetter.Write(ctx, r); werr != nil {
		werr = fmt.Errorf("pipeline %s: writing the dead letter for %s: %w", p.opts.Name, r.Event.Where(), werr)
		p.fail(werr)
		b.RowDone(i, werr)
		return
	}
	s.rowsDead.Add(1)
	p.rowsDead.Add(1)
	p.log.Warn("dead-lettered", rejectionAttrs(r)...)
	b.Trackers[i].MarkDeadLettered()
	b.RowDone(i, nil)
}

// fanOut hands rows to the batcher of every target: the seam between
// mapping (or the reduce stage) and the targets. An event's tracker counts
// its rows in every target, so the event is acked once all of them have
// settled its rows.
type fanOut struct {
	p     *Pipeline
	sides []*sendSide
}

// Add adds row to every target's batcher for the event tr follows. A row
// too large for one target's batches goes to the dead letter for that
// target alone; Add returns an error only when the row could not be added
// at all (ctx ended, batcher closed).
func (f *fanOut) Add(ctx context.Context, row json.RawMessage, tr *batcher.Tracker) error {
	for _, s := range f.sides {
		err := s.batcher.Add(ctx, row, tr)
		switch {
		case err == nil:
		case errors.Is(err, batcher.ErrRowTooLarge):
			s.rowsDead.Add(1)
			f.p.reject(ctx, tr, Rejection{Event: tr.Event(), Target: s.opts.Name, Kind: "rejected", Rule: "size", Message: err.Error(), Row: row})
		default:
			return fmt.Errorf("target %s: %w", s.opts.Name, err)
		}
	}
	return nil
}

// Flush sends every target's open batch.
func (f *fanOut) Flush(ctx context.Context) error {
	var errs []error
	for _, s := range f.sides {
		if err := s.batcher.Flush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("target %s: %w", s.opts.Name, err))
		}
	}
	return errors.Join(errs...)
}

// targetSummaries counts what each target did.
func (p *Pipeline) targetSummaries() []TargetSummary {
	out := make([]TargetSummary, len(p.out.sides))
	for i, s := range p.out.sides {
		out[i] = TargetSummary{Name: s.opts.Name, RowsAccepted: s.rowsAccepted.Load(),
			RowsDeadLettered: s.rowsDead.Load(), Requests: s.requests.Load(), BatchesSplit: s.splits.Load()}
	}
	return out
}
