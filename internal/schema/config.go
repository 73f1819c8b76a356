package schema

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Config maps events onto the columns of one Power BI table.
type Config struct {
	// Columns of the table, in order. At most 75.
	Columns []Column `yaml:"columns"`
	// EpochUnit says how a number in a DateTime column is read: "seconds"
	// (default) or "milliseconds".
	EpochUnit string `yaml:"epoch_unit"`
	// StringOverflow says what happens to a string over 4,000 characters:
	// "reject" (default: the object goes to the dead letter) or "truncate".
	StringOverflow string `yaml:"string_overflow"`
}

// Column is one column of the table and where its value comes from.
type Column struct {
	// Name of the column in Power BI.
	Name string `yaml:"name"`
	// Type is the Power BI data type: Int64, Double, Boolean, DateTime,
	// String or Decimal (case-insensitive; aliases int, bool, ...).
	Type string `yaml:"type"`
	// From is a dotted path into the event ("device.id", "readings.0.value");
	// paths starting with "@" read source metadata (@key, @topic, @partition,
	// @offset, @timestamp, @headers.NAME). Empty means the column name.
	From string `yaml:"from"`
	// Default is used when the path is missing or null.
	Default any `yaml:"default"`
	// Required makes a missing value (with no default) an error for the object.
	Required bool `yaml:"required"`
}

// Meta gives values that live outside the event body, such as Kafka record
// fields. source.Metadata implements it.
type Meta interface {
	MetaValue(name string) (any, bool)
}

// Limits Power BI puts on a push table and its values.
const (
	// MaxColumns is the most columns a push table may have.
	MaxColumns = 75
	// MaxStringLength is the most characters (UTF-16 code units) of a
	// string value Power BI accepts.
	MaxStringLength = 4000
)

// Accepted values of Config.EpochUnit and Config.StringOverflow.
const (
	EpochSeconds      = "seconds"
	EpochMilliseconds = "milliseconds"
	OverflowReject    = "reject"
	OverflowTruncate  = "truncate"
)

// Power BI's canonical data type names, as provisioning sends them.
const (
	TypeInt64    = "Int64"
	TypeDouble   = "Double"
	TypeBoolean  = "Boolean"
	TypeDateTime = "DateTime"
	TypeString   = "String"
	TypeDecimal  = "Decimal"
)

const wantTypes = "want Int64, Double, Boolean, DateTime, String or Decimal"

// DefaultConfig returns the defaults: epoch seconds, reject long strings,
// no columns (a table needs at least one, so the user must list them).
func DefaultConfig() Config {
	return Config{EpochUnit: EpochSeconds, StringOverflow: OverflowReject}
}

// CanonicalType returns Power BI's name for a column type written in a
// config, case-insensitively, with these aliases:
//
//	Int64:    int64, int, integer, long
//	Double:   double, float, float64, number
//	Boolean:  boolean, bool
//	DateTime: datetime, date, timestamp
//	String:   string, text
//	Decimal:  decimal
//
// ok is false for anything else.
func CanonicalType(s string) (canonical string, ok bool) {
	switch strings.ToLower(s) {
	case "int64", "int", "integer", "long":
		return TypeInt64, true
	case "double", "float", "float64", "number":
		return TypeDouble, true
	case "boolean", "bool":
		return TypeBoolean, true
	case "datetime", "date", "timestamp":
		return TypeDateTime, true
	case "string", "text":
		return TypeString, true
	case "decimal":
		return TypeDecimal, true
	}
	return "", false
}

// Validate reports every problem of the schema at once, joined with
// errors.Join. Each message starts with the key path relative to the schema
// section ("columns[2].type: ...") followed by ": ".
func (c Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, errors.New(path+": "+fmt.Sprintf(format, args...)))
	}
	unit, unitOK := epochUnit(c.EpochUnit)
	if !unitOK {
		add("epoch_unit", "unknown unit %q (want seconds or milliseconds)", c.EpochUnit)
	}
	truncate, overflowOK := stringOverflow(c.StringOverflow)
	if !overflowOK {
		add("string_overflow", "unknown mode %q (want reject or truncate)", c.StringOverflow)
	}
	switch {
	case len(c.Columns) == 0:
		add("columns", "at least one column is required")
	case len(c.Columns) > MaxColumns:
		add("columns", "at most %d columns (got %d)", MaxColumns, len(c.Columns))
	}
	seen := make(map[string]int, len(c.Columns))
	for i, col := range c.Columns {
		p := fmt.Sprintf("columns[%d]", i)
		if err := checkColumnName(col.Name); err != nil {
			add(p+".name", "%v", err)
		} else {
			// Power BI column names are case-insensitive within a table.
			key := strings.ToLower(col.Name)
			if first, dup := seen[key]; dup {
				add(p+".name", "duplicate column %q (same as columns[%d])", col.Name, first)
			} else {
				seen[key] = i
			}
		}
		typ, typeOK := CanonicalType(col.Type)
		switch {
		case col.Type == "":
			add(p+".type", "missing (%s)", wantTypes)
		case !typeOK:
			add(p+".type", "unknown type %q (%s)", col.Type, wantTypes)
		}
		if col.From != "" {
			if _, err := parsePath(col.From); err != nil {
				add(p+".from", "%v", err)
			}
		}
		if col.Default != nil && typeOK {
			cc := column{name: col.Name, typ: typeCode(typ), epochMillis: unit == EpochMilliseconds, truncate: truncate}
			if _, err := cc.encodeDefault(col.Default); err != nil {
				add(p+".default", "%v", err)
			}
		}
	}
	return errors.Join(errs...)
}

// epochUnit normalises Config.EpochUnit; "" means seconds.
func epochUnit(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "", "s", "seconds":
		return EpochSeconds, true
	case "ms", "milliseconds":
		return EpochMilliseconds, true
	}
	return "", false
}

// stringOverflow normalises Config.StringOverflow; "" means reject.
func stringOverflow(s string) (truncate, ok bool) {
	switch strings.ToLower(s) {
	case "", OverflowReject:
		return false, true
	case OverflowTruncate:
		return true, true
	}
	return false, false
}

// checkColumnName applies Power BI's column name pattern (reference §2.6):
// one or more XML-legal characters, that is TAB, LF, CR, U+0020-U+D7FF,
// U+E000-U+FFFD and U+10000-U+10FFFF.
func checkColumnName(name string) error {
	if name == "" {
		return errors.New("missing")
	}
	for i, r := range name {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(name[i:]); size <= 1 {
				return fmt.Errorf("invalid UTF-8 at byte %d", i)
			}
		}
		switch {
		case r == '\t' || r == '\n' || r == '\r':
		case r >= 0x20 && r <= 0xD7FF:
		case r >= 0xE000 && r <= 0xFFFD:
		case r >= 0x10000 && r <= 0x10FFFF:
		default:
			return fmt.Errorf("character %U at byte %d is not allowed in a Power BI column name", r, i)
		}
	}
	return nil
}
