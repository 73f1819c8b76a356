package schema_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/schema/schematest"
)

// This file holds a slow, obvious reference mapper built on encoding/json,
// math/big and time.Parse, and checks the fast Mapper against it.

var rfc3339Shape = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?)?$`)

var numericString = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)

// errSkip marks inputs the reference will not evaluate (huge exponents that
// would make math/big slow); the cross-check ignores them.
var errSkip = errors.New("skip")

type refFailure struct {
	column, rule string
}

type refResult struct {
	rule    string           // syntax or shape for the whole event; "" otherwise
	rows    []map[string]any // successful rows, in order
	failed  map[int]refFailure
	objects int
}

type refColumn struct {
	schema.Column
	typ      string
	segments []string
}

type refMapper struct {
	cols        []refColumn
	epochMillis bool
	truncate    bool
}

func newRef(t testing.TB, c schema.Config) *refMapper {
	r := &refMapper{epochMillis: c.EpochUnit == "milliseconds", truncate: c.StringOverflow == "truncate"}
	for _, col := range c.Columns {
		typ, ok := schema.CanonicalType(col.Type)
		if !ok {
			t.Fatalf("reference: bad type %q", col.Type)
		}
		from := col.From
		var segs []string
		if from == "" {
			segs = []string{col.Name}
		} else {
			// Only the escapes the tests use.
			from = strings.ReplaceAll(from, `\.`, "\x00")
			for _, s := range strings.Split(from, ".") {
				segs = append(segs, strings.ReplaceAll(s, "\x00", "."))
			}
		}
		r.cols = append(r.cols, refColumn{Column: col, typ: typ, segments: segs})
	}
	return r
}

func (r *refMapper) mapEvent(event []byte) (refResult, error) {
	dec := json.NewDecoder(bytes.NewReader(event))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return refResult{rule: schema.RuleSyntax}, nil
	}
	if _, err := dec.Token(); err != io.EOF {
		return refResult{rule: schema.RuleSyntax}, nil
	}
	var objs []map[string]any
	switch x := v.(type) {
	case map[string]any:
		objs = []map[string]any{x}
	case []any:
		for _, e := range x {
			o, ok := e.(map[string]any)
			if !ok {
				return refResult{rule: schema.RuleShape}, nil
			}
			objs = append(objs, o)
		}
	default:
		return refResult{rule: schema.RuleShape}, nil
	}
	res := refResult{failed: map[int]refFailure{}, objects: len(objs)}
	for i, o := range objs {
		row := map[string]any{}
		failed := false
		for _, c := range r.cols {
			val, found := walk(o, c.segments)
			out, rule, err := r.column(c, val, found)
			if err != nil {
				return refResult{}, err
			}
			if rule != "" {
				res.failed[i] = refFailure{column: c.Name, rule: rule}
				failed = true
				break
			}
			row[c.Name] = out
		}
		if !failed {
			res.rows = append(res.rows, row)
		}
	}
	return res, nil
}

func walk(v any, segs []string) (any, bool) {
	for _, s := range segs {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[s]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 || strconv.Itoa(i) != s || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func (r *refMapper) column(c refColumn, v any, found bool) (any, string, error) {
	if s, ok := v.(string); !found || v == nil || (ok && s == "" && c.typ != schema.TypeString) {
		switch {
		case c.Default != nil:
			return r.coerce(c, c.Default)
		case c.Required:
			return nil, schema.RuleRequired, nil
		}
		return nil, "", nil
	}
	return r.coerce(c, v)
}

// ratOf parses a numeric literal exactly.
func ratOf(s string) (*big.Rat, error) {
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		if err != nil || e > 5000 || e < -5000 {
			return nil, errSkip
		}
	}
	t := strings.TrimPrefix(s, "+")
	neg := strings.HasPrefix(t, "-")
	t = strings.TrimPrefix(t, "-")
	if strings.HasPrefix(t, ".") {
		t = "0" + t
	}
	t = strings.Replace(t, ".e", ".0e", 1)
	t = strings.Replace(t, ".E", ".0E", 1)
	t = strings.TrimSuffix(t, ".")
	q, ok := new(big.Rat).SetString(t)
	if !ok {
		return nil, fmt.Errorf("reference cannot parse %q", s)
	}
	if neg {
		q.Neg(q)
	}
	return q, nil
}

// numText returns the numeric literal of a JSON number or numeric string.
func numText(v any) (string, bool) {
	switch x := v.(type) {
	case json.Number:
		return string(x), true
	case string:
		s := strings.Trim(x, " \t\r\n")
		return s, numericString.MatchString(s)
	case int:
		return strconv.Itoa(x), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	}
	return "", false
}

var (
	maxInt = new(big.Rat).SetInt64(math.MaxInt64 - 1)
	minInt = new(big.Rat).SetInt64(-math.MaxInt64)
)

func (r *refMapper) coerce(c refColumn, v any) (any, string, error) {
	switch c.typ {
	case schema.TypeString:
		switch x := v.(type) {
		case string:
			u := utf16.Encode([]rune(x))
			if len(u) > schema.MaxStringLength {
				if !r.truncate {
					return nil, schema.RuleLength, nil
				}
				u = u[:schema.MaxStringLength]
				if last := u[len(u)-1]; last >= 0xD800 && last < 0xDC00 { // a pair's first half
					u = u[:len(u)-1]
				}
				return string(utf16.Decode(u)), "", nil
			}
			return x, "", nil
		case json.Number:
			return string(x), "", nil
		case bool:
			return strconv.FormatBool(x), "", nil
		}
		return nil, schema.RuleType, nil
	case schema.TypeBoolean:
		switch x := v.(type) {
		case bool:
			return x, "", nil
		case json.Number:
			if x == "0" || x == "1" {
				return x == "1", "", nil
			}
		case string:
			s := strings.Trim(x, " \t\r\n")
			switch {
			case strings.EqualFold(s, "true"), s == "1":
				return true, "", nil
			case strings.EqualFold(s, "false"), s == "0":
				return false, "", nil
			}
		}
		return nil, schema.RuleType, nil
	case schema.TypeDateTime:
		if s, ok := v.(string); ok && !numericString.MatchString(strings.Trim(s, " \t\r\n")) {
			return refDate(strings.Trim(s, " \t\r\n"))
		}
		text, ok := numText(v)
		if !ok {
			return nil, schema.RuleType, nil
		}
		q, err := ratOf(text)
		if err != nil {
			return nil, "", err
		}
		if !r.epochMillis {
			q.Mul(q, big.NewRat(1000, 1))
		}
		ms := new(big.Int).Quo(q.Num(), q.Denom())
		if !ms.IsInt64() || ms.Int64() < -62135596800000 || ms.Int64() > 253402300799999 {
			return nil, schema.RuleRange, nil
		}
		return time.UnixMilli(ms.Int64()).UTC().Format("2006-01-02T15:04:05.000Z"), "", nil
	}
	text, ok := numText(v)
	if !ok {
		return nil, schema.RuleType, nil
	}
	switch c.typ {
	case schema.TypeDouble:
		f, err := strconv.ParseFloat(text, 64)
		if (err != nil && math.IsInf(f, 0)) || math.Abs(f) == math.MaxFloat64 {
			return nil, schema.RuleRange, nil
		}
		return f, "", nil
	}
	q, err := ratOf(text)
	if err != nil {
		return nil, "", err
	}
	if c.typ == schema.TypeInt64 {
		if !q.IsInt() {
			return nil, schema.RuleType, nil
		}
		if q.Cmp(maxInt) > 0 || q.Cmp(minInt) < 0 {
			return nil, schema.RuleRange, nil
		}
		return q.Num().String(), "", nil
	}
	// Decimal: round half away from zero to 4 places; within
	// ±922,337,203,685,477.5807 (Power BI's fixed decimal).
	scaled := new(big.Rat).Mul(q, big.NewRat(10000, 1))
	abs := new(big.Rat).Abs(scaled)
	abs.Add(abs, big.NewRat(1, 2))
	n := new(big.Int).Quo(abs.Num(), abs.Denom())
	if q.Sign() < 0 {
		n.Neg(n)
	}
	res := new(big.Rat).SetFrac(n, big.NewInt(10000))
	limit := big.NewRat(9223372036854775807, 10000)
	if new(big.Rat).Abs(res).Cmp(limit) > 0 {
		return nil, schema.RuleRange, nil
	}
	return res, "", nil
}

func refDate(s string) (any, string, error) {
	b := []byte(s)
	if len(b) > 10 && (b[10] == 't' || b[10] == ' ') {
		b[10] = 'T'
	}
	if n := len(b); n > 0 && b[n-1] == 'z' {
		b[n-1] = 'Z'
	}
	// time.Parse accepts one-digit fields in layouts other than RFC 3339
	// itself; RFC 3339 wants two.
	if !rfc3339Shape.Match(b) {
		return nil, schema.RuleType, nil
	}
	var t time.Time
	var err error
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02"} {
		if t, err = time.Parse(layout, string(b)); err == nil {
			break
		}
	}
	if err != nil {
		return nil, schema.RuleType, nil
	}
	if t.Year() < 1 || t.UTC().Year() < 1 || t.UTC().Year() > 9999 {
		return nil, schema.RuleType, nil
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z"), "", nil
}

// compare checks what Map returned against the reference result.
func compare(t testing.TB, r *refMapper, event []byte, rows []json.RawMessage, err error, want refResult) {
	t.Helper()
	if len(event) > 300 {
		event = append(event[:150:150], append([]byte("..."), event[len(event)-150:]...)...)
	}
	var me *schema.MappingError
	if err != nil && !errors.As(err, &me) {
		t.Fatalf("event %q: error %v is not a *MappingError", event, err)
	}
	if want.rule != "" {
		if me == nil || len(me.Failures) != 1 || me.Failures[0].Rule != want.rule || len(rows) != 0 {
			t.Fatalf("event %q: want whole-event rule %s and no rows, got %d rows, err %v", event, want.rule, len(rows), err)
		}
		return
	}
	if len(want.failed) == 0 && err != nil {
		t.Fatalf("event %q: want no error, got %v", event, err)
	}
	if len(want.failed) > 0 {
		if me == nil || len(me.Failures) != len(want.failed) || me.Objects != want.objects {
			t.Fatalf("event %q: want %d failures %v, got %v", event, len(want.failed), want.failed, err)
		}
		for _, f := range me.Failures {
			w, ok := want.failed[f.Index]
			if !ok || w.column != f.Column || w.rule != f.Rule {
				t.Fatalf("event %q: failure %+v, want %+v at index %d", event, f, w, f.Index)
			}
		}
	}
	if len(rows) != len(want.rows) {
		t.Fatalf("event %q: %d rows, want %d", event, len(rows), len(want.rows))
	}
	for i, row := range rows {
		if !json.Valid(row) {
			t.Fatalf("event %q: row %d is not valid JSON: %s", event, i, short(row))
		}
		dec := json.NewDecoder(bytes.NewReader(row))
		dec.UseNumber()
		var got map[string]any
		if err := dec.Decode(&got); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(r.cols) {
			t.Fatalf("event %q: row %s has %d keys, want %d", event, short(row), len(got), len(r.cols))
		}
		for _, c := range r.cols {
			g, w := got[c.Name], want.rows[i][c.Name]
			if !sameValue(c.typ, g, w) {
				t.Fatalf("event %q: row %s: column %s = %s, reference %s", event, short(row), c.Name, short(g), short(w))
			}
		}
	}
}

func short(v any) string {
	s := fmt.Sprintf("%#v", v)
	if b, ok := v.(json.RawMessage); ok {
		s = string(b)
	}
	if len(s) > 200 {
		return s[:100] + "..." + s[len(s)-100:]
	}
	return s
}

func sameValue(typ string, got, want any) bool {
	if got == nil || want == nil {
		return got == nil && want == nil
	}
	switch typ {
	case schema.TypeDouble:
		n, ok := got.(json.Number)
		if !ok {
			return false
		}
		f, err := strconv.ParseFloat(string(n), 64)
		return err == nil && f == want.(float64)
	case schema.TypeInt64:
		return got == json.Number(want.(string))
	case schema.TypeDecimal:
		n, ok := got.(json.Number)
		if !ok {
			return false
		}
		q, ok := new(big.Rat).SetString(string(n))
		return ok && q.Cmp(want.(*big.Rat)) == 0
	}
	return got == want
}

// crossConfig reads every type from paths the random events fill.
func crossConfig(epoch, overflow string) schema.Config {
	return schema.Config{EpochUnit: epoch, StringOverflow: overflow, Columns: []schema.Column{
		{Name: "i", Type: "int"},
		{Name: "d", Type: "double"},
		{Name: "dec", Type: "decimal"},
		{Name: "b", Type: "bool"},
		{Name: "t", Type: "datetime"},
		{Name: "s", Type: "string"},
		{Name: "ni", Type: "Int64", From: "n.arr.1"},
		{Name: "req", Type: "String", From: "r", Required: true},
		{Name: "def", Type: "Double", From: "x.y", Default: 2.5},
		{Name: "esc", Type: "text", From: `a\.b`},
	}}
}

var interesting = []string{
	`0`, `-0`, `1`, `-1`, `3.5`, `3.0`, `1e3`, `1E-3`, `2.5e-1`, `12345678901234567`,
	`9223372036854775806`, `9223372036854775807`, `-9223372036854775807`, `-9223372036854775808`,
	`1e19`, `123456789012345678901234.12345`, `1234567890123456789012345`, `1.7976931348623157e308`,
	`-1.7976931348623157e308`, `1e309`, `4.9e-324`, `1e-400`, `0.00005`, `0.00004999`, `-0.00005`,
	`99999.99995`, `1700000000`, `1700000000123`, `1700000000.5`, `253402300799`, `253402300800`,
	`-62135596800`, `-62135596801`, `253402300799999`, `1e99999`,
	`""`, `" 42 "`, `"+5"`, `".5"`, `"5."`, `"007"`, `"1e3"`, `"abc"`, `"true"`, `"TRUE"`, `"False"`,
	`"0"`, `"1"`, `"yes"`, `"2026-11-28T07:10:21.123Z"`, `"2026-11-28t07:10:21z"`, `"2026-11-28 07:10:21"`,
	`"2026-11-28"`, `"2026-02-29"`, `"2024-02-29T23:59:59.9999+14:00"`, `"0001-01-01T00:00:00Z"`,
	`"0001-01-01T00:00:00+00:01"`, `"9999-12-31T23:59:59.999-00:01"`, `"2026-13-01"`, `"2026-11-28T24:00:00Z"`,
	`"\u00e9\u4e2d"`, `"\ud83d\ude00"`, `"\ud800"`, `"a\"b\\c\n\u0001"`, `"inf"`, `"NaN"`, `"0x10"`, `"1_000"`,
	"\"\xff\xfe\"", `"1700000000"`, `" 1700000000123 "`,
	`true`, `false`, `null`, `{}`, `{"a":1}`, `[]`, `[1,2]`,
}

func longStrings() []string {
	return []string{
		`"` + strings.Repeat("a", 4000) + `"`,
		`"` + strings.Repeat("a", 4001) + `"`,
		`"` + strings.Repeat("a", 3999) + `😀"`,
		`"` + strings.Repeat("é", 4000) + `"`,
		`"` + strings.Repeat("é", 4001) + `"`,
		`"` + strings.Repeat(`\n`, 4001) + `"`,
		`"` + strings.Repeat("😀", 2000) + `"`,
		`"` + strings.Repeat("😀", 2001) + `"`,
	}
}

// likely holds values that mostly fit each field's column, so that many
// objects map; the rest of the time a field takes any interesting value.
var likely = map[string][]string{
	"i":   {`0`, `-1`, `42`, `"17"`, `3.0`, `1e3`, `12345678901234567`, `9223372036854775806`, `-9223372036854775807`, `"-12"`},
	"d":   {`3.5`, `"2.25"`, `-0`, `1e-3`, `4.9e-324`, `1e-400`, `" 42 "`, `"+5"`, `".5"`, `"5."`, `1e308`},
	"dec": {`1.23456`, `0.00005`, `"99999.99995"`, `-0.00005`, `123456789012345678901234.12345`, `"-7.5"`, `1e-5`},
	"b":   {`true`, `false`, `"TRUE"`, `"False"`, `0`, `1`, `"0"`, `"1"`},
	"t": {`1700000000`, `1700000000123`, `"2026-11-28T07:10:21.123Z"`, `"2026-11-28 07:10:21"`, `"2026-11-28"`,
		`"2024-02-29T23:59:59.9999+14:00"`, `"0001-01-01T00:00:00Z"`, `"1700000000"`, `1700000000.5`, `-1.5`},
	"s":   {`"plain"`, `"\u00e9\u4e2d"`, `"a\"b\\c\n\u0001"`, `3.25`, `true`, `"\ud800x"`, "\"\xff\""},
	"r":   {`"present"`, `"x"`, `12`},
	"a.b": {`"dotted"`, `""`, `"\ud83d\ude00"`},
}

// randomEvent builds an object (or sometimes an array of them) whose fields
// take values from likely or from values.
func randomEvent(rng *rand.Rand, values []string) []byte {
	obj := func() string {
		var parts []string
		pick := func() string { return values[rng.IntN(len(values))] }
		for _, k := range []string{"i", "d", "dec", "b", "t", "s", "r", "a.b", "noise"} {
			switch n := rng.IntN(10); {
			case n == 0: // missing
			case n <= 7 && likely[k] != nil:
				parts = append(parts, strconv.Quote(k)+":"+likely[k][rng.IntN(len(likely[k]))])
			default:
				parts = append(parts, strconv.Quote(k)+":"+pick())
			}
		}
		if rng.IntN(3) > 0 {
			parts = append(parts, `"n":{"arr":[`+pick()+`,`+pick()+`]}`)
		}
		if rng.IntN(3) > 0 {
			parts = append(parts, `"x":{"y":`+pick()+`}`)
		}
		if rng.IntN(2) == 0 {
			parts = append(parts, `"r":"present"`) // duplicates sometimes; last wins
		}
		rng.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
		return "{" + strings.Join(parts, ",") + "}"
	}
	if rng.IntN(4) == 0 {
		n := rng.IntN(4)
		var objs []string
		for range n {
			objs = append(objs, obj())
		}
		return []byte("[" + strings.Join(objs, ", ") + "]")
	}
	return []byte(obj())
}

func TestMapMatchesReference(t *testing.T) {
	values := append(append([]string{}, interesting...), longStrings()...)
	for _, cfg := range []schema.Config{crossConfig("seconds", "reject"), crossConfig("milliseconds", "truncate")} {
		t.Run(cfg.EpochUnit+"/"+cfg.StringOverflow, func(t *testing.T) {
			m, err := schema.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ref := newRef(t, cfg)
			rng := rand.New(rand.NewPCG(1, 2))
			checked, rowsSeen, failuresSeen := 0, 0, 0
			for range 20000 {
				event := randomEvent(rng, values)
				want, err := ref.mapEvent(event)
				if errors.Is(err, errSkip) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				rows, err := m.Map(event, nil, nil)
				compare(t, ref, event, rows, err, want)
				checked++
				rowsSeen += len(rows)
				failuresSeen += len(want.failed)
			}
			// The generator must exercise both paths, or the check proves little.
			if checked < 15000 || rowsSeen < 1000 || failuresSeen < 1000 {
				t.Fatalf("cross-checked %d events, %d rows, %d failed objects: too few", checked, rowsSeen, failuresSeen)
			}
			t.Logf("cross-checked %d events: %d rows, %d failed objects", checked, rowsSeen, failuresSeen)
		})
	}
}

func TestTelemetryMatchesReference(t *testing.T) {
	cfg, err := schematest.TelemetryConfig()
	if err != nil {
		t.Fatal(err)
	}
	m, err := schema.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ref := newRef(t, cfg)
	for _, event := range schematest.TelemetryEvents() {
		want, err := ref.mapEvent(event)
		if err != nil {
			t.Fatal(err)
		}
		if len(want.rows) != 1 {
			t.Fatalf("reference rejects sample event %s: %+v", event, want)
		}
		rows, err := m.Map(event, nil, nil)
		compare(t, ref, event, rows, err, want)
	}
}
