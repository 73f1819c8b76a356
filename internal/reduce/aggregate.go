package reduce

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/pushd/pushd/internal/schema"
)

// aggregator folds rows into tumbling windows per key.
//
// Windows are aligned on the Unix epoch: [k*window, (k+1)*window). With an
// event-time column the watermark is the newest event time seen minus the
// allowed lateness, taken per source partition and the lowest of them (a
// consumer reads its partitions at uneven speeds, so one may be seconds of
// event time ahead of another). A partition holds the others back while it
// may still give older rows: while the source says records wait in it (it
// is assigned but not yet read, or read behind its end), whatever the wall
// clock says; once caught up, until it has sent nothing for idle_timeout.
// A source that reads partitions (Kafka) names them with Partitions, and
// until it first does the watermark stays put: a partition that has not
// given its first row yet must not be overtaken. A window is emitted once the
// watermark reaches its end, and a row whose window ends at or before the
// horizon (the furthest point the watermark has reached) is late. With
// arrival time the clock is the watermark and nothing is late.
type aggregator struct {
	window, lateness, idle int64 // milliseconds
	eventTime              bool
	maxGroups              int
	specs                  []aggSpec
	startName, endName     []byte // "window_start": and "window_end": (nil if none)

	windows map[int64]*window
	last    *window // the window of the previous row, to skip the map
	ngroups int
	// horizon: every window ending at or before it has been emitted.
	horizon     int64
	newest      int64 // newest event time seen
	seen        bool  // newest is set
	lastArrival int64
	lastNow     int64
	parts       []*partClock // per source partition
	lastPart    *partClock
	// awaitParts: the source reads partitions but has not named them yet;
	// the watermark stays put.
	awaitParts bool
}

// partClock is the event-time progress of one source partition (one for a
// source without partitions).
type partClock struct {
	topic       string
	partition   int
	newest      int64 // newest event time read from it
	lastArrival int64 // when it last gave a row (or was assigned)
	// behind: the source said records wait in it to be read; it holds the
	// watermark however long it gives nothing.
	behind bool
}

type aggSpec struct {
	fn   string
	col  int    // input column, -1 for count of rows
	typ  string // input column's type
	name []byte // "name": of the output column
}

type window struct {
	start  int64
	groups map[string]*group
	order  []*group // in order of creation, for a stable output
	acks   *Acks
	newest int64 // newest event time folded in
}

type group struct {
	key  string // the "name":value pairs of the key columns
	accs []acc
}

// acc is the running state of one aggregate of one group.
type acc struct {
	n        int64   // values folded (rows for count)
	i        int64   // Int64 sum, or min/max of Int64 and DateTime
	f        float64 // float sum, or min/max of Double and Decimal
	overflow bool    // the Int64 sum overflowed
	t        int64   // event time of raw (first, last)
	raw      []byte  // first or last value
}

func newAggregator(cfg Config, l *layout) *aggregator {
	a := &aggregator{
		window:    cfg.Window.Milliseconds(),
		lateness:  cfg.AllowedLateness.Milliseconds(),
		idle:      cfg.idleTimeout().Milliseconds(),
		eventTime: cfg.TimeColumn != "",
		maxGroups: cfg.MaxGroups,
		startName: quotedName(cfg.WindowStart),
		windows:   make(map[int64]*window),
		horizon:   math.MinInt64,
	}
	if cfg.WindowEnd != "" {
		a.endName = quotedName(cfg.WindowEnd)
	}
	for _, ag := range cfg.Aggregates {
		s := aggSpec{fn: ag.Function, col: -1, name: quotedName(ag.Name)}
		if ag.Column != "" {
			s.col = l.col(ag.Column)
			s.typ = l.types[s.col]
		}
		a.specs = append(a.specs, s)
	}
	return a
}

func (a *aggregator) groups() int { return a.ngroups }

func (a *aggregator) add(r *Reducer, vals [][]byte, ref Ref, now int64, out []Emission) ([]Emission, error) {
	if !a.eventTime {
		now = max(now, a.lastNow) // a clock stepping back must not make rows late
		a.lastNow = now
	}
	t, err := r.eventTime(vals, now)
	if err != nil {
		return out, err
	}
	start := floorDiv(t, a.window) * a.window
	if start+a.window <= a.horizon {
		return out, &RowError{Rule: "late", err: ErrLate, Message: fmt.Sprintf(
			"late: event time %s falls in the window %s..%s, already emitted (watermark %s, allowed_lateness %dms)",
			fmtMillis(t), fmtMillis(start), fmtMillis(start+a.window), fmtMillis(a.horizon), a.lateness)}
	}
	w := a.last
	if w == nil || w.start != start {
		if w = a.windows[start]; w == nil {
			w = &window{start: start, groups: make(map[string]*group), acks: newAcks(), newest: t}
			a.windows[start] = w
		}
		a.last = w
	}
	key := r.key()
	g := w.groups[string(key)]
	if g == nil {
		g = &group{key: string(key), accs: make([]acc, len(a.specs))}
		w.groups[g.key] = g
		w.order = append(w.order, g)
		a.ngroups++
	}
	w.acks.add(ref)
	a.fold(g, vals, t)
	w.newest = max(w.newest, t)

	if a.eventTime {
		a.lastArrival = now
		a.newest, a.seen = max(a.newest, t), true
		pc := a.clock(ref)
		pc.lastArrival = now
		if t > pc.newest {
			pc.newest = t
			out = a.advance(a.watermark(now), out)
		}
	}
	for a.ngroups > a.maxGroups && len(a.windows) > 0 {
		n := len(out)
		out = a.flushOldest(r, out)
		out[n].Early = true
		r.stats.Early++
	}
	return out, nil
}

