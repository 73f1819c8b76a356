package reduce

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pushd/pushd/internal/schema"
)

// Modes of Config.Mode.
const (
	// ModeNone (the empty string) passes rows through unreduced.
	ModeNone = ""
	// ModeAggregate folds the rows of each tumbling window and key into one.
	ModeAggregate = "aggregate"
	// ModeLatest keeps the newest row per key and emits every interval.
	ModeLatest = "latest"
	// ModeSample keeps one row in N, per key or overall.
	ModeSample = "sample"
)

// Values of Config.When.
const (
	// WhenAlways applies the reduction to every row (the default).
	WhenAlways = "always"
	// WhenOverloaded applies it only while the pipeline cannot keep up.
	WhenOverloaded = "overloaded"
)

// Aggregate functions.
const (
	FuncCount = "count"
	FuncSum   = "sum"
	FuncAvg   = "avg"
	FuncMin   = "min"
	FuncMax   = "max"
	FuncFirst = "first"
	FuncLast  = "last"
)

// Defaults.
const (
	DefaultMaxGroups      = 100_000
	DefaultMaxLag         = time.Minute
	DefaultLatestInterval = 10 * time.Second
	DefaultSampleInterval = time.Second
	DefaultIdleTimeout    = 10 * time.Second
	DefaultWindowStart    = "window_start"
)

// Config is a pipeline's reduce section. The zero Mode turns it off.
type Config struct {
	// Mode is aggregate, latest or sample; empty (the default) reduces nothing.
	Mode string `yaml:"mode"`
	// When is always (default) or overloaded: reduce only while the backlog
	// would take longer than MaxLag to send at the dataset's quota
	// (latest and sample only, whose rows keep the table's columns).
	When string `yaml:"when"`
	// MaxLag is the backlog, in time to send at the quota, above which an
	// overloaded pipeline reduces (default 1m; with when: overloaded).
	MaxLag time.Duration `yaml:"max_lag"`
	// MaxGroups bounds the groups held open (windows × keys for aggregate,
	// keys for latest and sample; default 100,000). Reaching it emits the
	// oldest window (or the current interval) early.
	MaxGroups int `yaml:"max_groups"`
	// TimeColumn names a DateTime column of the schema holding the event
	// time; empty means the time the event was read (arrival time).
	TimeColumn string `yaml:"time_column"`

	// Window is the length of the tumbling windows (aggregate).
	Window time.Duration `yaml:"window"`
	// AllowedLateness is how far behind the newest event time an event may
	// be and still join its window (aggregate with time_column; default 0).
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
	// IdleTimeout: a partition read to its end that gives no event for this
	// long no longer holds the watermark back, and when none does, event
	// time is taken to move on with the wall clock, so the last windows are
	// emitted (aggregate with time_column; default 10s). A partition with
	// records not yet read holds the watermark however long it takes.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// GroupBy lists the columns whose values make the key of a group
	// (aggregate; empty: one group per window).
	GroupBy []string `yaml:"group_by"`
	// WindowStart names the output column holding the window's start
	// (aggregate; default window_start).
	WindowStart string `yaml:"window_start"`
	// WindowEnd, when set, names an output column holding the window's end.
	WindowEnd string `yaml:"window_end"`
	// Aggregates are the output columns computed over each group.
	Aggregates []Aggregate `yaml:"aggregates"`

	// Key lists the columns that identify a key (latest: required; sample:
	// optional, empty samples overall).
	Key []string `yaml:"key"`
	// Interval is how often latest emits its rows (default 10s) and how
	// long sample collects its rows before emitting them (default 1s).
	Interval time.Duration `yaml:"interval"`
	// OneIn keeps one row in OneIn (sample; at least 2).
	OneIn int `yaml:"one_in"`
}

// Aggregate is one output column of an aggregation.
type Aggregate struct {
	// Name of the output column.
	Name string `yaml:"name"`
	// Function is count, sum, avg, min, max, first or last.
	Function string `yaml:"function"`
	// Column is the schema column it reads (optional for count, which then
	// counts rows; with a column it counts non-null values).
	Column string `yaml:"column"`
}

// DefaultConfig returns the defaults: no reduction, when always, max_lag 1m,
// max_groups 100,000, window_start named window_start.
func DefaultConfig() Config {
	return Config{When: WhenAlways, MaxLag: DefaultMaxLag, MaxGroups: DefaultMaxGroups, WindowStart: DefaultWindowStart}
}

// Enabled reports whether the section asks for a reduction.
func (c Config) Enabled() bool { return c.Mode != ModeNone }

// UsesEventTime reports whether rows are ordered by an event-time column
// rather than by arrival.
func (c Config) UsesEventTime() bool { return c.TimeColumn != "" }

// interval is Interval or the mode's default.
func (c Config) interval() time.Duration {
	switch {
	case c.Interval > 0:
		return c.Interval
	case c.Mode == ModeSample:
		return DefaultSampleInterval
	}
	return DefaultLatestInterval
}

