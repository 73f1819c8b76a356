// Package replay reads a dead-letter file back as a source, so that
// `pushd replay` sends its events again through a pipeline's current
// mapping and limits (after the user fixed a schema, say). The file is only
// read, never changed; what is still refused goes to another dead letter.
//
// Each dead-letter line gives one event to replay: the original event, or
// for an entry about one object of an array event (its "index"), that
// object alone, so that the objects that did land are not sent twice. A
// line that cannot be replayed exactly (not a dead-letter entry, or a
// refused row of an array event that does not say which object it was)
// becomes an event with an error, which the pipeline writes to the new dead
// letter with the reason: nothing is dropped.
package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
)

// maxLine bounds one dead-letter line (an entry holds an event of at most
// the sources' limits plus its row and reason).
const maxLine = 64 << 20

// Stats count what a replay did.
type Stats struct {
	// Entries is the number of dead-letter lines read.
	Entries int64
	// Landed entries were accepted by the target.
	Landed int64
	// DeadLettered entries went, whole or in part, to the new dead letter.
	DeadLettered int64
	// Failed entries were not delivered (the run stopped first): they are
	// still in the input file, so a later replay sends them.
	Failed int64
}

// Source is a source.Source over a dead-letter file.
type Source struct {
	f      *os.File
	r      *bufio.Reader
	name   string
	mapper *schema.Mapper
	line   int
	mu     sync.Mutex

	entries, landed, deadLettered, failed atomic.Int64
}

var _ source.Source = (*Source)(nil)

// Open opens the dead-letter file at path for replay; mapper (the
// pipeline's) tells which object of an array event a refused row was.
func Open(path string, mapper *schema.Mapper) (*Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening the dead letter to replay: %w", err)
	}
	return &Source{f: f, r: bufio.NewReaderSize(f, 64<<10), name: filepath.Base(path), mapper: mapper}, nil
}

// entry is the part of a dead-letter line that replay reads.
type entry struct {
	Position string `json:"position"`
	Index    int    `json:"index"`
	Reason   struct {
		Kind string `json:"kind"`
	} `json:"reason"`
	Row         json.RawMessage `json:"row"`
	Event       json.RawMessage `json:"event"`
	EventBase64 []byte          `json:"event_base64"`
}

// Read returns the next entry's event, ErrEndOfInput after the last.
func (s *Source) Read(ctx context.Context) (source.Event, source.Ack, error) {
	if err := ctx.Err(); err != nil {
		return source.Event{}, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		text, err := s.r.ReadBytes('\n')
		if len(text) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return source.Event{}, nil, source.ErrEndOfInput
			}
			return source.Event{}, nil, fmt.Errorf("reading %s: %w", s.name, err)
		}
		s.line++
		text = bytes.TrimSpace(text)
		if len(text) == 0 {
			continue
		}
		if len(text) > maxLine {
			text = text[:maxLine]
		}
		s.entries.Add(1)
		ev := s.event(text)
		return ev, s.ack, nil
	}
}

// event turns one dead-letter line into the event to send again.
func (s *Source) event(text []byte) source.Event {
	pos := fmt.Sprintf("replay:%s:%d", s.name, s.line)
	var e entry
	if err := json.Unmarshal(text, &e); err != nil {
		return source.Event{Data: text, Position: pos, Err: fmt.Errorf("line %d of %s is not a dead-letter entry: %v", s.line, s.name, err)}
	}
	if e.Position != "" {
		pos += " (was " + e.Position + ")"
	}
	data, err := original(e)
	if err != nil {
		return source.Event{Data: text, Position: pos, Err: err}
	}
	if obj, err := s.object(e, data); err != nil {
		return source.Event{Data: data, Position: pos, Err: err}
	} else if obj != nil {
		data = obj
	}
	return source.Event{Data: data, Position: pos}
}

// original returns the event's bytes as the source gave them.
func original(e entry) ([]byte, error) {
	switch {
	case len(e.EventBase64) > 0:
		return e.EventBase64, nil
	case len(e.Event) == 0:
		return nil, errors.New("the entry holds no event")
	case e.Event[0] == '"':
		// An event that was not JSON is kept as a JSON string of its text.
		var text string
		if err := json.Unmarshal(e.Event, &text); err != nil {
			return nil, fmt.Errorf("the entry's event: %w", err)
		}
		return []byte(text), nil
	}
	return e.Event, nil
}

// object returns the one object of an array event that the entry is
// about, or nil when the whole event is to be replayed.
func (s *Source) object(e entry, data []byte) ([]byte, error) {
	if len(data) == 0 || bytes.TrimSpace(data)[0] != '[' {
		return nil, nil
	}
	var objects []json.RawMessage
	if err := json.Unmarshal(data, &objects); err != nil {
		return nil, nil // not valid JSON: replayed whole, refused again with the reason
	}
	switch {
	case e.Index > 0 || e.Reason.Kind == "mapping":
		if e.Index >= len(objects) {
			return nil, fmt.Errorf("the entry names object %d of an array event of %d objects", e.Index, len(objects))
		}
		return objects[e.Index], nil
	case len(objects) == 1:
		return objects[0], nil
	case e.Reason.Kind == "rejected" && len(e.Row) > 0 && s.mapper != nil:
		// A refused row does not carry its object's index: find the object
		// that maps to that row today.
		for _, o := range objects {
			rows, err := s.mapper.Map(o, nil, nil)
			if err == nil && len(rows) == 1 && jsonEqual(rows[0], e.Row) {
				return o, nil
			}
		}
		return nil, errors.New("the entry is a refused row of an array event and no object of the event maps to that row with the current schema; replaying the whole event would send its other objects twice: send the right object by hand")
	case e.Reason.Kind == "rejected":
		return nil, errors.New("the entry is a refused row of an array event without the row: it cannot tell which object to send again")
	}
	return nil, nil
}

// jsonEqual compares two JSON values by meaning.
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return bytes.Equal(xs, ys)
}

func (s *Source) ack(err error) {
	switch {
	case err == nil:
		s.landed.Add(1)
	case errors.Is(err, source.ErrDeadLettered):
		s.deadLettered.Add(1)
	default:
		s.failed.Add(1)
	}
}

// Stats returns the counts so far.
func (s *Source) Stats() Stats {
	return Stats{Entries: s.entries.Load(), Landed: s.landed.Load(), DeadLettered: s.deadLettered.Load(), Failed: s.failed.Load()}
}

// Close closes the file.
func (s *Source) Close(context.Context) error { return s.f.Close() }
