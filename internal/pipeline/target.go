package pipeline

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/pushapi"
)

// Target is one destination of a pipeline's rows: a Power BI table
// (PowerBI), a Fabric eventstream (eventstream.Target). The pipeline gives
// each target its own batcher and senders (TargetOptions); every row mapped
// from an event goes to every target, and the event is acked once all of
// them accepted or dead-lettered its rows.
type Target interface {
	// Send delivers rows as one batch, retrying throttling and transient
	// failures itself. It returns nil when every row was accepted. An error
	// that implements RowErrors gives each row its own outcome; any other
	// error is the outcome of every row, and Verdict says what it means.
	Send(ctx context.Context, rows []json.RawMessage) error
	// Verdict says what an error from Send (or one row's error) means for
	// the rows it is about.
	Verdict(err error) Verdict
}

// gatherer is implemented by a Target whose requests wait for the
// service's quotas in pushd (PowerBI): it takes a request's rows when the
// quotas admit the request rather than before it waits, so a request that
// had to wait carries what queued meanwhile.
type gatherer interface {
	// SendFrom is Send for rows still gathering: first is how many rows
	// wait now (what the request carries at least); take is called at most
	// once, when the request may go, with the most rows the quotas admit
	// then, and returns the rows to send (none: no request). take is not
	// called when ctx ends or the request fails before it may go; the
	// error says why.
	SendFrom(ctx context.Context, first int, take func(room int) []json.RawMessage) error
}

// RowErrors is implemented by errors of Target.Send that report each row
// of the batch apart: RowError(i) is row i's error, nil when it was
// accepted.
type RowErrors interface {
	error
	RowError(i int) error
}

// Outcome is what becomes of the rows a Send failed for.
type Outcome int

// Outcomes of a failed Send.
const (
	// Retry later: the rows were not delivered; their events are acked with
	// the error and come again (after a restart, for a Kafka source).
	OutcomeFailed Outcome = iota
	// Split: one row spoils the whole batch; send each half again. A batch
	// of one row goes to the dead letter.
	OutcomeSplit
	// DeadLetter: the rows are refused for good and go to the dead letter.
	OutcomeDeadLetter
	// Fatal: the target itself refuses pushd (credentials, target gone):
	// the pipeline stops rather than dead-letter the stream; the rows are
	// failed.
	OutcomeFatal
)

// Verdict is a target's reading of an error: its Outcome, and for the dead
// letter the rule broken and the service's answer.
type Verdict struct {
	Outcome Outcome
	// Rule names the rule in the dead letter ("rejected", "size",
	// "retries_exhausted").
	Rule string
	// Status and Code are the service's answer, when it gave them.
	Status int
	Code   string
	// Message says what is wrong in words (default: the error's text).
	Message string
}

// TargetOptions configure one target of a pipeline.
type TargetOptions struct {
	// Name labels the target in logs, summaries and dead letters
	// ("powerbi", or the configured name of another target).
	Name   string
	Target Target
	// Batch says when the target's batches are closed.
	Batch batcher.Config
	// Senders is the number of requests sent at once (default 5).
	Senders int
}

// PowerBI is the Power BI table target: Send posts rows with the pushapi
// sender (which paces them by the dataset's quotas and retries).
type PowerBI struct {
	Sender pushapi.Sender
	Table  pushapi.Target
}

var (
	_ Target   = PowerBI{}
	_ gatherer = PowerBI{}
)

// Send posts rows to the table.
func (t PowerBI) Send(ctx context.Context, rows []json.RawMessage) error {
	return t.Sender.PostRows(ctx, t.Table, rows)
}

// rowsGatherer is a pushapi.Sender that takes a request's rows when the
// dataset's quotas admit it (pushapi.Client.PostRowsFrom).
type rowsGatherer interface {
	PostRowsFrom(ctx context.Context, t pushapi.Target, first int, take func(room int) []json.RawMessage) error
}

var _ rowsGatherer = (*pushapi.Client)(nil)

// SendFrom posts the rows take returns when the dataset's quotas admit the
// request (pushapi.Client.PostRowsFrom). A Sender that does not gather
// takes them at once.
func (t PowerBI) SendFrom(ctx context.Context, first int, take func(room int) []json.RawMessage) error {
	if g, ok := t.Sender.(rowsGatherer); ok {
		return g.PostRowsFrom(ctx, t.Table, first, take)
	}
	rows := take(batcher.LimitRows)
	if len(rows) == 0 {
		return nil
	}
	return t.Sender.PostRows(ctx, t.Table, rows)
}

// Verdict reads pushapi's error classes: a row error (400, 413) splits the
// batch, exhausted retries dead-letter it, another permanent error (dataset
// gone, access lost) stops the pipeline, anything else fails the rows.
func (PowerBI) Verdict(err error) Verdict {
	v := Verdict{Outcome: OutcomeFailed, Rule: "rejected", Message: err.Error()}
	var ae *pushapi.APIError
	if errors.As(err, &ae) {
		v.Status, v.Code = ae.Status, ae.Code
		if ae.Message != "" {
			v.Message = ae.Message
		}
	}
	switch {
	case pushapi.IsRowError(err):
		v.Outcome = OutcomeSplit
	case errors.Is(err, pushapi.ErrRetriesExhausted):
		v.Outcome, v.Rule, v.Message = OutcomeDeadLetter, "retries_exhausted", err.Error()
	case pushapi.IsPermanent(err):
		v.Outcome = OutcomeFatal
	}
	return v
}
