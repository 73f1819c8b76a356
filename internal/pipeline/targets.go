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
// batcher, the queue of closed batches waiting for a sender, the senders and
// what they do with each answer (accept, split, dead-letter, fail), and its
// counts.
//
// Batches do not fragment. The batcher closes a batch when it is full
// (max_rows or max_bytes), when its linger passes, at the end of input, or
// when the read loop is held at max_unacked_events and nothing of any
// target is queued or in flight (busy is zero everywhere), so that no ack
// can free room for more rows (fanOut.flushIfIdle). While rows are in
// flight, their acks free room and the rows read then join the open batch,
// so a standing backlog makes every request carry min(max_rows, what
// max_bytes holds, the rows of max_unacked_events events). Closed batches
// queue; a sender takes every row waiting, up to the bounds: the oldest
// batches whole and the first rows of the next one that does not fit. A
// target that waits for quotas before sending (a gatherer: PowerBI) takes
// its rows only when the quotas admit the request, so what queued while it
// waited goes out in that request.
type sendSide struct {
	p       *Pipeline
	opts    TargetOptions
	batcher *batcher.Batcher
	in      chan *batcher.Batch // the batcher's out

	// busy counts the rows the batcher handed over that are not settled
	// yet (queued or being sent); when it drops to zero, p.idle is
	// signalled.
	busy atomic.Int64
	// gathering (cap 1) is held by the one sender of a gatherer target
	// that waits for the quotas with nothing in hand.
	gathering chan struct{}

	mu     sync.Mutex
	cond   *sync.Cond       // broadcast when the queue gains rows or closes
	queue  []*batcher.Batch // oldest first
	closed bool             // no batch comes any more

	rowsAccepted, rowsDead, requests, splits atomic.Int64
}

// newSendSide makes the send side of t.
func newSendSide(p *Pipeline, t TargetOptions) (*sendSide, error) {
	s := &sendSide{p: p, opts: t, in: make(chan *batcher.Batch), gathering: make(chan struct{}, 1)}
	s.cond = sync.NewCond(&s.mu)
	b, err := batcher.New(t.Batch, s.in)
	if err != nil {
		return nil, err
	}
	s.batcher = b
	return s, nil
}

// run queues the batcher's batches and sends them with the target's
// senders, until close is called and the queue is empty.
func (s *sendSide) run(ctx context.Context) {
	var senders sync.WaitGroup
	for range s.opts.Senders {
		senders.Go(func() {
			for s.sendNext(ctx) {
			}
		})
	}
	for b := range s.in {
		s.busy.Add(int64(b.Len()))
		s.mu.Lock()
		s.queue = append(s.queue, b)
		s.mu.Unlock()
		s.cond.Broadcast()
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cond.Broadcast()
	senders.Wait()
}

// sendNext sends the next request of the target: every row waiting, up to
// the bounds. It returns false once the queue is closed and empty.
func (s *sendSide) sendNext(ctx context.Context) bool {
	if s.p.isFailed() {
		// The pipeline stops (a target refused, the dead letter failed):
		// what waits is not sent; its events come again.
		b, n := s.take(s.opts.Batch.MaxRows, true)
		if b == nil {
			return false
		}
		b.Done(fmt.Errorf("pipeline %s stopped before sending to target %s: %w", s.p.opts.Name, s.opts.Name, s.p.failErr))
		s.done(n)
		return true
	}
	if g, ok := s.opts.Target.(gatherer); ok {
		return s.gather(ctx, g)
	}
	b, n := s.take(s.opts.Batch.MaxRows, true)
	if b == nil {
		return false
	}
	// Rows of events withdrawn by their source (an HTTP request past its
	// response timeout) are dropped here, before the send; the rest can no
	// longer be withdrawn (the first target to take an event claims it for
	// all).
	if b = b.Take(); b != nil {
		s.settle(ctx, b, s.opts.Target.Send(ctx, b.Rows))
	}
	s.done(n)
	return true
}

// gather sends the next request of a gatherer target. One sender of the
// target at a time (gathering) waits for the quotas with nothing in hand
// and takes what is queued when they admit its request, so batches that
// queued while the target was throttled go out as one request; the other
// senders meanwhile have their requests in flight.
func (s *sendSide) gather(ctx context.Context, g gatherer) bool {
	s.gathering <- struct{}{}
	first := s.waitQueued()
	if first == 0 {
		<-s.gathering
		return false
	}
	var b *batcher.Batch
	n, taken := 0, false
	err := g.SendFrom(ctx, first, func(room int) []json.RawMessage {
		defer func() { <-s.gathering }()
		taken = true
		b, n = s.takeSendable(min(room, s.opts.Batch.MaxRows))
		if b == nil {
			return nil // every row was withdrawn: no request
		}
		return b.Rows
	})
	if !taken {
		if err != nil {
			// Not admitted (ctx ended, or a failure before the request
			// could go): the rows that were waiting take the error as
			// if they had been sent.
			b, n = s.takeSendable(s.opts.Batch.MaxRows)
		}
		<-s.gathering
	}
	if b != nil {
		s.settle(ctx, b, err)
	}
	s.done(n)
	return true
}

// waitQueued waits until rows are queued and returns how many the oldest
// waiting batch holds; 0 once the queue is closed and empty.
func (s *sendSide) waitQueued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) == 0 {
		if s.closed {
			return 0
		}
		s.cond.Wait()
	}
	return s.queue[0].Len()
}

