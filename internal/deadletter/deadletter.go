// Package deadletter writes the events, or parts of events, that pushd could
// not deliver to an NDJSON file, one line per entry, so that nothing is
// dropped silently and an operator can fix and replay them.
//
// Each line is a JSON object:
//
//	{
//	  "time":     "2026-05-09T07:31:02.123456Z",  // when it was written, UTC
//	  "pipeline": "telemetry",
//	  "position": "stdin:42",                     // where the event came from
//	  "index":    3,                              // object within an array event; absent for 0
//	  "reason": {
//	    "kind":    "mapping" | "rejected" | "source" | "late" | "reduce",
//	    "field":   "temperature",                 // mapping: the column
//	    "rule":    "type",                        // mapping: the rule broken
//	    "status":  400,                           // rejected: Power BI's HTTP status
//	    "code":    "InvalidRequest",              // rejected: Power BI's error code
//	    "message": "..."                          // in words
//	  },
//	  "row":   {...},                             // rejected: the row Power BI refused
//	  "event": {...}                              // the original event
//	}
//
// Empty reason fields are left out. "event" is the original event as JSON
// when it is valid JSON (compacted onto one line), else a JSON string; an
// event that is not valid UTF-8 goes in "event_base64" instead, so its bytes
// survive exactly.
//
// Durability: each entry reaches the file with its own write call before
// Write returns, so once the pipeline acks an event (and Kafka commits it)
// its dead-letter line survives a crash of pushd; Close also fsyncs. A
// user-space buffer flushed on an interval would lose the lines of events
// already committed if pushd were killed in between. Dead letters are rare,
// so the cost of one write call each is small. If a write fails, Write
// returns the error, and every later Write too: the pipeline then stops
// rather than ack an event it could not record.
//
// The file appears with its first entry: a run with nothing undelivered
// leaves none behind.
package deadletter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Kinds of Reason.
const (
	// KindMapping: the schema refused the event or one of its objects.
	KindMapping = "mapping"
	// KindRejected: Power BI refused the row for good.
	KindRejected = "rejected"
	// KindSource: the source could not frame the event (a line too long,
	// not UTF-8).
	KindSource = "source"
	// KindLate: the row arrived after its reduce window was emitted.
	KindLate = "late"
	// KindReduce: the reduction could not use the row (no event time).
	KindReduce = "reduce"
)

// File modes of what Open creates: dead letters hold event data, which may
// be personal, so only the owner reads the file by default.
const (
	FileMode os.FileMode = 0o600
	DirMode  os.FileMode = 0o750
)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("dead letter closed")

// Reason says why an entry could not be delivered.
type Reason struct {
	// Kind is KindMapping, KindRejected, KindSource, KindLate or KindReduce.
	Kind string `json:"kind"`
	// Target names the target that refused the row (rejected): "powerbi"
	// or the name of a fabric_eventstream target.
	Target string `json:"target,omitempty"`
	// Field is the column whose value was refused (mapping).
	Field string `json:"field,omitempty"`
	// Rule is the rule the value broke (mapping), e.g. "required", "type".
	Rule string `json:"rule,omitempty"`
	// Status is Power BI's HTTP status (rejected).
	Status int `json:"status,omitempty"`
	// Code is Power BI's error code (rejected).
	Code string `json:"code,omitempty"`
	// Message says what was wrong in words.
	Message string `json:"message,omitempty"`
}

// Entry is one undelivered event, object or row.
type Entry struct {
	// Time is when it was given up; zero means now.
	Time time.Time
	// Pipeline names the pipeline; empty means Options.Pipeline.
	Pipeline string
	// Position is the source position of the event ("stdin:42").
	Position string
	// Index is the object's position within an array event (0 otherwise).
	Index int
	// Reason says why.
	Reason Reason
	// Row is the encoded row Power BI refused, if any.
	Row json.RawMessage
	// Event is the original event, as the source gave it.
	Event []byte
}

// Options configure a Writer.
type Options struct {
	// Pipeline is written on entries that name none, and labels metrics.
	Pipeline string
	// Metrics counts entries; nil means no metrics.
	Metrics *Metrics
	// Now is the clock for Entry.Time when zero; nil means time.Now.
	Now func() time.Time
}

// Writer appends entries to a dead-letter file. It is safe for concurrent
// use.
type Writer struct {
	opts  Options
	path  string
	count atomic.Int64

	mu     sync.Mutex // guards the fields below
	file   *os.File   // nil for New, and for Open until the file is opened
	w      io.Writer  // nil until Open's new file is created by the first Write
	buf    bytes.Buffer
	enc    *json.Encoder
	err    error // sticky: the first write failure
	closed bool
}

