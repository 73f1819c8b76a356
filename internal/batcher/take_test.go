package batcher

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/pushd/pushd/internal/source"
)

// TestBatchTakeDropsWithdrawnRows: rows of events withdrawn by their source
// leave the batch before it is posted and their events are acked with
// source.ErrWithdrawn; the other events are taken and can no longer be
// withdrawn; a batch with nothing withdrawn is sent as it is.
func TestBatchTakeDropsWithdrawnRows(t *testing.T) {
	acks := map[string]error{}
	tracker := func(name string, c *source.Claim) *Tracker {
		tr := NewTracker(source.Event{Position: name, Claim: c}, func(err error) { acks[name] = err })
		return tr
	}
	var kept, gone source.Claim
	trKept, trGone, trNil := tracker("kept", &kept), tracker("gone", &gone), tracker("kafka", nil)
	b := &Batch{}
	for _, tr := range []*Tracker{trKept, trGone, trGone, trNil} {
		row := json.RawMessage(`{"p":"` + tr.Event().Position + `"}`)
		tr.add()
		b.Rows = append(b.Rows, row)
		b.Trackers = append(b.Trackers, tr)
	}
	b.Bytes = bodyBytes(b.Rows)
	for _, tr := range []*Tracker{trKept, trGone, trNil} {
		tr.Seal()
	}
	if !gone.Withdraw() {
		t.Fatal("an open event could not be withdrawn")
	}
	sent := b.Take()
	if sent == nil || sent.Len() != 2 || sent.Trackers[0] != trKept || sent.Trackers[1] != trNil || sent.Bytes != bodyBytes(sent.Rows) {
		t.Fatalf("Take kept %+v, want the rows of kept and kafka", sent)
	}
	if err, ok := acks["gone"]; !ok || !errors.Is(err, source.ErrWithdrawn) {
		t.Fatalf("withdrawn event acked with %v (acked: %v), want ErrWithdrawn", err, ok)
	}
	if kept.Withdraw() {
		t.Fatal("an event taken for sending could still be withdrawn")
	}
	if again := sent.Take(); again != sent {
		t.Fatal("Take of a batch with nothing withdrawn made a copy")
	}
	sent.Done(nil)
	if acks["kept"] != nil || acks["kafka"] != nil || len(acks) != 3 {
		t.Fatalf("acks %v, want kept and kafka acked nil", acks)
	}
}