func (c Config) idleTimeout() time.Duration {
	if c.IdleTimeout > 0 {
		return c.IdleTimeout
	}
	return DefaultIdleTimeout
}

// problems gathers the messages of Validate, each starting with its key.
type problems []error

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, errors.New(path+": "+fmt.Sprintf(format, args...)))
}

// Validate reports every problem at once, each message starting with its
// key relative to the reduce section ("aggregates[1].column: ..."). cols are
// the schema's columns, which the section refers to by name.
func (c Config) Validate(cols []schema.Column) error {
	var p problems
	types := columnTypes(cols)
	switch c.Mode {
	case ModeNone:
		return nil
	case ModeAggregate:
		c.validateAggregate(&p, types)
	case ModeLatest:
		c.validateLatest(&p, types)
	case ModeSample:
		c.validateSample(&p, types)
	default:
		p.add("mode", "unknown mode %q (want aggregate, latest or sample)", c.Mode)
		return errors.Join(p...)
	}
	switch c.When {
	case WhenAlways, "":
	case WhenOverloaded:
		if c.Mode == ModeAggregate {
			p.add("when", "overloaded is only for modes latest and sample: aggregate rows have other columns than the unreduced rows, so the table cannot take both")
		}
		if c.MaxLag <= 0 {
			p.add("max_lag", "must be a positive duration, got %s", c.MaxLag)
		}
	default:
		p.add("when", "must be always or overloaded, got %q", c.When)
	}
	if c.MaxGroups < 1 {
		p.add("max_groups", "must be at least 1, got %d", c.MaxGroups)
	}
	if c.TimeColumn != "" {
		switch typ, ok := types[strings.ToLower(c.TimeColumn)]; {
		case !ok:
			p.add("time_column", "%q is not a column of the schema", c.TimeColumn)
		case typ != schema.TypeDateTime:
			p.add("time_column", "%q is %s; the event time must be a DateTime column", c.TimeColumn, typ)
		}
	}
	if c.Interval < 0 {
		p.add("interval", "must be a positive duration, got %s", c.Interval)
	}
	return errors.Join(p...)
}

func (c Config) validateAggregate(p *problems, types map[string]string) {
	switch {
	case c.Window <= 0:
		p.add("window", "required for mode aggregate: a positive duration such as 10s, got %s", c.Window)
	case c.Window%time.Millisecond != 0:
		p.add("window", "must be a whole number of milliseconds, got %s", c.Window)
	}
	if c.AllowedLateness < 0 {
		p.add("allowed_lateness", "must not be negative, got %s", c.AllowedLateness)
	}
	if c.IdleTimeout < 0 {
		p.add("idle_timeout", "must not be negative, got %s", c.IdleTimeout)
	}
	if c.TimeColumn == "" && c.AllowedLateness > 0 {
		p.add("allowed_lateness", "needs time_column: windows on arrival time have no late events")
	}
	checkColumns(p, "group_by", c.GroupBy, types)
	if len(c.Key) > 0 {
		p.add("key", "is for modes latest and sample; aggregate groups by group_by")
	}
	if c.OneIn != 0 {
		p.add("one_in", "is for mode sample only")
	}
	out := map[string]string{}
	claim := func(path, name string) {
		if prev, dup := out[strings.ToLower(name)]; dup {
			p.add(path, "output column %q is already %s", name, prev)
			return
		}
		out[strings.ToLower(name)] = path
	}
	for i, g := range c.GroupBy {
		claim(fmt.Sprintf("group_by[%d]", i), g)
	}
	if c.WindowStart == "" {
		p.add("window_start", "must name the output column of the window's start")
	} else {
		claim("window_start", c.WindowStart)
	}
	if c.WindowEnd != "" {
		claim("window_end", c.WindowEnd)
	}
	if len(c.Aggregates) == 0 {
		p.add("aggregates", "at least one is required for mode aggregate (e.g. {name: events, function: count})")
	}
	if n := len(c.GroupBy) + 2 + len(c.Aggregates); n > schema.MaxColumns {
		p.add("aggregates", "the output table would have %d columns; Power BI allows %d", n, schema.MaxColumns)
	}
	for i, a := range c.Aggregates {
		at := fmt.Sprintf("aggregates[%d]", i)
		if a.Name == "" {
			p.add(at+".name", "required: the output column's name")
		} else {
			claim(at+".name", a.Name)
		}
		validateAggregateFunc(p, at, a, types)
	}
}

