package schema

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// Rules name why an object failed; they are short and stable, for dead
// letters and metric labels.
const (
	// RuleRequired: a required column has no value and no default.
	RuleRequired = "required"
	// RuleType: the value cannot be read as the column type.
	RuleType = "type"
	// RuleRange: the value is outside what the column type holds in Power BI.
	RuleRange = "range"
	// RuleLength: a string is longer than 4,000 characters (string_overflow: reject).
	RuleLength = "length"
	// RuleSyntax: the event is not valid JSON.
	RuleSyntax = "syntax"
	// RuleShape: the event is not an object or an array of objects.
	RuleShape = "shape"
)

// Failure is one object of an event that did not map (or, for the rules
// syntax and shape, the event as a whole).
type Failure struct {
	// Index is the object's position in an array event; 0 for a single object.
	Index int
	// Column and Path name the failing column and where it reads from; empty
	// for syntax and shape failures.
	Column string
	Path   string
	// Rule is one of the Rule constants.
	Rule string
	// Message says what was wrong, for people.
	Message string
}

// String describes the failure, naming the field and the rule.
func (f Failure) String() string {
	var b strings.Builder
	if f.Rule == RuleSyntax {
		b.WriteString("event")
	} else {
		fmt.Fprintf(&b, "object %d", f.Index)
	}
	if f.Column != "" {
		fmt.Fprintf(&b, ": column %q", f.Column)
		if f.Path != f.Column {
			fmt.Fprintf(&b, " (from %q)", f.Path)
		}
	}
	fmt.Fprintf(&b, ": %s: %s", f.Rule, f.Message)
	return b.String()
}

// MappingError is returned by Map when an event, or some objects in it,
// could not be mapped. There is one Failure per failed object (its first
// failing column), in order; from Preview, one per failing column of each
// failed object.
type MappingError struct {
	// Objects is how many objects the event held (0 when it is not JSON or
	// not an object or an array of objects).
	Objects  int
	Failures []Failure
}

// Error names the first failure's field and rule, and how many more failed.
func (e *MappingError) Error() string {
	if len(e.Failures) == 0 {
		return "mapping event: no failures"
	}
	msg := "mapping event: " + e.Failures[0].String()
	if n := len(e.Failures) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more failed objects)", n)
	}
	return msg
}

// Mapper turns events into rows of one table. It is compiled once by New and
// safe for concurrent use.
type Mapper struct {
	cols    []column
	root    *node
	hasMeta bool
	pool    sync.Pool // *state
}

// state is the scratch space of one Map call.
type state struct {
	scan     scanner
	sc       scratch
	metaVals []val
	metaBuf  []byte
	buf      []byte // rows being written
	ends     []int  // end offset of each row in buf
	// every makes object record every failing column of an object, not
	// only the first (Preview).
	every bool
}

// New checks c and compiles it into a Mapper.
func New(c Config) (*Mapper, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid schema: %w", err)
	}
	unit, _ := epochUnit(c.EpochUnit)
	truncate, _ := stringOverflow(c.StringOverflow)
	m := &Mapper{root: &node{}}
	for i, cc := range c.Columns {
		canonical, _ := CanonicalType(cc.Type)
		col := column{
			name:        cc.Name,
			nameJSON:    append(appendQuoted(nil, []byte(cc.Name)), ':'),
			typ:         typeCode(canonical),
			path:        cc.From,
			required:    cc.Required,
			epochMillis: unit == EpochMilliseconds,
			truncate:    truncate,
		}
		var segs []string
		if cc.From == "" {
			col.path = cc.Name
			segs = []string{cc.Name} // the name taken literally, dots and all
		} else {
			p, err := parsePath(cc.From)
			if err != nil { // unreachable after Validate
				return nil, fmt.Errorf("columns[%d].from: %w", i, err)
			}
			if p.meta != nil {
				col.isMeta, col.meta = true, p.meta.name
				m.hasMeta = true
			}
			segs = p.segments
		}
		if cc.Default != nil {
			def, err := col.encodeDefault(cc.Default)
			if err != nil { // unreachable after Validate
				return nil, fmt.Errorf("columns[%d].default: %w", i, err)
			}
			col.def = def
		}
		if !col.isMeta {
			m.root.add(segs, i)
		}
		m.cols = append(m.cols, col)
	}
	n := len(m.cols)
	m.pool.New = func() any {
		return &state{scan: scanner{vals: make([]val, n)}, metaVals: make([]val, n)}
	}
	return m, nil
}

