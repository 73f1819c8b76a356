package batcher

import (
	"sync"
	"sync/atomic"

	"github.com/pushd/pushd/internal/source"
)

// Tracker follows one event through the batches that hold its rows and acks
// it once, when the last of them is settled.
//
// The pipeline makes one per event (NewTracker), passes it to Batcher.Add with
// each row made from the event, and calls Seal when it has added them all
// (after writing any rows it could not map to the dead letter). Rows are
// settled by Batch.Done or Batch.RowDone. The source's Ack runs exactly once,
// when the tracker is sealed and every added row is settled: with the first
// error given to a row, else with source.ErrDeadLettered if MarkDeadLettered
// was called (part of the event went to the dead letter, which sources count
// as done), else with nil. An event that yields no rows acks at Seal.
type Tracker struct {
	event source.Event
	ack   source.Ack
	// done, when set, runs after ack with the same error. It is shared by
	// every tracker of a pipeline, so it costs no allocation per event.
	done func(error)
	// pending counts added rows not yet settled, plus one until Seal: the
	// bias keeps the count above zero while rows may still be added.
	pending atomic.Int64
	mu      sync.Mutex // guards err
	err     error
	// deadLettered turns a nil ack into source.ErrDeadLettered.
	deadLettered atomic.Bool
}

// NewTracker returns a tracker for ev that calls ack (which may be nil) when
// the event is done.
func NewTracker(ev source.Event, ack source.Ack) *Tracker {
	t := &Tracker{event: ev, ack: ack}
	t.pending.Store(1)
	return t
}

// NewTrackerWithHook is NewTracker with done called after ack, with the
// same error: a pipeline passes one long-lived function (to count acks and
// free its in-flight slot) instead of wrapping every event's ack.
func NewTrackerWithHook(ev source.Event, ack source.Ack, done func(error)) *Tracker {
	t := NewTracker(ev, ack)
	t.done = done
	return t
}

// Fail records err as the event's outcome although no row carries it (a
// row the batcher refused, a dead letter that could not be written): the
// event is acked with the first error recorded, once it is settled.
func (t *Tracker) Fail(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
}

// Event returns the event being tracked, for dead-letter entries: its Data
// stays valid until the event is acked.
func (t *Tracker) Event() source.Event { return t.event }

// Seal says that every row of the event has been added. It acks the event at
// once if no row is pending. Call it exactly once.
func (t *Tracker) Seal() { t.settle(1, nil) }

// MarkDeadLettered records that some of the event went to the dead letter
// instead of its table. If nothing else fails, the event is then acked with
// source.ErrDeadLettered, which sources count as done (it is committed and
// never comes again) and report apart from accepted events.
func (t *Tracker) MarkDeadLettered() { t.deadLettered.Store(true) }

// add counts one more row; the batcher calls it when a row joins a batch.
func (t *Tracker) add() {
	if t.pending.Add(1) == 1 {
		panic("batcher: row added to a Tracker whose event was already acked (Seal called too early?)")
	}
}

// settle marks n rows (or the seal) as done, recording err if it is the
// first failure, and acks when nothing is pending.
func (t *Tracker) settle(n int64, err error) {
	if err != nil {
		t.mu.Lock()
		if t.err == nil {
			t.err = err
		}
		t.mu.Unlock()
	}
	left := t.pending.Add(-n)
	if left > 0 {
		return
	}
	if left < 0 {
		panic("batcher: Tracker settled more times than rows were added (row settled twice or Seal called twice)")
	}
	t.mu.Lock()
	err = t.err
	t.mu.Unlock()
	if err == nil && t.deadLettered.Load() {
		err = source.ErrDeadLettered
	}
	if t.ack != nil {
		t.ack(err)
	}
	if t.done != nil {
		t.done(err)
	}
}

// Hold delays the event's ack until a matching Release, as a row in a batch
// would: package reduce holds the events it folds until the rows made from
// them are settled. Call it before Seal.
func (t *Tracker) Hold() { t.add() }

// Release ends one Hold, with the outcome of the rows that carried it.
func (t *Tracker) Release(err error) { t.settle(1, err) }
