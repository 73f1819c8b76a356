// Package infer derives a pushd schema section from sample events: nested
// objects are flattened to dotted paths, types are inferred from the values
// seen, and fields present in every sampled object are marked required.
//
// Rules (also in the README, "Writing a schema from sample events"):
//   - An object's fields become columns named by their path in PascalCase
//     ("device.id" → DeviceId, "metrics.temperature_c" → MetricsTemperatureC).
//   - An array contributes its first element only, as path.0 (the index
//     syntax schema paths read): "status.alarms.0" → StatusAlarms0. Arrays
//     that are always empty give no column.
//   - Types: Int64 when every value is a whole JSON number inside Power BI's
//     Int64 range; Double when numbers include fractions or larger values;
//     Boolean when every value is true or false; DateTime when every value
//     is an RFC 3339 date-time (or date) string; String otherwise. Mixed
//     kinds widen: Int64 with Double gives Double, anything else mixed gives
//     String. Numbers are never read as times (a number named "ts" stays a
//     number: add epoch_unit and type DateTime by hand).
//   - A path that is an object in some events and a value in others keeps
//     only its fields.
//   - required: true when the field has a non-null value in every sampled
//     object.
//
// The result is then checked by mapping every sampled event with the
// inferred schema (schema.New and Map); a column that fails is widened
// (Int64 → Double → String, DateTime or Boolean → String) or made optional
// until every sampled event maps.
package infer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/pushd/pushd/internal/schema"
)

// Options configure Infer.
type Options struct {
	// Sample is how many events (top-level JSON values) to read at most;
	// 0 reads all.
	Sample int
}

// DefaultSample is the sample size of `pushd schema infer` without --sample.
const DefaultSample = 10000

// Column is one inferred column.
type Column struct {
	schema.Column
	// Note explains a choice the reader should check ("only null values
	// seen", "numeric strings: Double also works"); empty when none.
	Note string
}

// Result is what Infer found.
type Result struct {
	// Events is how many top-level JSON values were read; Objects how many
	// objects they held (an array event holds several).
	Events, Objects int
	Columns         []Column
	// Skipped lists paths left out, each with the reason.
	Skipped []string
	// StringOverflow is "truncate" when a sampled string was longer than
	// Power BI's 4,000 characters, else empty (the default, reject).
	StringOverflow string
}

// kinds of values seen at a path.
type stats struct {
	path string // schema path (escaped)
	// key orders the columns as the tree of paths, each level in the
	// order first seen: the parent's key plus the first-seen index.
	key      []int
	present  int // objects with a non-null value here
	lastObj  int // object index that last counted in present (+1)
	nulls    int
	ints     int
	floats   int
	bools    int
	strs     int
	times    int // strings that parse as date-times
	numStrs  int // strings that parse as numbers
	object   bool
	array    bool
	nonEmpty bool // an array with at least one element
	longStr  bool
}

func (s *stats) scalars() int { return s.ints + s.floats + s.bools + s.strs }

type walker struct {
	byPath  map[string]*stats
	order   []*stats
	obj     int // current object index, from 1
	skipped map[string]string
	skipOrd []string
}

func (w *walker) at(path string, parent *stats) *stats {
	s := w.byPath[path]
	if s == nil {
		s = &stats{path: path}
		if parent != nil {
			s.key = append(s.key, parent.key...)
		}
		s.key = append(s.key, len(w.order))
		w.byPath[path] = s
		w.order = append(w.order, s)
	}
	return s
}

func (w *walker) skip(path, why string) {
	if _, ok := w.skipped[path]; !ok {
		w.skipped[path] = why
		w.skipOrd = append(w.skipOrd, path)
	}
}

// Infer reads events from r (NDJSON, or any sequence of JSON values; each
// an object or an array of objects) and infers a schema.
func Infer(r io.Reader, opts Options) (*Result, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	w := &walker{byPath: map[string]*stats{}, skipped: map[string]string{}}
	res := &Result{}
	var raws []json.RawMessage
	for opts.Sample <= 0 || res.Events < opts.Sample {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("reading event %d (near byte %d): %w", res.Events+1, dec.InputOffset(), err)
		}
		res.Events++
		n, err := w.event(raw)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", res.Events, err)
		}
		res.Objects += n
		raws = append(raws, raw)
	}
	if res.Objects == 0 {
		return nil, errors.New("no events read: give NDJSON objects (or arrays of objects) on standard input")
	}
	w.columns(res)
	if len(res.Columns) == 0 {
		return nil, fmt.Errorf("the %d sampled objects have no field with a value", res.Objects)
	}
	if err := res.verify(raws); err != nil {
		return nil, err
	}
	return res, nil
}

