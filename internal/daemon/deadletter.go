package daemon

import (
	"context"
	"time"

	"github.com/pushd/pushd/internal/deadletter"
	"github.com/pushd/pushd/internal/pipeline"
)

// deadLetterAdapter writes the pipeline's rejections as dead-letter entries.
// Each entry written is also noted in recent, for the status page.
type deadLetterAdapter struct {
	w      *deadletter.Writer
	recent *recentDeadLetters
}

var _ pipeline.DeadLetter = deadLetterAdapter{}

func (a deadLetterAdapter) Write(ctx context.Context, r pipeline.Rejection) error {
	err := a.w.Write(ctx, deadletter.Entry{
		Pipeline: r.Pipeline,
		Position: r.Event.Where(),
		Index:    r.Index,
		Reason: deadletter.Reason{
			Kind:    r.Kind,
			Target:  r.Target,
			Field:   r.Field,
			Rule:    r.Rule,
			Status:  r.Status,
			Code:    r.Code,
			Message: r.Message,
		},
		Row:   r.Row,
		Event: r.Event.Data,
	})
	if err == nil && a.recent != nil {
		a.recent.add(r.Pipeline, DeadLetterNote{
			At: time.Now(), Position: r.Event.Where(), Kind: r.Kind, Field: r.Field, Rule: r.Rule,
			Status: r.Status, Code: r.Code, Message: r.Message,
		})
	}
	return err
}