func validateAggregateFunc(p *problems, at string, a Aggregate, types map[string]string) {
	typ, known := types[strings.ToLower(a.Column)]
	if a.Column != "" && !known {
		p.add(at+".column", "%q is not a column of the schema", a.Column)
	}
	switch a.Function {
	case FuncCount:
	case FuncSum, FuncAvg:
		if a.Column == "" {
			p.add(at+".column", "required for %s", a.Function)
		} else if known && !isNumeric(typ) {
			p.add(at+".column", "%q is %s; %s needs an Int64, Double or Decimal column", a.Column, typ, a.Function)
		}
	case FuncMin, FuncMax:
		if a.Column == "" {
			p.add(at+".column", "required for %s", a.Function)
		} else if known && !isNumeric(typ) && typ != schema.TypeDateTime {
			p.add(at+".column", "%q is %s; %s needs an Int64, Double, Decimal or DateTime column", a.Column, typ, a.Function)
		}
	case FuncFirst, FuncLast:
		if a.Column == "" {
			p.add(at+".column", "required for %s", a.Function)
		}
	case "":
		p.add(at+".function", "required: count, sum, avg, min, max, first or last")
	default:
		p.add(at+".function", "unknown function %q (want count, sum, avg, min, max, first or last)", a.Function)
	}
}

func (c Config) validateLatest(p *problems, types map[string]string) {
	if len(c.Key) == 0 {
		p.add("key", "required for mode latest: the columns that identify a key")
	}
	checkColumns(p, "key", c.Key, types)
	c.notForAggregate(p)
	if c.OneIn != 0 {
		p.add("one_in", "is for mode sample only")
	}
}

func (c Config) validateSample(p *problems, types map[string]string) {
	if c.OneIn < 2 {
		p.add("one_in", "required for mode sample: keep one row in one_in, at least 2, got %d", c.OneIn)
	}
	checkColumns(p, "key", c.Key, types)
	c.notForAggregate(p)
}

// notForAggregate reports the aggregate-only keys set in another mode.
func (c Config) notForAggregate(p *problems) {
	if c.Window != 0 {
		p.add("window", "is for mode aggregate only")
	}
	if len(c.GroupBy) > 0 {
		p.add("group_by", "is for mode aggregate only (latest and sample use key)")
	}
	if len(c.Aggregates) > 0 {
		p.add("aggregates", "is for mode aggregate only")
	}
	if c.WindowEnd != "" {
		p.add("window_end", "is for mode aggregate only")
	}
	if c.AllowedLateness != 0 {
		p.add("allowed_lateness", "is for mode aggregate only")
	}
}

func checkColumns(p *problems, key string, names []string, types map[string]string) {
	seen := map[string]bool{}
	for i, n := range names {
		l := strings.ToLower(n)
		switch _, ok := types[l]; {
		case !ok:
			p.add(fmt.Sprintf("%s[%d]", key, i), "%q is not a column of the schema", n)
		case seen[l]:
			p.add(fmt.Sprintf("%s[%d]", key, i), "%q is listed twice", n)
		}
		seen[l] = true
	}
}

// columnTypes maps the lower-cased column names of the schema to their
// canonical types (unknown types map to "").
func columnTypes(cols []schema.Column) map[string]string {
	m := make(map[string]string, len(cols))
	for _, c := range cols {
		t, _ := schema.CanonicalType(c.Type)
		m[strings.ToLower(c.Name)] = t
	}
	return m
}

func isNumeric(t string) bool {
	return t == schema.TypeInt64 || t == schema.TypeDouble || t == schema.TypeDecimal
}

// OutputColumns returns the columns of the rows the reduction emits, which
// the target table must have: the schema's own for latest and sample; for
// aggregate the group_by columns, the window's start (and end) and the
// aggregates. Call it on a valid config.
func (c Config) OutputColumns(cols []schema.Column) []schema.Column {
	if c.Mode != ModeAggregate {
		return cols
	}
	byName := map[string]schema.Column{}
	for _, col := range cols {
		col.Type, _ = schema.CanonicalType(col.Type)
		byName[strings.ToLower(col.Name)] = col
	}
	var out []schema.Column
	for _, g := range c.GroupBy {
		col := byName[strings.ToLower(g)]
		out = append(out, schema.Column{Name: col.Name, Type: col.Type})
	}
	out = append(out, schema.Column{Name: c.WindowStart, Type: schema.TypeDateTime})
	if c.WindowEnd != "" {
		out = append(out, schema.Column{Name: c.WindowEnd, Type: schema.TypeDateTime})
	}
	for _, a := range c.Aggregates {
		out = append(out, schema.Column{Name: a.Name, Type: outputType(a.Function, byName[strings.ToLower(a.Column)].Type)})
	}
	return out
}

// outputType is the type of an aggregate's column given its input's type.
func outputType(fn, in string) string {
	switch fn {
	case FuncCount:
		return schema.TypeInt64
	case FuncAvg:
		return schema.TypeDouble
	case FuncSum, FuncMin, FuncMax:
		if in == schema.TypeInt64 || in == schema.TypeDateTime {
			return in
		}
		return schema.TypeDouble
	}
	return in // first, last
}

// MaxHold is about the longest the reduction holds an event before its row
// is emitted: the window plus the allowed lateness and the idle timeout
// (aggregate on event time), the window (on arrival time), or the interval
// (latest, sample). Call it on a valid, enabled config.
func (c Config) MaxHold() time.Duration {
	switch {
	case c.Mode != ModeAggregate:
		return c.interval()
	case c.TimeColumn == "":
		return c.Window
	}
	return c.Window + c.AllowedLateness + c.idleTimeout()
}
