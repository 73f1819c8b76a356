package daemon

import (
	"context"

	"github.com/pushd/pushd/internal/deadletter"
	"github.com/pushd/pushd/internal/pipeline"
)

// deadLetterAdapter writes the pipeline's rejections as dead-letter entries.
type deadLetterAdapter struct{ w *deadletter.Writer }

var _ pipeline.DeadLetter = deadLetterAdapter{}

func (a deadLetterAdapter) Write(ctx context.Context, r pipeline.Rejection) error {
	return a.w.Write(ctx, deadletter.Entry{
		Pipeline: r.Pipeline,
		Position: r.Event.Where(),
		Index:    r.Index,
		Reason: deadletter.Reason{
			Kind:    r.Kind,
			Field:   r.Field,
			Rule:    r.Rule,
			Status:  r.Status,
			Code:    r.Code,
			Message: r.Message,
		},
		Row:   r.Row,
		Event: r.Event.Data,
	})
}