// maxPooledBuf keeps a rare huge event from pinning memory in the pool.
const maxPooledBuf = 1 << 20

// Map appends to rows one encoded JSON object per object in event (a JSON
// object gives one row, an array of objects one row each, an empty array
// none) and returns rows. Each row holds exactly the configured columns, in
// order; a column with no value, no default and not required is written as
// null.
//
// The rows of one call share one newly allocated buffer and nothing else:
// they stay valid after event is reused and across later Map calls.
//
// If some objects fail, the rows of the others are still returned and err is
// a *MappingError listing the failed objects. If the event is not valid JSON
// (RuleSyntax) or not an object or an array of objects (RuleShape), no rows
// are returned and err is a *MappingError with a single failure.
func (m *Mapper) Map(event []byte, meta Meta, rows []json.RawMessage) ([]json.RawMessage, error) {
	st := m.pool.Get().(*state)
	defer m.release(st)
	return m.mapEvent(st, event, meta, rows, nil)
}

// MapInto is Map writing the rows into *arena, which it reuses (growing it
// when needed), instead of a new allocation per event: the rows are valid
// only until the next use of the same arena. It is for a stage that reads
// each row at once and keeps nothing of it (an aggregation).
func (m *Mapper) MapInto(event []byte, meta Meta, rows []json.RawMessage, arena *[]byte) ([]json.RawMessage, error) {
	st := m.pool.Get().(*state)
	defer m.release(st)
	return m.mapEvent(st, event, meta, rows, arena)
}

// Preview is Map for people: a failed object's Failures name every column
// that broke a rule, not only the first, so one look shows everything to
// fix. It is slower than Map (`pushd schema preview`, not the pipeline).
func (m *Mapper) Preview(event []byte, meta Meta) ([]json.RawMessage, error) {
	st := m.pool.Get().(*state)
	defer m.release(st)
	st.every = true
	return m.mapEvent(st, event, meta, nil, nil)
}