// take removes the rows of the next request from the queue: the oldest
// batches merged while they fit maxRows and max_bytes, filled up with the
// first rows of the next batch when it does not fit whole. It returns them
// with their number. With wait it waits for rows, and returns nil once the
// queue is closed and empty; without, nil when nothing is queued.
func (s *sendSide) take(maxRows int, wait bool) (*batcher.Batch, int) {
	maxRows, maxBytes := max(maxRows, 1), s.opts.Batch.MaxBytes
	s.mu.Lock()
	for len(s.queue) == 0 {
		if s.closed || !wait {
			s.mu.Unlock()
			return nil, 0
		}
		s.cond.Wait()
	}
	var b *batcher.Batch
	k := 0 // whole batches taken
	for k < len(s.queue) {
		o := s.queue[k]
		if b == nil && o.Len() <= maxRows && o.Bytes <= maxBytes {
			b, k = o, k+1 // the common case: no copy
			continue
		}
		if b == nil {
			b = &batcher.Batch{Bytes: batcher.BodyOverhead}
		}
		if b.Len()+o.Len() > maxRows || b.BytesWith(o) > maxBytes {
			// Fill the request with o's first rows; o keeps the rest.
			if front := o.Front(b, maxRows, maxBytes); front != nil {
				b.Append(front)
			}
			break
		}
		b.Append(o)
		k++
	}
	clear(s.queue[:k])
	s.queue = s.queue[k:]
	more := len(s.queue) > 0
	s.mu.Unlock()
	if more {
		s.cond.Broadcast() // another sender may take the rest
	}
	if b.Len() == 0 {
		// Not one row fits the bounds: the batcher refuses such rows
		// (ErrRowTooLarge), so this cannot happen.
		panic(fmt.Sprintf("pipeline: target %s: a queued row does not fit max_rows %d and max_bytes %d", s.opts.Name, maxRows, maxBytes))
	}
	return b, b.Len()
}

// takeSendable takes the rows of the next request without waiting, leaving
// out the rows of withdrawn events (Batch.Take), which it settles: nil when
// no row is left to send. n counts every row taken from the queue, the
// withdrawn ones too.
func (s *sendSide) takeSendable(maxRows int) (b *batcher.Batch, n int) {
	for {
		next, k := s.take(maxRows, false)
		n += k
		if next == nil {
			return nil, n
		}
		if b = next.Take(); b != nil {
			return b, n
		}
	}
}

// done counts n rows settled and signals the read loop when nothing of the
// target is queued or in flight any more (it may flush the open batches).
func (s *sendSide) done(n int) {
	if s.busy.Add(-int64(n)) == 0 {
		select {
		case s.p.idle <- struct{}{}:
		default:
		}
	}
}

// close flushes the open batch, stops the batcher and ends the queue; the
// senders finish what is queued (run returns then). A batch that could not
// be flushed is settled with an error: its events come again.
func (s *sendSide) close(ctx context.Context) {
	if err := s.batcher.Flush(ctx); err != nil && !errors.Is(err, batcher.ErrClosed) {
		s.p.log.Warn("flushing the last batch failed", "target", s.opts.Name, "err", err)
	}
	if unsent := s.batcher.Close(); unsent != nil {
		unsent.Done(fmt.Errorf("pipeline %s: batch for target %s not sent before shutdown", s.p.opts.Name, s.opts.Name))
	}
	close(s.in)
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

// flushIfIdle closes every target's open batch when nothing of any target
// is queued or in flight: the read loop is held at max_unacked_events and
// no ack can come to free room for more rows. While rows of any target are
// in flight, their acks will (an event's rows join the open batch of every
// target at once), and the rows read then join the open batches; the
// linger still bounds the wait.
func (f *fanOut) flushIfIdle(ctx context.Context) {
	for _, s := range f.sides {
		if s.busy.Load() != 0 {
			return
		}
	}
	for _, s := range f.sides {
		if err := s.batcher.Flush(ctx); err != nil && ctx.Err() == nil {
			f.p.log.Warn("flushing a batch at the unacked bound failed", "target", s.opts.Name, "err", err)
		}
	}
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
