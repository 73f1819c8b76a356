// Package reduce is the optional stage between mapping and batching that
// keeps a pipeline real-time when its input outgrows the dataset's quota:
// windowed aggregates, the latest row per key, or a sample.
//
// It is pure logic: rows go in with Add, emissions come out of Add, Tick and
// Flush; it starts no goroutine and reads no clock (the caller passes the
// time). Each emission carries an Acks record of the events folded into its
// rows, held compactly (offset ranges for Kafka, not one object per event),
// which the pipeline releases when the rows are settled.
//
// A Reducer is not safe for concurrent use.
package reduce

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pushd/pushd/internal/schema"
)

// ErrLate is wrapped by the error of Add for a row whose window was already
// emitted; the pipeline dead-letters it with reason late.
var ErrLate = errors.New("late: its window was already emitted")

// RowError is returned by Add for a row the reduction cannot use; the
// pipeline dead-letters it. Rule is "late", "time" (no usable event time)
// or "shape".
type RowError struct {
	Rule    string
	Message string
	err     error
}

func (e *RowError) Error() string { return e.Message }
func (e *RowError) Unwrap() error { return e.err }

// Emission is a group of rows the reduction gives out, with the record of
// the events folded into them.
type Emission struct {
	// Rows are encoded JSON objects with the output columns.
	Rows []json.RawMessage
	// Acks holds the events; call Acks.Done when Rows are settled. An
	// emission may have Acks but no rows (everything was sampled out):
	// Done then at once.
	Acks *Acks
	// EventTime is the newest event time (or arrival time) among the rows,
	// in Unix milliseconds, for the freshness metric.
	EventTime int64
	// Early says the emission was forced before its time (max_groups
	// reached, or the pipeline at its unacked bound).
	Early bool
	// Label names what was emitted ("window 2026-11-28T07:10:00.000Z"), for
	// logs and dead letters.
	Label string
}

// Stats count what a Reducer did.
type Stats struct {
	Events     int64 // rows folded in
	Rows       int64 // rows emitted
	Late       int64 // rows refused as late
	Early      int64 // emissions forced early
	OpenGroups int   // groups held now
}

// mode is one kind of reduction.
type mode interface {
	add(r *Reducer, vals [][]byte, ref Ref, now int64, out []Emission) ([]Emission, error)
	tick(r *Reducer, now int64, out []Emission) []Emission
	flushOldest(r *Reducer, out []Emission) []Emission
	flush(r *Reducer, out []Emission) []Emission
	groups() int
}

// Reducer applies one pipeline's reduction. Make it with New.
type Reducer struct {
	cfg     Config
	layout  *layout
	mode    mode
	timeCol int   // column of the event time, -1 for arrival time
	keyCols []int // group_by or key columns
	vals    [][]byte
	row     json.RawMessage // the row being added
	keyBuf  []byte
	stats   Stats
}

// New compiles cfg for rows of the schema columns cols.
func New(cfg Config, cols []schema.Column) (*Reducer, error) {
	if !cfg.Enabled() {
		return nil, errors.New("reduce: no mode configured")
	}
	if err := cfg.Validate(cols); err != nil {
		return nil, fmt.Errorf("invalid reduce section: %w", err)
	}
	if cfg.MaxGroups <= 0 {
		cfg.MaxGroups = DefaultMaxGroups
	}
	r := &Reducer{cfg: cfg, layout: newLayout(cols), timeCol: -1}
	r.vals = make([][]byte, len(cols))
	if cfg.TimeColumn != "" {
		r.timeCol = r.layout.col(cfg.TimeColumn)
	}
	keys := cfg.Key
	if cfg.Mode == ModeAggregate {
		keys = cfg.GroupBy
	}
	for _, k := range keys {
		r.keyCols = append(r.keyCols, r.layout.col(k))
	}
	switch cfg.Mode {
	case ModeAggregate:
		r.mode = newAggregator(cfg, r.layout)
	case ModeLatest:
		r.mode = newLatest(cfg)
	case ModeSample:
		r.mode = newSampler(cfg)
	}
	return r, nil
}

// Config returns the configuration the reducer runs.
func (r *Reducer) Config() Config { return r.cfg }

// KeepsRows reports whether the reduction keeps rows given to Add (latest
// and sample emit them as they came). When it does not (aggregate), the
// caller may reuse a row's memory once Add returned.
func (r *Reducer) KeepsRows() bool { return r.cfg.Mode != ModeAggregate }

