package batcher

import (
	"encoding/json"

	"github.com/pushd/pushd/internal/source"
)

// Body framing of a Power BI "post rows" request: {"rows":[row,row,...]}.
const (
	bodyOpen  = `{"rows":[`
	bodyClose = `]}`
	// BodyOverhead is the size of the framing around the rows of a body.
	BodyOverhead = len(bodyOpen) + len(bodyClose)
)

// Batch is a group of rows for one table, sent in one request. Rows[i] came
// from the event that Trackers[i] follows, so a failed row can be traced to
// its event (for the dead letter) and every event acked when its rows are
// settled.
//
// A batch is owned by one goroutine at a time: the batcher until it sends it
// on its out channel, the receiver afterwards.
type Batch struct {
	// Rows are encoded JSON objects, one per row.
	Rows []json.RawMessage
	// Trackers[i] follows the event that Rows[i] came from.
	Trackers []*Tracker
	// Bytes is the exact length of the body that AppendBody writes:
	// {"rows":[ + the rows joined by commas + ]}.
	Bytes int
}

// Len returns the number of rows.
func (b *Batch) Len() int { return len(b.Rows) }

// AppendBody appends the request body {"rows":[...]} to dst; it adds exactly
// b.Bytes bytes.
func (b *Batch) AppendBody(dst []byte) []byte {
	dst = append(dst, bodyOpen...)
	for i, r := range b.Rows {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, r...)
	}
	return append(dst, bodyClose...)
}

// Take claims the batch's rows for sending; call it just before the first
// post of the batch (not for the halves of a split). Rows of events their
// source has withdrawn (source.Claim) are settled with source.ErrWithdrawn
// and left out, so a withdrawn event never lands; every other event is
// marked taken and can no longer be withdrawn. Take returns the batch to
// send: b itself when nothing was withdrawn (the common case, no copy), a
// new batch without the withdrawn rows, or nil when every row was.
//
// This is the only place where withdrawal meets batching: however batches
// are formed, a sender calls Take on what it is about to post.
func (b *Batch) Take() *Batch {
	first := -1 // the first withdrawn row
	for i, t := range b.Trackers {
		if !t.event.Claim.Take() {
			first = i
			break
		}
	}
	if first < 0 {
		return b
	}
	kept := &Batch{Rows: append([]json.RawMessage(nil), b.Rows[:first]...), Trackers: append([]*Tracker(nil), b.Trackers[:first]...)}
	for i := first; i < len(b.Rows); i++ {
		t := b.Trackers[i]
		if !t.event.Claim.Take() {
			t.settle(1, source.ErrWithdrawn)
			continue
		}
		kept.Rows = append(kept.Rows, b.Rows[i])
		kept.Trackers = append(kept.Trackers, t)
	}
	if len(kept.Rows) == 0 {
		return nil
	}
	kept.Bytes = bodyBytes(kept.Rows)
	return kept
}

// Done settles every row of the batch: err nil when Power BI accepted them
// (or they were dead-lettered), else the error their events are acked with.
// Call it, or RowDone for each row, once per row; never both for a row.
func (b *Batch) Done(err error) {
	// Rows of one event usually sit side by side: settle each run at once.
	for i := 0; i < len(b.Trackers); {
		t := b.Trackers[i]
		j := i + 1
		for j < len(b.Trackers) && b.Trackers[j] == t {
			j++
		}
		t.settle(int64(j-i), err)
		i = j
	}
}

// RowDone settles row i alone, as Done does for the whole batch.
func (b *Batch) RowDone(i int, err error) { b.Trackers[i].settle(1, err) }

// BytesWith is the body length of b and o sent as one request: what Append
// would make b's Bytes.
func (b *Batch) BytesWith(o *Batch) int {
	switch {
	case len(o.Rows) == 0:
		return b.Bytes
	case len(b.Rows) == 0:
		return o.Bytes
	}
	return b.Bytes + o.Bytes - BodyOverhead + 1 // one framing, one comma between
}

// Append moves o's rows, with their trackers, to the end of b, so that
// batches that waited for a sender go out as one request. The caller checks
// the limits (Len, BytesWith) first, owns both batches, and uses o no more.
func (b *Batch) Append(o *Batch) {
	b.Bytes = b.BytesWith(o)
	b.Rows = append(b.Rows, o.Rows...)
	b.Trackers = append(b.Trackers, o.Trackers...)
}

// Front moves the longest run of b's first rows whose body fits maxRows
// and maxBytes beside dst's (dst.Len()+n rows, dst.BytesWith of them) into
// a new batch, and returns it; nil when not one row fits. b keeps the rest:
// a sender that fills its request from a batch too large to take whole
// leaves the rest for the next request.
func (b *Batch) Front(dst *Batch, maxRows, maxBytes int) *Batch {
	n, size := 0, dst.Bytes
	if dst.Len() == 0 {
		size = BodyOverhead
	}
	for n < len(b.Rows) && dst.Len()+n < maxRows {
		next := size + len(b.Rows[n])
		if dst.Len()+n > 0 {
			next++ // the comma
		}
		if next > maxBytes {
			break
		}
		size = next
		n++
	}
	if n == 0 {
		return nil
	}
	front := &Batch{Rows: b.Rows[:n:n], Trackers: b.Trackers[:n:n]}
	front.Bytes = bodyBytes(front.Rows)
	b.Rows, b.Trackers = b.Rows[n:], b.Trackers[n:]
	b.Bytes = bodyBytes(b.Rows)
	return front
}

// Split halves the batch, to isolate a bad row after Power BI rejected the
// whole request (400 or 413). The halves share the parent's arrays, so use
// them instead of the parent, never as well. A batch of fewer than two rows
// is returned as it is, with a nil second half.
func (b *Batch) Split() (*Batch, *Batch) {
	n := len(b.Rows)
	if n < 2 {
		return b, nil
	}
	h := n / 2
	first := &Batch{Rows: b.Rows[:h:h], Trackers: b.Trackers[:h:h]}
	second := &Batch{Rows: b.Rows[h:], Trackers: b.Trackers[h:]}
	first.Bytes = bodyBytes(first.Rows)
	second.Bytes = b.Bytes - first.Bytes + BodyOverhead - 1 // the comma between the halves
	return first, second
}

// bodyBytes is the encoded body length of rows.
func bodyBytes(rows []json.RawMessage) int {
	n := BodyOverhead
	for i, r := range rows {
		if i > 0 {
			n++
		}
		n += len(r)
	}
	return n
}