// event walks one top-level value and returns how many objects it held.
func (w *walker) event(raw json.RawMessage) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return 0, err
	}
	switch tok {
	case json.Delim('{'):
		w.obj++
		return 1, w.object(dec, "", nil)
	case json.Delim('['):
		n := 0
		for dec.More() {
			t, err := dec.Token()
			if err != nil {
				return n, err
			}
			if t != json.Delim('{') {
				return n, fmt.Errorf("element %d of the array is not an object", n)
			}
			w.obj++
			n++
			if err := w.object(dec, "", nil); err != nil {
				return n, err
			}
		}
		return n, nil
	}
	return 0, errors.New("not a JSON object or an array of objects")
}

// object walks the members of an object whose '{' was read; self is the
// object's own stats (nil at the top).
func (w *walker) object(dec *json.Decoder, prefix string, self *stats) error {
	if self != nil {
		self.object = true
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := kt.(string)
		if key == "" {
			w.skip(prefix+".\"\"", "an empty key cannot be named by a path")
			if err := skipValue(dec); err != nil {
				return err
			}
			continue
		}
		if err := w.value(dec, join(prefix, escape(key)), self); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	return err
}

// value walks one value at path, below parent.
func (w *walker) value(dec *json.Decoder, path string, parent *stats) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	s := w.at(path, parent)
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return w.object(dec, path, s)
		}
		s.array = true
		if dec.More() {
			s.nonEmpty = true
			if err := w.value(dec, path+".0", s); err != nil {
				return err
			}
			for dec.More() {
				if err := skipValue(dec); err != nil {
					return err
				}
			}
		}
		_, err := dec.Token() // ']'
		return err
	case nil:
		s.nulls++
		return nil
	}
	if s.lastObj != w.obj {
		s.lastObj = w.obj
		s.present++
	}
	switch v := tok.(type) {
	case bool:
		s.bools++
	case json.Number:
		if isInt64(string(v)) {
			s.ints++
		} else {
			s.floats++
		}
	case string:
		s.strs++
		if isDateTime(v) {
			s.times++
		}
		if _, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			s.numStrs++
		}
		if utf16Len(v) > schema.MaxStringLength {
			s.longStr = true
		}
	}
	return nil
}

// skipValue consumes one value.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

func join(prefix, seg string) string {
	if prefix == "" {
		return seg
	}
	return prefix + "." + seg
}

