// Package batcher groups the rows of one table into batches for Power BI and
// carries, with each batch, the trackers that ack the events inside.
//
// A batch is sent on the out channel when it reaches Config.MaxRows rows,
// when one more row would take its body past Config.MaxBytes, or when
// Config.Linger has passed since its first row. Add blocks while out is full,
// which is how a slow or throttled sender slows the reader down.
package batcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrRowTooLarge is returned (wrapped) by Add for a row that cannot fit in a
// body of Config.MaxBytes even alone; the pipeline dead-letters it.
var ErrRowTooLarge = errors.New("row too large for one request body")

// ErrClosed is returned by Add and Flush after Close.
var ErrClosed = errors.New("batcher closed")

// minRowBytes is the size of the smallest row, {}: a batch with less room
// left than a comma and this is full.
const minRowBytes = 2

// minCapacity is the smallest row capacity of a new batch.
const minCapacity = 16

// Batcher collects the rows of one table. Its methods are safe for
// concurrent use.
type Batcher struct {
	cfg Config
	out chan<- *Batch
	// lock is a mutex held as a token in a channel, so that a goroutine
	// waiting for it can give up when its context ends or on Close.
	lock chan struct{}
	stop chan struct{} // closed by Close
	once sync.Once

	// Guarded by lock.
	cur      *Batch
	deadline time.Time   // when cur must go, Linger after its first row
	timer    *time.Timer // fires onLinger; made with the first batch
	lastRows int         // rows in the previous batch: capacity hint
}

// New returns a batcher that sends full batches on out. The receiver owns a
// batch from then on and must settle its rows (Batch.Done, Batch.RowDone).
func New(cfg Config, out chan<- *Batch) (*Batcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("batcher config: %w", err)
	}
	return &Batcher{
		cfg:  cfg,
		out:  out,
		lock: make(chan struct{}, 1),
		stop: make(chan struct{}),
	}, nil
}

// Add appends row (one encoded JSON object, which must stay unchanged until
// its batch is settled) to the current batch on behalf of the event that t
// follows. When that completes a batch, Add sends it on out, blocking until
// out takes it or ctx ends.
//
// Add returns an error only when the row was not added: ctx ended before
// there was room for it, the batcher is closed, or the row is too large for
// any batch (ErrRowTooLarge).
func (b *Batcher) Add(ctx context.Context, row json.RawMessage, t *Tracker) error {
	if body := BodyOverhead + len(row); body > b.cfg.MaxBytes {
		return fmt.Errorf("row of %d bytes makes a %d-byte body, over max_bytes %d: %w",
			len(row), body, b.cfg.MaxBytes, ErrRowTooLarge)
	}
	if err := b.acquire(ctx); err != nil {
		return err
	}
	defer b.release()

	// A full batch left behind when ctx ended during an earlier send, or one
	// that this row would overfill, goes first.
	if c := b.cur; c != nil && (len(c.Rows) >= b.cfg.MaxRows || c.Bytes+1+len(row) > b.cfg.MaxBytes) {
		if err := b.send(ctx); err != nil {
			return err
		}
	}
	if b.cur == nil {
		b.begin()
	}
	c := b.cur
	if len(c.Rows) > 0 {
		c.Bytes++ // the comma
	}
	c.Bytes += len(row)
	c.Rows = append(c.Rows, row)
	c.Trackers = append(c.Trackers, t)
	t.add()
	if len(c.Rows) >= b.cfg.MaxRows || c.Bytes+1+minRowBytes > b.cfg.MaxBytes {
		// The row is in; if ctx ends before out takes the batch, it stays
		// here and goes with the next Add, Flush or linger.
		_ = b.send(ctx)
	}
	return nil
}

// Flush sends the current batch, if any, without waiting for it to fill:
// at the end of input and on shutdown. It blocks until out takes the batch
// or ctx ends.
func (b *Batcher) Flush(ctx context.Context) error {
	if err := b.acquire(ctx); err != nil {
		return err
	}
	defer b.release()
	if b.cur == nil {
		return nil
	}
	return b.send(ctx)
}

// Close stops the linger timer and makes every later Add and Flush fail with
// ErrClosed; a send blocked in Add, Flush or the timer gives up. It does not
// flush (call Flush first): it returns the batch it still held, nil if none,
// so the caller can settle its rows with an error. Close may be called more
// than once; later calls return nil.
func (b *Batcher) Close() (unsent *Batch) {
	closed := false
	b.once.Do(func() {
		close(b.stop)
		closed = true
	})
	if !closed {
		return nil
	}
	b.lock <- struct{}{} // every holder gives up promptly once stop is closed
	defer b.release()
	if b.timer != nil {
		b.timer.Stop()
	}
	unsent, b.cur = b.cur, nil
	return unsent
}

// acquire takes the lock, unless ctx ends or the batcher is closed first.
func (b *Batcher) acquire(ctx context.Context) error {
	select {
	case b.lock <- struct{}{}:
	default:
		select {
		case b.lock <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the batcher: %w", context.Cause(ctx))
		case <-b.stop:
			return ErrClosed
		}
	}
	select {
	case <-b.stop:
		b.release()
		return ErrClosed
	default:
		return nil
	}
}

func (b *Batcher) release() { <-b.lock }

// begin starts a new current batch and its linger clock. Lock held.
func (b *Batcher) begin() {
	n := min(max(b.lastRows, minCapacity), b.cfg.MaxRows)
	b.cur = &Batch{
		Rows:     make([]json.RawMessage, 0, n),
		Trackers: make([]*Tracker, 0, n),
		Bytes:    BodyOverhead,
	}
	b.deadline = time.Now().Add(b.cfg.Linger)
	if b.timer == nil {
		b.timer = time.AfterFunc(b.cfg.Linger, b.onLinger)
	} else {
		b.timer.Reset(b.cfg.Linger)
	}
}

// send hands the current batch to out. Lock held. On failure the batch stays
// current.
func (b *Batcher) send(ctx context.Context) error {
	// Read before the hand-over: the receiver owns the batch from then on,
	// and may merge it or take rows from it.
	n := len(b.cur.Rows)
	select {
	case b.out <- b.cur:
	case <-ctx.Done():
		return fmt.Errorf("sending a batch of %d rows: %w", n, context.Cause(ctx))
	case <-b.stop:
		return ErrClosed
	}
	b.lastRows = n
	b.cur = nil
	b.timer.Stop()
	return nil
}

// onLinger runs on the timer's goroutine: it sends the current batch if its
// linger has passed. The timer may fire late, after the batch it was set for
// has gone; the deadline check makes that harmless.
func (b *Batcher) onLinger() {
	select {
	case b.lock <- struct{}{}:
	case <-b.stop:
		return
	}
	defer b.release()
	if b.cur == nil {
		return
	}
	if wait := time.Until(b.deadline); wait > 0 {
		b.timer.Reset(wait)
		return
	}
	// Blocks while out is full, like Add; Close ends the wait.
	_ = b.send(context.Background())
}