// Open prepares the dead-letter file at path for appending. It creates the
// file's directories, but not the file: that waits for the first Write, so
// a run with nothing to dead-letter leaves no empty file behind. A path
// pushd cannot write still fails here, at start: an existing file is
// opened now (and a last line left unfinished by a crash is ended), and for
// a new file Open checks that the directory takes a file by creating and
// removing a temporary one. Several writers may append to one file: each
// line goes in one write call, which O_APPEND keeps whole.
func Open(path string, opts Options) (*Writer, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return nil, fmt.Errorf("creating the directory of the dead letter %s: %w", path, err)
	}
	w := newWriter(opts)
	w.path = path
	switch _, err := os.Stat(path); {
	case err == nil:
		if err := w.openFile(); err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := checkWritable(dir); err != nil {
			return nil, fmt.Errorf("cannot create the dead letter %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("opening the dead letter: %w", err)
	}
	return w, nil
}

// Check reports whether Open would accept path, changing nothing: it
// creates no directory and opens no file for writing. It is what `pushd
// doctor` runs, so that doctor refuses what `pushd run` would. Like Open, it
// learns whether a directory takes a file by creating and removing a
// temporary one there.
func Check(path string) error {
	dir := filepath.Dir(path)
	base, err := existingDir(dir)
	if err != nil {
		return fmt.Errorf("creating the directory of the dead letter %s: %w", path, err)
	}
	if base != dir {
		// Open would create the missing directories in base.
		if err := checkWritable(base); err != nil {
			return fmt.Errorf("creating the directory of the dead letter %s: %w", path, err)
		}
		return nil
	}
	switch _, err := os.Stat(path); {
	case err == nil:
		// Open appends to it and reads its last byte.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("opening the dead letter: %w", err)
		}
		_ = f.Close()
		r, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("checking the end of the dead letter: %w", err)
		}
		return r.Close()
	case errors.Is(err, fs.ErrNotExist):
		if err := checkWritable(dir); err != nil {
			return fmt.Errorf("cannot create the dead letter %s: %w", path, err)
		}
		return nil
	default:
		return fmt.Errorf("opening the dead letter: %w", err)
	}
}

// existingDir returns dir, or its nearest ancestor that exists when dir
// does not; an error when that is not a directory (as os.MkdirAll fails).
func existingDir(dir string) (string, error) {
	for d := dir; ; {
		st, err := os.Stat(d)
		switch {
		case err == nil && st.IsDir():
			return d, nil
		case err == nil:
			return "", &fs.PathError{Op: "mkdir", Path: d, Err: syscall.ENOTDIR}
		case !errors.Is(err, fs.ErrNotExist):
			return "", err
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", err
		}
		d = parent
	}
}

// checkWritable checks that a file can be created in dir, leaving none.
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".pushd-dead-letter-check-*")
	if err != nil {
		return fmt.Errorf("directory %s is not writable: %w", dir, err)
	}
	cerr := f.Close()
	rerr := os.Remove(f.Name())
	if err := errors.Join(cerr, rerr); err != nil {
		return fmt.Errorf("checking that directory %s is writable: %w", dir, err)
	}
	return nil
}

// openFile opens (creating it if needed) the file at w.path for appending
// and ends a last line left unfinished. The caller holds w.mu, or is Open.
func (w *Writer) openFile() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, FileMode)
	if err != nil {
		return fmt.Errorf("opening the dead letter: %w", err)
	}
	if err := endLine(f, w.path); err != nil {
		_ = f.Close()
		return err
	}
	w.file, w.w = f, f
	return nil
}

// endLine ends a last line left unfinished (by a crash during a write of an
// earlier run), so the next entry starts on a line of its own.
func endLine(f *os.File, path string) error {
	r, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("checking the end of the dead letter: %w", err)
	}
	defer r.Close()
	st, err := r.Stat()
	if err != nil {
		return fmt.Errorf("checking the end of the dead letter: %w", err)
	}
	if st.Size() == 0 {
		return nil
	}
	last := make([]byte, 1)
	if _, err := r.ReadAt(last, st.Size()-1); err != nil {
		return fmt.Errorf("checking the end of the dead letter %s: %w", path, err)
	}
	if last[0] != '\n' {
		if _, err := f.Write([]byte{'\n'}); err != nil {
			return fmt.Errorf("ending the last line of the dead letter %s: %w", path, err)
		}
	}
	return nil
}

// New returns a Writer appending entries to w, for tests and for writers
// other than a file. Close does not close w.
func New(w io.Writer, opts Options) *Writer {
	dw := newWriter(opts)
	dw.w, dw.path = w, "(writer)"
	return dw
}