// Add folds row (made by the schema's mapper from the event ref) in; now is
// the arrival time in Unix milliseconds. It appends to out the emissions the
// row completes (a window closed by the watermark, groups over max_groups).
// On a RowError the row was not folded and ref not held: the caller
// dead-letters the row.
func (r *Reducer) Add(row json.RawMessage, ref Ref, now int64, out []Emission) ([]Emission, error) {
	if err := r.layout.split(row, r.vals); err != nil {
		return out, &RowError{Rule: "shape", Message: err.Error(), err: err}
	}
	r.row = row
	n := len(out)
	out, err := r.mode.add(r, r.vals, ref, now, out)
	r.row = nil
	out = r.count(n, out)
	if err != nil {
		if errors.Is(err, ErrLate) {
			r.stats.Late++
		}
		return out, err
	}
	r.stats.Events++
	return out, nil
}

// Tick emits what is due at now (Unix milliseconds): windows closed by the
// clock (arrival time, an idle stream), the interval of latest and sample.
// The pipeline calls it about once a second.
func (r *Reducer) Tick(now int64, out []Emission) []Emission {
	return r.count(len(out), r.mode.tick(r, now, out))
}

// Partition is one partition a source reads, as the source knows it.
type Partition struct {
	Topic     string
	Partition int
	// Unread is how many records wait in it to be read: 0 when the source
	// has read up to its end, -1 when the source does not know yet.
	Unread int64
}

// AwaitPartitions says the source reads partitions (Kafka) and will name
// them with Partitions: until then an event-time aggregation's watermark
// stays put, since a partition that has not given a row yet may hold rows
// older than every row seen.
func (r *Reducer) AwaitPartitions() {
	if a, ok := r.mode.(*aggregator); ok && a.eventTime {
		a.awaitParts = true
	}
}

// Partitions tells the reducer the partitions the source reads now and how
// far behind each is; now is the time in Unix milliseconds. For an
// event-time aggregation, a partition with unread records holds the
// watermark whatever the wall clock says (it is not idle, only not read
// yet); a partition listed for the first time holds it until it gives a row
// (when its Unread is unknown, for idle_timeout at most; with Unread 0 not
// at all); a partition no longer listed holds it only until idle. The pipeline calls it about once
// a second; the windows it releases go out at the next Tick.
func (r *Reducer) Partitions(parts []Partition, now int64) {
	if a, ok := r.mode.(*aggregator); ok && a.eventTime {
		a.partitions(parts, now)
	}
}

// FlushOldest emits the oldest window (or the current interval) early, to
// free the events it holds: the pipeline calls it when it reaches its bound
// of unacked events.
func (r *Reducer) FlushOldest(out []Emission) []Emission {
	n := len(out)
	out = r.count(n, r.mode.flushOldest(r, out))
	for i := n; i < len(out); i++ {
		out[i].Early = true
		r.stats.Early++
	}
	return out
}

// Flush emits everything held, at the end of input or shutdown.
func (r *Reducer) Flush(out []Emission) []Emission {
	return r.count(len(out), r.mode.flush(r, out))
}

// count adds the rows of out[from:] to the stats.
func (r *Reducer) count(from int, out []Emission) []Emission {
	for _, e := range out[from:] {
		r.stats.Rows += int64(len(e.Rows))
	}
	return out
}

// Stats returns the counts so far.
func (r *Reducer) Stats() Stats {
	s := r.stats
	s.OpenGroups = r.mode.groups()
	return s
}

// eventTime returns the row's event time, or now for arrival time.
func (r *Reducer) eventTime(vals [][]byte, now int64) (int64, error) {
	if r.timeCol < 0 {
		return now, nil
	}
	v := vals[r.timeCol]
	if isNull(v) {
		return 0, &RowError{Rule: "time", Message: fmt.Sprintf("column %s (the reduction's time_column) has no value", r.cfg.TimeColumn)}
	}
	t, ok := parseMillis(v)
	if !ok {
		return 0, &RowError{Rule: "time", Message: fmt.Sprintf("column %s (the reduction's time_column) holds %s, not a DateTime", r.cfg.TimeColumn, v)}
	}
	return t, nil
}

// key writes the key of a row into r.keyBuf as the "name":value pairs of
// the key columns, joined by commas: a fragment of the output row that is
// also unambiguous as a map key.
func (r *Reducer) key() []byte {
	b := r.keyBuf[:0]
	for i, c := range r.keyCols {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r.layout.keys[c]...)
		b = append(b, r.vals[c]...)
	}
	r.keyBuf = b
	return b
}

// quotedName returns "name": with name JSON-quoted.
func quotedName(name string) []byte {
	q, _ := json.Marshal(name) // a string always marshals
	return append(q, ':')
}

// label formats a time for Emission.Label.
func label(prefix string, ms int64) string {
	return prefix + " " + time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}