// mapEvent maps event into rows: into *arena when it is given, else into
// a new allocation.
func (m *Mapper) mapEvent(st *state, event []byte, meta Meta, rows []json.RawMessage, arena *[]byte) ([]json.RawMessage, error) {
	s := &st.scan
	s.data, s.pos, s.depth = event, 0, 0
	st.buf, st.ends = st.buf[:0], st.ends[:0]
	if m.hasMeta {
		m.loadMeta(st, meta)
	}

	var fails []Failure
	objects := 0
	shapeIndex, shapeKind := -1, ""
	syntax := func(err error, index int) ([]json.RawMessage, error) {
		return rows, &MappingError{Failures: []Failure{{Index: index, Rule: RuleSyntax, Message: err.Error()}}}
	}
	s.ws()
	if s.pos >= len(event) {
		return syntax(s.fail("empty event"), 0)
	}
	switch event[s.pos] {
	case '{':
		objects = 1
		if err := m.object(st, 0, &fails); err != nil {
			return syntax(err, 0)
		}
	case '[':
		s.pos++
		s.depth++
		s.ws()
		if s.pos < len(event) && event[s.pos] == ']' {
			s.pos++
			break
		}
		for i := 0; ; i++ {
			if s.pos < len(event) && event[s.pos] == '{' {
				if err := m.object(st, i, &fails); err != nil {
					return syntax(err, i)
				}
			} else {
				if shapeIndex < 0 && s.pos < len(event) {
					shapeIndex, shapeKind = i, kindAt(event[s.pos])
				}
				if err := s.value(nil); err != nil {
					return syntax(err, i)
				}
			}
			objects++
			s.ws()
			if s.pos >= len(event) {
				return syntax(s.unexpected(), i)
			}
			if event[s.pos] == ']' {
				s.pos++
				break
			}
			if event[s.pos] != ',' {
				return syntax(s.unexpected(), i)
			}
			s.pos++
			s.ws()
		}
	default:
		shapeIndex, shapeKind = 0, kindAt(event[s.pos])
		if err := s.value(nil); err != nil {
			return syntax(err, 0)
		}
	}
	s.ws()
	if s.pos != len(event) {
		return syntax(s.fail("data after the top-level value"), 0)
	}
	if shapeIndex >= 0 {
		msg := "event is " + shapeKind + ", want an object or an array of objects"
		if firstNonSpace(event) == '[' {
			msg = "array element is " + shapeKind + ", want an object"
		}
		return rows, &MappingError{Failures: []Failure{{Index: shapeIndex, Rule: RuleShape, Message: msg}}}
	}

	if len(st.ends) > 0 {
		var out []byte
		if arena != nil {
			out = append((*arena)[:0], st.buf...)
			*arena = out
		} else {
			out = make([]byte, len(st.buf))
			copy(out, st.buf)
		}
		start := 0
		for _, end := range st.ends {
			rows = append(rows, json.RawMessage(out[start:end:end]))
			start = end
		}
	}
	if len(fails) > 0 {
		return rows, &MappingError{Objects: objects, Failures: fails}
	}
	return rows, nil
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return c
		}
	}
	return 0
}

func kindAt(c byte) string {
	switch c {
	case '"':
		return "a string"
	case '[':
		return "an array"
	case '{':
		return "an object"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// object maps the object at the scanner's position to a row in st.buf, or
// records why it failed.
func (m *Mapper) object(st *state, index int, fails *[]Failure) error {
	s := &st.scan
	clear(s.vals)
	if err := s.value(m.root); err != nil {
		return err
	}
	buf := st.buf
	start := len(buf)
	failed := false
	buf = append(buf, '{')
	for i := range m.cols {
		c := &m.cols[i]
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, c.nameJSON...)
		v := s.vals[i]
		if c.isMeta {
			v = st.metaVals[i]
		}
		var f failure
		buf, f = c.write(buf, v, &st.sc)
		if f.rule != "" {
			*fails = append(*fails, Failure{Index: index, Column: c.name, Path: c.path, Rule: f.rule, Message: f.msg})
			failed = true
			if !st.every {
				break
			}
		}
	}
	if failed {
		st.buf = buf[:start]
		return nil
	}
	buf = append(buf, '}')
	st.buf = buf
	st.ends = append(st.ends, len(buf))
	return nil
}

// loadMeta reads the metadata columns once per event.
func (m *Mapper) loadMeta(st *state, meta Meta) {
	st.metaBuf = st.metaBuf[:0]
	for i := range m.cols {
		c := &m.cols[i]
		if !c.isMeta {
			continue
		}
		st.metaVals[i] = val{}
		if meta == nil {
			continue
		}
		x, ok := meta.MetaValue(c.meta)
		if !ok {
			continue
		}
		st.metaVals[i], st.metaBuf = toVal(x, st.metaBuf)
	}
}

func (m *Mapper) release(st *state) {
	st.every = false
	clear(st.scan.vals)
	clear(st.metaVals)
	st.scan.data = nil
	if cap(st.buf) > maxPooledBuf {
		st.buf = nil
	}
	if cap(st.sc.str) > maxPooledBuf {
		st.sc.str = nil
	}
	if cap(st.metaBuf) > maxPooledBuf {
		st.metaBuf = nil
	}
	m.pool.Put(st)
}