// newWriter returns a Writer with no destination yet.
func newWriter(opts Options) *Writer {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	dw := &Writer{opts: opts}
	dw.enc = json.NewEncoder(&dw.buf)
	dw.enc.SetEscapeHTML(false) // keep the event's text as it was
	return dw
}

// line is the JSON shape of an entry; see the package doc.
type line struct {
	Time        string `json:"time"`
	Pipeline    string `json:"pipeline"`
	Position    string `json:"position,omitempty"`
	Index       int    `json:"index,omitempty"`
	Reason      Reason `json:"reason"`
	Row         any    `json:"row,omitempty"`
	Event       any    `json:"event,omitempty"`
	EventBase64 []byte `json:"event_base64,omitempty"`
}

// Write appends e as one line. It returns once the line is handed to the
// operating system (see the package doc), or with an error: then the entry
// is not recorded and the pipeline must not ack its event. After one failure
// every Write fails.
func (w *Writer) Write(ctx context.Context, e Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("writing to the dead letter %s: %w", w.path, context.Cause(ctx))
	}
	if e.Time.IsZero() {
		e.Time = w.opts.Now()
	}
	if e.Pipeline == "" {
		e.Pipeline = w.opts.Pipeline
	}
	l := line{
		Time:     e.Time.UTC().Format(time.RFC3339Nano),
		Pipeline: e.Pipeline,
		Position: e.Position,
		Index:    e.Index,
		Reason:   e.Reason,
		Row:      jsonOrText(e.Row),
	}
	switch {
	case !utf8.Valid(e.Event):
		l.EventBase64 = e.Event
	case json.Valid(e.Event):
		l.Event = json.RawMessage(e.Event)
	default:
		l.Event = string(e.Event) // an empty event is written as ""
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed:
		return ErrClosed
	case w.err != nil:
		return w.err
	}
	w.buf.Reset()
	if err := w.enc.Encode(&l); err != nil {
		// Our own encoding failed: nothing was written, later writes may work.
		return fmt.Errorf("encoding a dead letter entry for %s: %w", e.Position, err)
	}
	if w.w == nil {
		// The first entry of a file Open did not find: create it now.
		if err := w.openFile(); err != nil {
			w.err = fmt.Errorf("creating the dead letter %s: %w", w.path, err)
			return w.err
		}
	}
	if _, err := w.w.Write(w.buf.Bytes()); err != nil {
		w.err = fmt.Errorf("writing to the dead letter %s: %w", w.path, err)
		return w.err
	}
	w.count.Add(1)
	w.opts.Metrics.entry(e.Pipeline, e.Reason.Kind)
	return nil
}

// jsonOrText returns b as raw JSON when it is valid JSON, as a string when
// it is UTF-8 text, and nil when empty.
func jsonOrText(b []byte) any {
	switch {
	case len(b) == 0:
		return nil
	case utf8.Valid(b) && json.Valid(b):
		return json.RawMessage(b)
	default:
		return string(b)
	}
}

// Count returns the number of entries written so far.
func (w *Writer) Count() int64 { return w.count.Load() }

// Close syncs the file to disk and closes it (a Writer from New, or from
// Open that never wrote to a new file, only stops taking entries). Later Writes fail with ErrClosed; later Closes return nil.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.file == nil {
		return nil
	}
	serr := w.file.Sync()
	cerr := w.file.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("closing the dead letter %s: %w", w.path, err)
	}
	return nil
}

// Metrics counts dead-letter entries.
type Metrics struct {
	rows *prometheus.CounterVec
}

// NewMetrics registers the dead-letter metrics on reg (when not nil):
// pushd_deadletter_rows_total{pipeline,reason}, reason being the entry's
// kind (mapping, rejected, source; other for anything else).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{rows: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushd_deadletter_rows_total",
		Help: "Entries (events, objects or rows) written to the dead letter, by pipeline and reason.",
	}, []string{"pipeline", "reason"})}
	if reg != nil {
		reg.MustRegister(m.rows)
	}
	return m
}

// Forget deletes the series of a pipeline that no longer runs (removed by
// a reload).
func (m *Metrics) Forget(pipeline string) {
	if m != nil {
		m.rows.DeletePartialMatch(prometheus.Labels{"pipeline": pipeline})
	}
}

func (m *Metrics) entry(pipeline, kind string) {
	if m == nil {
		return
	}
	switch kind {
	case KindMapping, KindRejected, KindSource:
	default:
		kind = "other" // keep the label bounded
	}
	m.rows.WithLabelValues(pipeline, kind).Inc()
}
