package schema_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/schema/schematest"
)

func TestCanonicalType(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"Int64", "Int64", true}, {"int64", "Int64", true}, {"INT", "Int64", true}, {"integer", "Int64", true}, {"long", "Int64", true},
		{"Double", "Double", true}, {"float", "Double", true}, {"float64", "Double", true}, {"Number", "Double", true},
		{"Boolean", "Boolean", true}, {"bool", "Boolean", true},
		{"DateTime", "DateTime", true}, {"datetime", "DateTime", true}, {"date", "DateTime", true}, {"timestamp", "DateTime", true},
		{"String", "String", true}, {"string", "String", true}, {"text", "String", true},
		{"Decimal", "Decimal", true}, {"DECIMAL", "Decimal", true},
		{"int32", "", false}, {"", "", false}, {"money", "", false}, {" int", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := schema.CanonicalType(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("CanonicalType(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	c := schema.DefaultConfig()
	if c.EpochUnit != "seconds" || c.StringOverflow != "reject" || len(c.Columns) != 0 {
		t.Fatalf("DefaultConfig() = %+v", c)
	}
	// The defaults are valid once columns are added.
	c.Columns = []schema.Column{{Name: "a", Type: "int"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	col := func(name, typ string) schema.Column { return schema.Column{Name: name, Type: typ} }
	many := make([]schema.Column, 76)
	for i := range many {
		many[i] = col(fmt.Sprintf("c%d", i), "int")
	}
	tests := []struct {
		name string
		cfg  schema.Config
		want []string // every message, in order
	}{
		{name: "valid", cfg: schema.Config{Columns: []schema.Column{
			col("a", "Int64"), {Name: "b", Type: "datetime", From: "x.0.y", Default: 1700000000, Required: true},
			{Name: "k", Type: "string", From: "@headers.trace-id"}, {Name: "e", Type: "bool", From: `a\.b`, Default: "TRUE"},
			{Name: "tab\there é", Type: "text"},
		}}},
		{name: "no columns", cfg: schema.Config{}, want: []string{"columns: at least one column is required"}},
		{name: "too many columns", cfg: schema.Config{Columns: many}, want: []string{"columns: at most 75 columns (got 76)"}},
		{name: "unknown type", cfg: schema.Config{Columns: []schema.Column{col("a", "int"), col("b", "int"), col("c", "int32")}},
			want: []string{`columns[2].type: unknown type "int32" (want Int64, Double, Boolean, DateTime, String or Decimal)`}},
		{name: "missing type and name", cfg: schema.Config{Columns: []schema.Column{{}}},
			want: []string{"columns[0].name: missing", "columns[0].type: missing (want Int64, Double, Boolean, DateTime, String or Decimal)"}},
		{name: "duplicate name, case-insensitive", cfg: schema.Config{Columns: []schema.Column{col("ts", "int"), col("x", "int"), col("TS", "int")}},
			want: []string{`columns[2].name: duplicate column "TS" (same as columns[0])`}},
		{name: "name with control character", cfg: schema.Config{Columns: []schema.Column{col("a\x01b", "int")}},
			want: []string{"columns[0].name: character U+0001 at byte 1 is not allowed in a Power BI column name"}},
		{name: "name with U+FFFF", cfg: schema.Config{Columns: []schema.Column{col("a\uffff", "int")}},
			want: []string{"columns[0].name: character U+FFFF at byte 1 is not allowed in a Power BI column name"}},
		{name: "name not UTF-8", cfg: schema.Config{Columns: []schema.Column{col("a\xff", "int")}},
			want: []string{"columns[0].name: invalid UTF-8 at byte 1"}},
		{name: "bad paths", cfg: schema.Config{Columns: []schema.Column{
			{Name: "a", Type: "int", From: "a..b"}, {Name: "b", Type: "int", From: ".a"}, {Name: "c", Type: "int", From: "a."},
			{Name: "d", Type: "int", From: `a\`}, {Name: "e", Type: "int", From: `a\b`}, {Name: "f", Type: "int", From: "@nope"},
			{Name: "g", Type: "int", From: "@headers."}, {Name: "h", Type: "int", From: "@"},
		}}, want: []string{
			`columns[0].from: path "a..b" has an empty segment at byte 2`,
			`columns[1].from: path ".a" has an empty segment at byte 0`,
			`columns[2].from: path "a." has an empty segment at its end`,
			`columns[3].from: path "a\\" ends in a backslash`,
			`columns[4].from: path "a\\b": backslash must escape '.', '@' or '\' (at byte 1)`,
			`columns[5].from: unknown metadata "@nope" (want @key, @topic, @partition, @offset, @timestamp or @headers.NAME)`,
			`columns[6].from: unknown metadata "@headers." (want @key, @topic, @partition, @offset, @timestamp or @headers.NAME)`,
			`columns[7].from: unknown metadata "@" (want @key, @topic, @partition, @offset, @timestamp or @headers.NAME)`,
		}},
		{name: "defaults that do not fit", cfg: schema.Config{Columns: []schema.Column{
			{Name: "a", Type: "int", Default: "x"}, {Name: "b", Type: "int", Default: 1.5}, {Name: "c", Type: "bool", Default: 2},
			{Name: "d", Type: "datetime", Default: "yesterday"}, {Name: "e", Type: "string", Default: []any{1}},
			{Name: "f", Type: "string", Default: strings.Repeat("x", 4001)}, {Name: "g", Type: "double", Default: ""},
		}}, want: []string{
			`columns[0].default: default x does not fit type Int64: string "x" is not a number (column type Int64)`,
			`columns[1].default: default 1.5 does not fit type Int64: "1.5" is not a whole number (column type Int64)`,
			`columns[2].default: default 2 does not fit type Boolean: number "2" is not a boolean (want true, false, 0 or 1)`,
			`columns[3].default: default yesterday does not fit type DateTime: string "yesterday" is not an RFC 3339 date-time in years 0001-9999`,
			`columns[4].default: default of type []interface {} cannot be used (want a number, string or boolean)`,
			`columns[5].default: default ` + strings.Repeat("x", 40) + `... does not fit type String: string of 4001 characters is longer than 4000`,
			`columns[6].default: empty default for a Double column`,
		}},
		{name: "long default fits when truncating", cfg: schema.Config{StringOverflow: "truncate", Columns: []schema.Column{
			{Name: "f", Type: "string", Default: strings.Repeat("x", 4001)}}}},
		{name: "bad modes", cfg: schema.Config{EpochUnit: "minutes", StringOverflow: "drop", Columns: []schema.Column{col("a", "int")}},
			want: []string{
				`epoch_unit: unknown unit "minutes" (want seconds or milliseconds)`,
				`string_overflow: unknown mode "drop" (want reject or truncate)`,
			}},
		{name: "mode spellings", cfg: schema.Config{EpochUnit: "MS", StringOverflow: "Truncate", Columns: []schema.Column{col("a", "int")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			var got []string
			if err != nil {
				var joined interface{ Unwrap() []error }
				if !errors.As(err, &joined) {
					t.Fatalf("error is not an errors.Join: %v", err)
				}
				for _, e := range joined.Unwrap() {
					got = append(got, e.Error())
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("Validate():\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if _, err := schema.New(tt.cfg); (err != nil) != (len(tt.want) > 0) {
				t.Fatalf("New error %v disagrees with Validate", err)
			}
		})
	}
}

func TestTelemetryConfig(t *testing.T) {
	c, err := schematest.TelemetryConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Columns) != 13 || c.EpochUnit != "milliseconds" || c.Columns[9].Default != false {
		t.Fatalf("unexpected telemetry schema: %+v", c)
	}
	if n := len(schematest.TelemetryEvents()); n != 300 {
		t.Fatalf("%d sample events, want 300", n)
	}
}