// fold adds the row's values to the group's aggregates.
func (a *aggregator) fold(g *group, vals [][]byte, t int64) {
	for k := range a.specs {
		s := &a.specs[k]
		c := &g.accs[k]
		if s.col < 0 {
			c.n++
			continue
		}
		v := vals[s.col]
		if isNull(v) {
			continue
		}
		switch s.fn {
		case FuncCount:
			c.n++
		case FuncSum, FuncAvg:
			foldSum(c, s.typ, v)
		case FuncMin, FuncMax:
			foldExtreme(c, s.typ, v, s.fn == FuncMin)
		case FuncFirst:
			if c.n == 0 || t < c.t {
				c.raw, c.t = append(c.raw[:0], v...), t
			}
			c.n++
		case FuncLast:
			if c.n == 0 || t >= c.t {
				c.raw, c.t = append(c.raw[:0], v...), t
			}
			c.n++
		}
	}
}

func foldSum(c *acc, typ string, v []byte) {
	if typ == schema.TypeInt64 {
		x, ok := parseInt(v)
		if !ok {
			return
		}
		s := c.i + x
		if (x > 0 && s < c.i) || (x < 0 && s > c.i) {
			c.overflow = true
		}
		c.i = s
		c.f += float64(x)
		c.n++
		return
	}
	if f, ok := parseFloat(v); ok {
		c.f += f
		c.n++
	}
}

func foldExtreme(c *acc, typ string, v []byte, isMin bool) {
	switch typ {
	case schema.TypeInt64, schema.TypeDateTime:
		var x int64
		var ok bool
		if typ == schema.TypeInt64 {
			x, ok = parseInt(v)
		} else {
			x, ok = parseMillis(v)
		}
		if ok && (c.n == 0 || (isMin && x < c.i) || (!isMin && x > c.i)) {
			c.i = x
		}
		if ok {
			c.n++
		}
	default:
		f, ok := parseFloat(v)
		if ok && (c.n == 0 || (isMin && f < c.f) || (!isMin && f > c.f)) {
			c.f = f
		}
		if ok {
			c.n++
		}
	}
}

// clock returns the partition clock of ref's partition.
func (a *aggregator) clock(ref Ref) *partClock {
	topic, part := "", -1
	if ref.Ordered {
		topic, part = ref.Topic, ref.Partition
	}
	if pc := a.lastPart; pc != nil && pc.partition == part && pc.topic == topic {
		return pc
	}
	pc := a.find(topic, part)
	if pc == nil {
		pc = &partClock{topic: topic, partition: part, newest: math.MinInt64}
		a.parts = append(a.parts, pc)
	}
	a.lastPart = pc
	return pc
}

// find returns the clock of a partition, nil if there is none.
func (a *aggregator) find(topic string, part int) *partClock {
	for _, pc := range a.parts {
		if pc.partition == part && pc.topic == topic {
			return pc
		}
	}
	return nil
}

// watermark is the lowest newest event time of the partitions that are
// behind or gave a row within idle_timeout of now, minus the allowed
// lateness. A partition that gave no row yet (newest MinInt64) holds it at
// MinInt64.
func (a *aggregator) watermark(now int64) int64 {
	if a.awaitParts {
		return math.MinInt64
	}
	wm := int64(math.MaxInt64)
	for _, pc := range a.parts {
		if pc.behind || now-pc.lastArrival < a.idle {
			wm = min(wm, pc.newest)
		}
	}
	if wm == math.MaxInt64 || wm == math.MinInt64 {
		return math.MinInt64
	}
	return wm - a.lateness
}

// anyBehind reports whether a partition still has records to read.
func (a *aggregator) anyBehind() bool {
	for _, pc := range a.parts {
		if pc.behind {
			return true
		}
	}
	return false
}

