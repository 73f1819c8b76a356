package schema_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/schema"
)

func mustNew(t *testing.T, c schema.Config) *schema.Mapper {
	t.Helper()
	m, err := schema.New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func mapOne(t *testing.T, m *schema.Mapper, event string) (string, *schema.MappingError) {
	t.Helper()
	rows, err := m.Map([]byte(event), nil, nil)
	var me *schema.MappingError
	if err != nil && !errors.As(err, &me) {
		t.Fatalf("error %v is not a *MappingError", err)
	}
	switch {
	case len(rows) == 1:
		return string(rows[0]), me
	case len(rows) == 0:
		return "", me
	}
	t.Fatalf("%d rows from %s", len(rows), event)
	return "", nil
}

func TestMapCoercions(t *testing.T) {
	long := strings.Repeat("x", 4001)
	tests := []struct {
		name     string
		typ      string
		epoch    string // epoch_unit
		overflow string // string_overflow
		value    string // JSON value of field "v"
		want     string // JSON value written for column "v"
		rule     string // or the rule that fails
	}{
		{name: "int from integer", typ: "Int64", value: `42`, want: `42`},
		{name: "int from negative", typ: "Int64", value: `-7`, want: `-7`},
		{name: "int from numeric string", typ: "Int64", value: `"3"`, want: `3`},
		{name: "int from padded string", typ: "Int64", value: `" 12 "`, want: `12`},
		{name: "int from whole float", typ: "Int64", value: `3.0`, want: `3`},
		{name: "int from exponent", typ: "Int64", value: `1e3`, want: `1000`},
		{name: "int rejects fraction", typ: "Int64", value: `3.5`, rule: "type"},
		{name: "int rejects fractional string", typ: "Int64", value: `"3.5"`, rule: "type"},
		{name: "int rejects word", typ: "Int64", value: `"three"`, rule: "type"},
		{name: "int rejects bool", typ: "Int64", value: `true`, rule: "type"},
		{name: "int rejects object", typ: "Int64", value: `{}`, rule: "type"},
		{name: "int largest allowed", typ: "Int64", value: `9223372036854775806`, want: `9223372036854775806`},
		{name: "int rejects Int64.MaxValue", typ: "Int64", value: `9223372036854775807`, rule: "range"},
		{name: "int smallest allowed", typ: "Int64", value: `-9223372036854775807`, want: `-9223372036854775807`},
		{name: "int rejects Int64.MinValue", typ: "Int64", value: `-9223372036854775808`, rule: "range"},
		{name: "int rejects beyond range", typ: "Int64", value: `1e19`, rule: "range"},
		{name: "int rejects hex string", typ: "Int64", value: `"0x10"`, rule: "type"},

		{name: "double from number kept as written", typ: "Double", value: `21.37`, want: `21.37`},
		{name: "double from string", typ: "Double", value: `"48.2"`, want: `48.2`},
		{name: "double from loose string", typ: "Double", value: `"+.5"`, want: `0.5`},
		{name: "double from integer", typ: "Double", value: `7`, want: `7`},
		{name: "double underflow becomes zero", typ: "Double", value: `1e-400`, want: `0`},
		{name: "double rejects overflow", typ: "Double", value: `1e309`, rule: "range"},
		{name: "double rejects MaxValue", typ: "Double", value: `1.7976931348623157e308`, rule: "range"},
		{name: "double rejects MinValue", typ: "Double", value: `-1.7976931348623157e308`, rule: "range"},
		{name: "double rejects NaN string", typ: "Double", value: `"NaN"`, rule: "type"},
		{name: "double rejects Infinity string", typ: "Double", value: `"Infinity"`, rule: "type"},
		{name: "double rejects array", typ: "Double", value: `[1]`, rule: "type"},

		{name: "decimal keeps 4 places", typ: "Decimal", value: `1.2345`, want: `1.2345`},
		{name: "decimal rounds half up", typ: "Decimal", value: `1.23455`, want: `1.2346`},
		{name: "decimal rounds down", typ: "Decimal", value: `1.23454`, want: `1.2345`},
		{name: "decimal rounds negative away from zero", typ: "Decimal", value: `-0.00005`, want: `-0.0001`},
		{name: "decimal tiny becomes zero", typ: "Decimal", value: `0.00004999`, want: `0`},
		{name: "decimal carries", typ: "Decimal", value: `99999.99995`, want: `100000`},
		{name: "decimal from string with exponent", typ: "Decimal", value: `"1.5e3"`, want: `1500`},
		{name: "decimal at the top of its range", typ: "Decimal", value: `922337203685477.5807`, want: `922337203685477.5807`},
		{name: "decimal at the bottom of its range", typ: "Decimal", value: `"-922337203685477.5807"`, want: `-922337203685477.5807`},
		{name: "decimal rejects one step above its range", typ: "Decimal", value: `922337203685477.5808`, rule: "range"},
		{name: "decimal rejects one step below its range", typ: "Decimal", value: `-922337203685477.5808`, rule: "range"},
		{name: "decimal rejects what rounds above its range", typ: "Decimal", value: `922337203685477.58075`, rule: "range"},
		{name: "decimal rejects 16 integer digits", typ: "Decimal", value: `1000000000000000`, rule: "range"},
		{name: "decimal 15 integer digits below the top", typ: "Decimal", value: `922337203685476.9`, want: `922337203685476.9`},

		{name: "bool true", typ: "Boolean", value: `true`, want: `true`},
		{name: "bool false", typ: "Boolean", value: `false`, want: `false`},
		{name: "bool from string any case", typ: "Boolean", value: `"TRUE"`, want: `true`},
		{name: "bool from False", typ: "Boolean", value: `"False"`, want: `false`},
		{name: "bool from 1", typ: "Boolean", value: `1`, want: `true`},
		{name: "bool from 0", typ: "Boolean", value: `0`, want: `false`},
		{name: "bool from string 1", typ: "Boolean", value: `"1"`, want: `true`},
		{name: "bool rejects 2", typ: "Boolean", value: `2`, rule: "type"},
		{name: "bool rejects 1.0", typ: "Boolean", value: `1.0`, rule: "type"},
		{name: "bool rejects yes", typ: "Boolean", value: `"yes"`, rule: "type"},

		{name: "datetime from RFC 3339 UTC", typ: "DateTime", value: `"2026-11-28T07:10:21.123Z"`, want: `"2026-11-28T07:10:21.123Z"`},
		{name: "datetime converts offset to UTC", typ: "DateTime", value: `"2026-11-28T08:10:21+01:00"`, want: `"2026-11-28T07:10:21.000Z"`},
		{name: "datetime drops digits below ms", typ: "DateTime", value: `"2026-11-28T07:10:21.123987654Z"`, want: `"2026-11-28T07:10:21.123Z"`},
		{name: "datetime without zone is UTC", typ: "DateTime", value: `"2026-11-28T07:10:21"`, want: `"2026-11-28T07:10:21.000Z"`},
		{name: "datetime with space", typ: "DateTime", value: `"2026-11-28 07:10:21.5"`, want: `"2026-11-28T07:10:21.500Z"`},
		{name: "datetime date only", typ: "DateTime", value: `"2026-11-28"`, want: `"2026-11-28T00:00:00.000Z"`},
		{name: "datetime epoch seconds", typ: "DateTime", value: `1795849821`, want: `"2026-11-28T07:10:21.000Z"`},
		{name: "datetime epoch seconds fraction", typ: "DateTime", value: `1795849821.123`, want: `"2026-11-28T07:10:21.123Z"`},
		{name: "datetime epoch seconds string", typ: "DateTime", value: `"1795849821"`, want: `"2026-11-28T07:10:21.000Z"`},
		{name: "datetime epoch milliseconds", typ: "DateTime", epoch: "milliseconds", value: `1795849821123`, want: `"2026-11-28T07:10:21.123Z"`},
		{name: "datetime epoch before 1970", typ: "DateTime", value: `-1`, want: `"1969-12-31T23:59:59.000Z"`},
		{name: "datetime rejects epoch beyond 9999", typ: "DateTime", value: `253402300800`, rule: "range"},
		{name: "datetime rejects ms as seconds", typ: "DateTime", value: `1795849821123000`, rule: "range"},
		{name: "datetime rejects bad month", typ: "DateTime", value: `"2026-13-01T00:00:00Z"`, rule: "type"},
		{name: "datetime rejects Feb 29 of common year", typ: "DateTime", value: `"2026-02-29"`, rule: "type"},
		{name: "datetime accepts Feb 29 of leap year", typ: "DateTime", value: `"2024-02-29"`, want: `"2024-02-29T00:00:00.000Z"`},
		{name: "datetime rejects year 0", typ: "DateTime", value: `"0000-01-01T00:00:00Z"`, rule: "type"},
		{name: "datetime rejects US format", typ: "DateTime", value: `"07/30/2014"`, rule: "type"},
		{name: "datetime rejects bool", typ: "DateTime", value: `true`, rule: "type"},

		{name: "string plain", typ: "String", value: `"ok"`, want: `"ok"`},
		{name: "string keeps escapes meaning", typ: "String", value: `"a\"b\\c\n\u00e9"`, want: `"a\"b\\c\né"`},
		{name: "string empty stays empty", typ: "String", value: `""`, want: `""`},
		{name: "string from number keeps text", typ: "String", value: `1.50`, want: `"1.50"`},
		{name: "string from bool", typ: "String", value: `false`, want: `"false"`},
		{name: "string rejects object", typ: "String", value: `{"a":1}`, rule: "type"},
		{name: "string rejects array", typ: "String", value: `["a"]`, rule: "type"},
		{name: "string lone surrogate replaced", typ: "String", value: `"\ud800"`, want: `"` + "\uFFFD" + `"`},
		{name: "string invalid UTF-8 replaced", typ: "String", value: "\"a\xffb\"", want: `"a` + "\uFFFD" + `b"`},
		{name: "string 4000 characters", typ: "String", value: `"` + long[:4000] + `"`, want: `"` + long[:4000] + `"`},
		{name: "string over 4000 rejected", typ: "String", value: `"` + long + `"`, rule: "length"},
		{name: "string over 4000 truncated", typ: "String", overflow: "truncate", value: `"` + long + `"`, want: `"` + long[:4000] + `"`},
		{name: "string counts characters not bytes", typ: "String", value: `"` + strings.Repeat("é", 4000) + `"`, want: `"` + strings.Repeat("é", 4000) + `"`},
		{name: "string counts UTF-16 units", typ: "String", value: `"` + strings.Repeat("😀", 2001) + `"`, rule: "length"},
		{name: "string truncation keeps pairs whole", typ: "String", overflow: "truncate", value: `"a` + strings.Repeat("😀", 2000) + `"`, want: `"a` + strings.Repeat("😀", 1999) + `"`},

		{name: "null is null", typ: "Double", value: `null`, want: `null`},
		{name: "empty string is missing for numbers", typ: "Int64", value: `""`, want: `null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustNew(t, schema.Config{EpochUnit: tt.epoch, StringOverflow: tt.overflow,
				Columns: []schema.Column{{Name: "v", Type: tt.typ}}})
			row, me := mapOne(t, m, `{"v":`+tt.value+`}`)
			if tt.rule != "" {
				if me == nil || len(me.Failures) != 1 || me.Failures[0].Rule != tt.rule || row != "" {
					t.Fatalf("want rule %q, got row %q, err %v", tt.rule, row, me)
				}
				f := me.Failures[0]
				if f.Column != "v" || f.Path != "v" || f.Index != 0 || f.Message == "" {
					t.Fatalf("failure %+v does not name column v at index 0", f)
				}
				return
			}
			if me != nil {
				t.Fatalf("unexpected error: %v", me)
			}
			if want := `{"v":` + tt.want + `}`; row != want {
				t.Fatalf("row\n got %.200s\nwant %.200s", row, want)
			}
		})
	}
}

func TestMapWholeEventErrors(t *testing.T) {
	m := mustNew(t, schema.Config{Columns: []schema.Column{{Name: "a", Type: "Int64"}}})
	tests := []struct {
		name, event, rule, message string
		index                      int
	}{
		{name: "empty", event: "", rule: "syntax", message: "empty event at byte 0"},
		{name: "blank", event: " \n", rule: "syntax", message: "empty event at byte 2"},
		{name: "truncated object", event: `{"a":1`, rule: "syntax", message: "unexpected end of JSON at byte 6"},
		{name: "bad literal", event: `{"a":tru}`, rule: "syntax", message: "invalid character '}' at byte 8"},
		{name: "trailing garbage", event: `{"a":1} x`, rule: "syntax", message: "data after the top-level value at byte 8"},
		{name: "two objects on a line", event: `{"a":1}{"a":2}`, rule: "syntax", message: "data after the top-level value at byte 7"},
		{name: "leading zero", event: `{"a":01}`, rule: "syntax", message: "invalid character '1' at byte 6"},
		{name: "control character", event: "{\"a\":\"\x01\"}", rule: "syntax", message: "control character in string at byte 6"},
		{name: "bad escape", event: `{"a":"\x"}`, rule: "syntax", message: `invalid escape in string at byte 6`},
		{name: "trailing comma in array", event: `[{"a":1},]`, rule: "syntax", message: "invalid character ']' at byte 9", index: 1},
		{name: "bad second object", event: `[{"a":1},{"a":}]`, rule: "syntax", message: "invalid character '}' at byte 14", index: 1},
		{name: "number", event: `42`, rule: "shape", message: "event is a number, want an object or an array of objects"},
		{name: "string", event: `"hi"`, rule: "shape", message: "event is a string, want an object or an array of objects"},
		{name: "null", event: `null`, rule: "shape", message: "event is null, want an object or an array of objects"},
		{name: "array with a number", event: `[{"a":1}, 2]`, rule: "shape", message: "array element is a number, want an object", index: 1},
		{name: "nested array", event: `[[{"a":1}]]`, rule: "shape", message: "array element is an array, want an object"},
		{name: "too deep", event: strings.Repeat("[", 10001), rule: "syntax", message: "JSON nested too deeply at byte 10001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := m.Map([]byte(tt.event), nil, []json.RawMessage{json.RawMessage(`{"kept":1}`)})
			if len(rows) != 1 {
				t.Fatalf("rows passed in must be returned untouched, and no others: %d rows", len(rows))
			}
			var me *schema.MappingError
			if !errors.As(err, &me) || len(me.Failures) != 1 || me.Objects != 0 {
				t.Fatalf("want one whole-event failure, got %#v", err)
			}
			f := me.Failures[0]
			if f.Rule != tt.rule || f.Message != tt.message || f.Index != tt.index || f.Column != "" {
				t.Fatalf("failure %+v, want rule %q message %q index %d", f, tt.rule, tt.message, tt.index)
			}
		})
	}
}

func TestMapArrayEvents(t *testing.T) {
	m := mustNew(t, schema.Config{Columns: []schema.Column{
		{Name: "id", Type: "String", Required: true},
		{Name: "temp", Type: "Double", From: "m.t"},
	}})
	tests := []struct {
		name     string
		event    string
		rows     []string
		failures []schema.Failure
		objects  int
	}{
		{name: "single object", event: `{"id":"a","m":{"t":1.5}}`, rows: []string{`{"id":"a","temp":1.5}`}},
		{name: "empty array", event: ` [ ] `},
		{name: "array of objects", event: `[{"id":"a"},{"id":"b","m":{"t":"2"}}]`,
			rows: []string{`{"id":"a","temp":null}`, `{"id":"b","temp":2}`}},
		{name: "one bad object among good ones", event: `[{"id":"a"},{"id":"b","m":{"t":"hot"}},{"id":"c"}]`,
			rows: []string{`{"id":"a","temp":null}`, `{"id":"c","temp":null}`}, objects: 3,
			failures: []schema.Failure{{Index: 1, Column: "temp", Path: "m.t", Rule: "type",
				Message: `string "hot" is not a number (column type Double)`}}},
		{name: "every object bad", event: `[{"m":{}}, {"id":{}}]`, objects: 2,
			failures: []schema.Failure{
				{Index: 0, Column: "id", Path: "id", Rule: "required", Message: `no value at "id" and no default`},
				{Index: 1, Column: "id", Path: "id", Rule: "type", Message: `cannot store an object in a String column`},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := m.Map([]byte(tt.event), nil, nil)
			if len(rows) != len(tt.rows) {
				t.Fatalf("%d rows, want %d (err %v)", len(rows), len(tt.rows), err)
			}
			for i := range rows {
				if string(rows[i]) != tt.rows[i] {
					t.Errorf("row %d = %s, want %s", i, rows[i], tt.rows[i])
				}
			}
			if tt.failures == nil {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var me *schema.MappingError
			if !errors.As(err, &me) {
				t.Fatalf("want *MappingError, got %v", err)
			}
			if me.Objects != tt.objects || fmt.Sprint(me.Failures) != fmt.Sprint(tt.failures) {
				t.Fatalf("got %d objects %+v\nwant %d objects %+v", me.Objects, me.Failures, tt.objects, tt.failures)
			}
		})
	}
}

func TestMappingErrorMessage(t *testing.T) {
	m := mustNew(t, schema.Config{Columns: []schema.Column{{Name: "temp", Type: "Double", From: "m.t"}}})
	_, err := m.Map([]byte(`[{"m":{"t":1}},{"m":{"t":"x"}},{"m":{"t":[]}}]`), nil, nil)
	want := `mapping event: object 1: column "temp" (from "m.t"): type: string "x" is not a number (column type Double) (and 1 more failed objects)`
	if err == nil || err.Error() != want {
		t.Fatalf("Error() =\n%v\nwant\n%s", err, want)
	}
	_, err = m.Map([]byte(`{`), nil, nil)
	if want := "mapping event: event: syntax: unexpected end of JSON at byte 1"; err == nil || err.Error() != want {
		t.Fatalf("Error() = %v, want %s", err, want)
	}
}

// fakeMeta stands in for source.Metadata.
type fakeMeta map[string]any

func (f fakeMeta) MetaValue(name string) (any, bool) {
	v, ok := f[name]
	return v, ok
}

func TestMapMetadata(t *testing.T) {
	m := mustNew(t, schema.Config{Columns: []schema.Column{
		{Name: "key", Type: "String", From: "@key"},
		{Name: "topic", Type: "String", From: "@topic", Default: "none"},
		{Name: "partition", Type: "Int64", From: "@partition"},
		{Name: "offset", Type: "Int64", From: "@offset"},
		{Name: "at", Type: "DateTime", From: "@timestamp"},
		{Name: "tenant", Type: "String", From: "@headers.x-tenant"},
		{Name: "flag", Type: "Boolean", From: "@headers.flag"},
		{Name: "body", Type: "Int64", From: "n"},
	}})
	ts := time.Date(2026, 11, 28, 7, 10, 21, 123_456_789, time.FixedZone("CET", 3600))
	tests := []struct {
		name  string
		meta  schema.Meta
		event string
		want  []string
	}{
		{name: "all metadata", event: `[{"n":1},{"n":2}]`,
			meta: fakeMeta{"key": []byte(`dev-"1"`), "topic": "telemetry", "partition": int64(3), "offset": int64(1234),
				"timestamp": ts, "headers.x-tenant": "acme", "headers.flag": "true"},
			want: []string{
				`{"key":"dev-\"1\"","topic":"telemetry","partition":3,"offset":1234,"at":"2026-11-28T06:10:21.123Z","tenant":"acme","flag":true,"body":1}`,
				`{"key":"dev-\"1\"","topic":"telemetry","partition":3,"offset":1234,"at":"2026-11-28T06:10:21.123Z","tenant":"acme","flag":true,"body":2}`,
			}},
		{name: "no metadata (stdin)", event: `{"n":1}`, meta: nil,
			want: []string{`{"key":null,"topic":"none","partition":null,"offset":null,"at":null,"tenant":null,"flag":null,"body":1}`}},
		{name: "partial metadata", event: `{"n":1}`, meta: fakeMeta{"partition": 0, "headers.flag": "0"},
			want: []string{`{"key":null,"topic":"none","partition":0,"offset":null,"at":null,"tenant":null,"flag":false,"body":1}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := m.Map([]byte(tt.event), tt.meta, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(tt.want) {
				t.Fatalf("%d rows, want %d", len(rows), len(tt.want))
			}
			for i := range rows {
				if string(rows[i]) != tt.want[i] {
					t.Errorf("row %d\n got %s\nwant %s", i, rows[i], tt.want[i])
				}
			}
		})
	}
	t.Run("unsupported metadata type fails the object", func(t *testing.T) {
		_, err := m.Map([]byte(`{"n":1}`), fakeMeta{"offset": struct{}{}}, nil)
		var me *schema.MappingError
		if !errors.As(err, &me) || me.Failures[0].Column != "offset" || me.Failures[0].Rule != "type" {
			t.Fatalf("want a type failure on offset, got %v", err)
		}
	})
}

func TestMapDefaultsAndRequired(t *testing.T) {
	m := mustNew(t, schema.Config{Columns: []schema.Column{
		{Name: "id", Type: "String", Required: true},
		{Name: "site", Type: "String", Default: "unknown"},
		{Name: "n", Type: "Int64", Default: 7, Required: true},
		{Name: "on", Type: "Boolean", Default: "false"},
		{Name: "t", Type: "DateTime", Default: "2026-01-01T00:00:00+01:00"},
		{Name: "opt", Type: "Double"},
	}})
	tests := []struct {
		name, event, want, rule, column string
	}{
		{name: "all present", event: `{"id":"a","site":"s","n":1,"on":true,"t":0,"opt":1.5}`,
			want: `{"id":"a","site":"s","n":1,"on":true,"t":"1970-01-01T00:00:00.000Z","opt":1.5}`},
		{name: "defaults fill missing", event: `{"id":"a"}`,
			want: `{"id":"a","site":"unknown","n":7,"on":false,"t":"2025-12-31T23:00:00.000Z","opt":null}`},
		{name: "defaults fill null", event: `{"id":"a","site":null,"n":null,"on":null,"t":null,"opt":null}`,
			want: `{"id":"a","site":"unknown","n":7,"on":false,"t":"2025-12-31T23:00:00.000Z","opt":null}`},
		{name: "empty string is a String value", event: `{"id":"","site":""}`,
			want: `{"id":"","site":"","n":7,"on":false,"t":"2025-12-31T23:00:00.000Z","opt":null}`},
		{name: "empty string counts as missing for other types", event: `{"id":"a","n":"","opt":""}`,
			want: `{"id":"a","site":"unknown","n":7,"on":false,"t":"2025-12-31T23:00:00.000Z","opt":null}`},
		{name: "required missing", event: `{"site":"s"}`, rule: "required", column: "id"},
		{name: "required null", event: `{"id":null}`, rule: "required", column: "id"},
		{name: "a present bad value is not replaced by the default", event: `{"id":"a","n":"x"}`, rule: "type", column: "n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row, me := mapOne(t, m, tt.event)
			if tt.rule != "" {
				if me == nil || me.Failures[0].Rule != tt.rule || me.Failures[0].Column != tt.column {
					t.Fatalf("want %s on %s, got %v", tt.rule, tt.column, me)
				}
				return
			}
			if me != nil || row != tt.want {
				t.Fatalf("row %s (err %v)\nwant %s", row, me, tt.want)
			}
		})
	}
}

func TestMapPaths(t *testing.T) {
	m := mustNew(t, schema.Config{Columns: []schema.Column{
		{Name: "first", Type: "Double", From: "readings.0.value"},
		{Name: "second", Type: "Double", From: "readings.1"},
		{Name: "dotted", Type: "Double", From: `cpu\.usage`},
		{Name: "a.b", Type: "Int64"}, // From empty: the name is one literal key
		{Name: "deep", Type: "Int64", From: "x.y.z"},
		{Name: "whole", Type: "String", From: "x"},
	}})
	tests := []struct {
		name, event, want string
	}{
		{name: "array index and key", event: `{"readings":[{"value":1.5},2.5],"cpu.usage":0.3,"a.b":4,"x":"s"}`,
			want: `{"first":1.5,"second":2.5,"dotted":0.3,"a.b":4,"deep":null,"whole":"s"}`},
		{name: "numeric segment reads an object key", event: `{"readings":{"0":{"value":1},"1":2}}`,
			want: `{"first":1,"second":2,"dotted":null,"a.b":null,"deep":null,"whole":null}`},
		{name: "index out of range is missing", event: `{"readings":[]}`,
			want: `{"first":null,"second":null,"dotted":null,"a.b":null,"deep":null,"whole":null}`},
		{name: "path through a scalar is missing", event: `{"readings":5,"x":{"y":3}}`,
			want: ""},
		{name: "nested", event: `{"x":{"y":{"z":9}},"a":{"b":1}}`,
			want: ""},
		{name: "escaped key in event", event: `{"cpu\u002eusage":2,"re\u0061dings":[{"value":3}]}`,
			want: `{"first":3,"second":null,"dotted":2,"a.b":null,"deep":null,"whole":null}`},
		{name: "duplicate key: last wins", event: `{"readings":[{"value":1}],"readings":[{"other":1}],"a.b":1,"a.b":2}`,
			want: `{"first":null,"second":null,"dotted":null,"a.b":2,"deep":null,"whole":null}`},
		{name: "unrelated deep nesting is skipped", event: `{"noise":{"a":[[[{"b":[1,2,{"c":"d"}]}]]]},"a.b":1}`,
			want: `{"first":null,"second":null,"dotted":null,"a.b":1,"deep":null,"whole":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row, me := mapOne(t, m, tt.event)
			switch tt.name {
			case "path through a scalar is missing", "nested":
				// "whole" reads an object: a type failure, which proves the
				// walk found it while descending into x.
				if me == nil || me.Failures[0].Column != "whole" || me.Failures[0].Rule != "type" {
					t.Fatalf("want a type failure on whole, got row %s err %v", row, me)
				}
				return
			}
			if me != nil || row != tt.want {
				t.Fatalf("row %s (err %v)\nwant %s", row, me, tt.want)
			}
		})
	}
	t.Run("deep value found", func(t *testing.T) {
		m := mustNew(t, schema.Config{Columns: []schema.Column{{Name: "deep", Type: "Int64", From: "x.y.z"}}})
		row, me := mapOne(t, m, `{"x":{"y":{"z":9}}}`)
		if me != nil || row != `{"deep":9}` {
			t.Fatalf("row %s err %v", row, me)
		}
	})
}

func TestMapColumnNamesAreEscaped(t *testing.T) {
	m := mustNew(t, schema.Config{Columns: []schema.Column{{Name: `say "hi"`, Type: "String", From: "v"}}})
	row, me := mapOne(t, m, `{"v":"x"}`)
	if me != nil || row != `{"say \"hi\"":"x"}` {
		t.Fatalf("row %s err %v", row, me)
	}
}

// TestRowsAreIndependent checks the promise that lets the batcher keep rows:
// they survive the event buffer's reuse and later Map calls, and appending
// to one row cannot overwrite another.
func TestRowsAreIndependent(t *testing.T) {
	m := mustNew(t, schema.Config{Columns: []schema.Column{{Name: "s", Type: "String"}, {Name: "n", Type: "Int64"}}})
	event := []byte(`[{"s":"one","n":1},{"s":"two","n":2}]`)
	rows, err := m.Map(event, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range event {
		event[i] = 'X'
	}
	for i := range 100 {
		if rows, err = m.Map([]byte(fmt.Sprintf(`{"s":"later","n":%d}`, i)), nil, rows); err != nil {
			t.Fatal(err)
		}
	}
	_ = append(rows[0], "garbage"...)
	if string(rows[0]) != `{"s":"one","n":1}` || string(rows[1]) != `{"s":"two","n":2}` || string(rows[101]) != `{"s":"later","n":99}` {
		t.Fatalf("rows changed: %s %s %s", rows[0], rows[1], rows[101])
	}
}

// TestMapIntoReusesTheArena: MapInto gives the rows Map gives, written into
// the caller's arena, which the next call reuses instead of allocating.
func TestMapIntoReusesTheArena(t *testing.T) {
	m := mustNew(t, schema.Config{Columns: []schema.Column{{Name: "s", Type: "String"}, {Name: "n", Type: "Int64"}}})
	arena := new([]byte)
	var first *byte
	for i, event := range []string{`[{"s":"one","n":1},{"s":"two","n":2}]`, `{"s":"three","n":3}`, `{"s":"four","n":4}`} {
		want, err := m.Map([]byte(event), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := m.MapInto([]byte(event), nil, nil, arena)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(rows) != fmt.Sprint(want) {
			t.Fatalf("MapInto(%s) = %s, want %s", event, rows, want)
		}
		if len(*arena) == 0 || &rows[0][0] != &(*arena)[0] {
			t.Fatalf("MapInto(%s): the rows are not in the arena", event)
		}
		if i == 0 {
			first = &(*arena)[0]
		} else if &(*arena)[0] != first {
			t.Fatalf("MapInto(%s) allocated a new arena instead of reusing it", event)
		}
	}
}

func TestMapConcurrent(t *testing.T) {
	m := mustNew(t, crossConfig("seconds", "reject"))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				want := fmt.Sprintf(`{"i":%d,"d":null,"dec":null,"b":null,"t":null,"s":"g%d","ni":null,"req":"r","def":2.5,"esc":null}`, i, g)
				rows, err := m.Map([]byte(fmt.Sprintf(`{"i":%d,"s":"g%d","r":"r"}`, i, g)), nil, nil)
				if err != nil || len(rows) != 1 || string(rows[0]) != want {
					t.Errorf("goroutine %d: %s %v", g, rows, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