// escape writes a key as a schema path segment: '.', '\' and a leading
// '@' are escaped with a backslash.
func escape(key string) string {
	if !strings.ContainsAny(key, `.\@`) {
		return key
	}
	var b strings.Builder
	for _, r := range key {
		if r == '.' || r == '\\' || r == '@' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// isInt64 reports whether a JSON number is whole and inside the range
// Power BI's Int64 columns accept (its minimum and maximum excluded).
func isInt64(s string) bool {
	if strings.ContainsAny(s, ".eE") {
		return false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && n != math.MaxInt64 && n != math.MinInt64
}

// isDateTime reports whether s is an RFC 3339 date-time or a date.
func isDateTime(s string) bool {
	if len(s) < 10 || s[4] != '-' {
		return false
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil && t.Year() >= 1 && t.Year() <= 9999 {
			return true
		}
	}
	return false
}

func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}

// columns turns the stats into columns, in first-seen order.
func (w *walker) columns(res *Result) {
	names := map[string]bool{}
	ordered := slices.Clone(w.order)
	slices.SortStableFunc(ordered, func(a, b *stats) int { return slices.Compare(a.key, b.key) })
	for _, s := range ordered {
		switch {
		case (s.object || s.array) && s.scalars() > 0:
			w.skip(s.path, "an object or array in some events and a value in others: its fields are columns")
			continue
		case s.object:
			continue
		case s.array:
			if !s.nonEmpty {
				w.skip(s.path, "always an empty array")
			}
			continue
		}
		if len(res.Columns) == schema.MaxColumns {
			w.skip(s.path, fmt.Sprintf("Power BI tables hold at most %d columns", schema.MaxColumns))
			continue
		}
		c := Column{Column: schema.Column{Name: uniqueName(columnName(s.path, len(res.Columns)+1), names), From: s.path}}
		c.Type, c.Note = s.typ()
		c.Required = s.present == res.Objects
		if s.longStr {
			res.StringOverflow = schema.OverflowTruncate
		}
		res.Columns = append(res.Columns, c)
	}
	for _, p := range w.skipOrd {
		res.Skipped = append(res.Skipped, p+": "+w.skipped[p])
	}
}

// typ infers the column type from the kinds seen.
func (s *stats) typ() (string, string) {
	n := s.scalars()
	switch {
	case n == 0:
		return schema.TypeString, "only null values seen"
	case s.ints == n:
		return schema.TypeInt64, ""
	case s.ints+s.floats == n:
		return schema.TypeDouble, ""
	case s.bools == n:
		return schema.TypeBoolean, ""
	case s.strs == n && s.times == n:
		return schema.TypeDateTime, ""
	case s.strs == n && s.numStrs == n:
		return schema.TypeString, "numeric strings: Double also works"
	case s.strs < n:
		return schema.TypeString, "mixed kinds of values: read as text"
	}
	return schema.TypeString, ""
}

// columnName makes a Power BI column name from a path: each segment's
// words (runs of letters and digits) capitalised and joined.
func columnName(path string, index int) string {
	var b strings.Builder
	upper := true
	for _, r := range path {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if upper {
				r = unicode.ToUpper(r)
				upper = false
			}
			b.WriteRune(r)
			continue
		}
		upper = true
	}
	name := b.String()
	if name == "" {
		return fmt.Sprintf("Column%d", index)
	}
	if n := []rune(name); len(n) > 100 {
		name = string(n[:100])
	}
	return name
}

// uniqueName returns name, or name2, name3… when one differing only in case
// is taken (Power BI column names ignore case).
func uniqueName(name string, taken map[string]bool) string {
	candidate := name
	for i := 2; taken[strings.ToLower(candidate)]; i++ {
		candidate = name + strconv.Itoa(i)
	}
	taken[strings.ToLower(candidate)] = true
	return candidate
}

// Schema returns the inferred schema section.
func (r *Result) Schema() schema.Config {
	c := schema.DefaultConfig()
	if r.StringOverflow != "" {
		c.StringOverflow = r.StringOverflow
	}
	for _, col := range r.Columns {
		c.Columns = append(c.Columns, col.Column)
	}
	return c
}

// verify maps every sampled event with the inferred schema and widens or
// relaxes the columns that fail until all map.
func (r *Result) verify(raws []json.RawMessage) error {
	for round := 0; round < 4*len(r.Columns)+4; round++ {
		m, err := schema.New(r.Schema())
		if err != nil {
			return fmt.Errorf("inferred schema is invalid (a bug): %w", err)
		}
		changed := false
		var (
			rows       []json.RawMessage
			unresolved error
		)
		for i, raw := range raws {
			rows, err = m.Map(raw, nil, rows[:0])
			if err == nil {
				continue
			}
			var me *schema.MappingError
			if errors.As(err, &me) {
				for _, f := range me.Failures {
					if r.relax(f) {
						changed = true
						break
					}
				}
			}
			if changed {
				break
			}
			if unresolved == nil {
				unresolved = fmt.Errorf("event %d does not map: %w", i+1, err)
			}
		}
		if !changed {
			return unresolved
		}
		if len(r.Columns) == 0 {
			return errors.New("no column maps every sampled event")
		}
	}
	return errors.New("could not find a schema that maps every sampled event")
}

// relax changes the column a failure names so that it cannot fail the same
// way again; it reports whether it changed anything.
func (r *Result) relax(f schema.Failure) bool {
	for i := range r.Columns {
		c := &r.Columns[i]
		if c.Name != f.Column {
			continue
		}
		switch f.Rule {
		case schema.RuleRequired:
			if c.Required {
				c.Required = false
				return true
			}
		case schema.RuleLength:
			if r.StringOverflow == "" {
				r.StringOverflow = schema.OverflowTruncate
				return true
			}
		case schema.RuleType, schema.RuleRange:
			switch c.Type {
			case schema.TypeInt64:
				c.Type, c.Note = schema.TypeDouble, "widened: some values do not fit Int64"
				return true
			case schema.TypeDouble, schema.TypeDateTime, schema.TypeBoolean:
				c.Note = "widened: some values do not fit " + c.Type
				c.Type = schema.TypeString
				return true
			}
		}
		// Nothing left to relax: leave the column out.
		r.Skipped = append(r.Skipped, fmt.Sprintf("%s: left out: %s", c.From, f.Message))
		r.Columns = append(r.Columns[:i], r.Columns[i+1:]...)
		return true
	}
	return false
}