// partitions takes the source's partitions: a new one holds the watermark
// until it gives a row (when the source does not know whether records wait
// in it, for idle_timeout at most; not at all when it knows it empty); one
// no longer listed (revoked) holds it only until idle.
func (a *aggregator) partitions(parts []Partition, now int64) {
	a.awaitParts = false
	for _, pc := range a.parts {
		pc.behind = false
	}
	for _, p := range parts {
		pc := a.find(p.Topic, p.Partition)
		if pc == nil {
			pc = &partClock{topic: p.Topic, partition: p.Partition, newest: math.MinInt64, lastArrival: now}
			if p.Unread == 0 {
				pc.lastArrival = now - a.idle // known empty: nothing to wait for
			}
			a.parts = append(a.parts, pc)
		}
		pc.behind = p.Unread > 0
	}
}

// advance moves the horizon to wm and emits the windows it closes.
func (a *aggregator) advance(wm int64, out []Emission) []Emission {
	if wm <= a.horizon {
		return out
	}
	a.horizon = wm
	var due []int64
	for start := range a.windows {
		if start+a.window <= wm {
			due = append(due, start)
		}
	}
	slices.Sort(due)
	for _, start := range due {
		out = a.emit(a.windows[start], out)
	}
	return out
}

func (a *aggregator) tick(r *Reducer, now int64, out []Emission) []Emission {
	if !a.eventTime {
		now = max(now, a.lastNow)
		a.lastNow = now
		return a.advance(now, out)
	}
	if a.seen && len(a.windows) > 0 && now-a.lastArrival >= a.idle && !a.anyBehind() && !a.awaitParts {
		// Idle and caught up: take event time to have moved on with the
		// wall clock.
		return a.advance(a.newest-a.lateness+(now-a.lastArrival), out)
	}
	// Partitions gone idle no longer hold the others back.
	return a.advance(a.watermark(now), out)
}

func (a *aggregator) flushOldest(_ *Reducer, out []Emission) []Emission {
	var oldest *window
	for _, w := range a.windows {
		if oldest == nil || w.start < oldest.start {
			oldest = w
		}
	}
	if oldest == nil {
		return out
	}
	return a.emit(oldest, out)
}

func (a *aggregator) flush(_ *Reducer, out []Emission) []Emission {
	starts := make([]int64, 0, len(a.windows))
	for s := range a.windows {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	for _, s := range starts {
		out = a.emit(a.windows[s], out)
	}
	return out
}

// emit encodes the rows of w, removes it and appends its emission.
func (a *aggregator) emit(w *window, out []Emission) []Emission {
	delete(a.windows, w.start)
	if a.last == w {
		a.last = nil
	}
	a.ngroups -= len(w.order)
	var buf []byte
	ends := make([]int, 0, len(w.order))
	for _, g := range w.order {
		buf = a.encode(buf, w, g)
		ends = append(ends, len(buf))
	}
	rows := make([]json.RawMessage, len(ends))
	from := 0
	for i, end := range ends {
		rows[i] = json.RawMessage(buf[from:end:end])
		from = end
	}
	return append(out, Emission{Rows: rows, Acks: w.acks, EventTime: w.newest, Label: label("window", w.start)})
}

// encode appends the row of group g of window w.
func (a *aggregator) encode(b []byte, w *window, g *group) []byte {
	b = append(b, '{')
	if g.key != "" {
		b = append(b, g.key...)
		b = append(b, ',')
	}
	b = append(b, a.startName...)
	b = appendMillis(b, w.start)
	if a.endName != nil {
		b = append(b, ',')
		b = append(b, a.endName...)
		b = appendMillis(b, w.start+a.window)
	}
	for k := range a.specs {
		b = append(b, ',')
		b = append(b, a.specs[k].name...)
		b = a.specs[k].value(b, &g.accs[k])
	}
	return append(b, '}')
}

// value appends the aggregate's result, null when it folded no value.
func (s *aggSpec) value(b []byte, c *acc) []byte {
	if s.fn == FuncCount {
		return strconv.AppendInt(b, c.n, 10)
	}
	if c.n == 0 {
		return append(b, "null"...)
	}
	switch s.fn {
	case FuncSum:
		if s.typ == schema.TypeInt64 {
			if c.overflow {
				return append(b, "null"...)
			}
			return strconv.AppendInt(b, c.i, 10)
		}
		return appendFloat(b, c.f)
	case FuncAvg:
		if s.typ == schema.TypeInt64 && !c.overflow {
			return appendFloat(b, float64(c.i)/float64(c.n))
		}
		return appendFloat(b, c.f/float64(c.n))
	case FuncMin, FuncMax:
		switch s.typ {
		case schema.TypeInt64:
			return strconv.AppendInt(b, c.i, 10)
		case schema.TypeDateTime:
			return appendMillis(b, c.i)
		}
		return appendFloat(b, c.f)
	}
	return append(b, c.raw...) // first, last
}

// appendFloat appends f as a JSON number (null if it is not finite).
func appendFloat(b []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) || f == math.MaxFloat64 || f == -math.MaxFloat64 {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func fmtMillis(ms int64) string {
	if ms == math.MinInt64 {
		return "none"
	}
	return string(appendMillis(nil, ms)[1:25])
}
