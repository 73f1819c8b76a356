package schema

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// colType is a column's Power BI data type.
type colType uint8

const (
	tInt64 colType = iota + 1
	tDouble
	tBoolean
	tDateTime
	tString
	tDecimal
)

// typeCode maps a canonical type name (from CanonicalType) to a colType.
func typeCode(canonical string) colType {
	switch canonical {
	case TypeInt64:
		return tInt64
	case TypeDouble:
		return tDouble
	case TypeBoolean:
		return tBoolean
	case TypeDateTime:
		return tDateTime
	case TypeString:
		return tString
	case TypeDecimal:
		return tDecimal
	}
	return 0
}

func (t colType) String() string {
	return [...]string{"", TypeInt64, TypeDouble, TypeBoolean, TypeDateTime, TypeString, TypeDecimal}[t]
}

// column is a compiled Column.
type column struct {
	name     string
	nameJSON []byte // `"name":`
	typ      colType
	path     string // From as written, or the name when From is empty
	isMeta   bool
	meta     string
	required bool
	def      []byte // encoded default; nil when there is none
	// epochMillis: numbers in DateTime columns are epoch milliseconds.
	epochMillis bool
	truncate    bool
}

// scratch holds buffers reused while one row is written.
type scratch struct {
	str []byte // decoded strings
	dec []byte // decimal digits
}

// failure is why a value could not be written; the zero value means none.
type failure struct{ rule, msg string }

func fail(rule, format string, args ...any) failure {
	return failure{rule: rule, msg: fmt.Sprintf(format, args...)}
}

// write appends the column's value: v coerced to the column type, or the
// default, or null.
func (c *column) write(dst []byte, v val, sc *scratch) ([]byte, failure) {
	if v.kind == kMissing || v.kind == kNull || (v.kind == kString && len(v.text) == 0 && c.typ != tString) {
		switch {
		case c.def != nil:
			return append(dst, c.def...), failure{}
		case c.required:
			what := "no value"
			if v.kind == kNull {
				what = "null"
			} else if v.kind == kString {
				what = "empty string"
			}
			return dst, fail(RuleRequired, "%s at %q and no default", what, c.path)
		}
		return append(dst, "null"...), failure{}
	}
	switch c.typ {
	case tString:
		return c.writeString(dst, v, sc)
	case tBoolean:
		return writeBool(dst, v, sc)
	case tDateTime:
		return c.writeDateTime(dst, v, sc)
	}
	text, strict, f := numeric(v, sc, c.typ)
	if f.rule != "" {
		return dst, f
	}
	switch c.typ {
	case tInt64:
		return writeInt64(dst, text, strict, sc)
	case tDouble:
		return writeDouble(dst, text, strict)
	default:
		d := parseDec(text, sc.dec)
		sc.keepDec(d)
		out, ok := appendDecimal(dst, d)
		if !ok {
			return dst, fail(RuleRange, "%s is outside Decimal's range %s (Power BI's fixed decimal number)", snippet(text), DecimalRange)
		}
		return out, failure{}
	}
}

func (sc *scratch) keepDec(d dec) {
	if cap(d.digits) > cap(sc.dec) {
		sc.dec = d.digits[:0]
	}
}

// stringText returns a string value's decoded contents, trimmed of ASCII
// white space, for reading numbers, booleans and dates out of strings.
func stringText(v val, sc *scratch) []byte {
	t := v.text
	if v.esc {
		sc.str = unescape(sc.str[:0], t)
		t = sc.str
	}
	return trimSpace(t)
}

// trimSpace trims ASCII white space (bytes.TrimSpace also trims Unicode
// spaces, and bytes.Trim builds a set on every call).
func trimSpace(t []byte) []byte {
	for len(t) > 0 && isSpace(t[0]) {
		t = t[1:]
	}
	for len(t) > 0 && isSpace(t[len(t)-1]) {
		t = t[:len(t)-1]
	}
	return t
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// numeric returns the number literal of v: a JSON number, or a numeric
// string.
func numeric(v val, sc *scratch, t colType) (text []byte, strict bool, f failure) {
	switch v.kind {
	case kNumber:
		return v.text, true, failure{}
	case kString:
		text = stringText(v, sc)
		strict, ok := numberSyntax(text)
		if !ok {
			return nil, false, fail(RuleType, "string %s is not a number (column type %s)", snippet(text), t)
		}
		return text, strict, failure{}
	}
	return nil, false, fail(RuleType, "cannot read %s as %s", kindName(v), t)
}

func kindName(v val) string {
	switch v.kind {
	case kTrue, kFalse, kArray:
		return "a " + v.kind.String()
	case kObject:
		return "an object"
	}
	return v.kind.String()
}

func writeInt64(dst, text []byte, strict bool, sc *scratch) ([]byte, failure) {
	// Fast path: a plain JSON integer of up to 18 digits is always in range.
	if strict && len(text) <= 18 {
		var n int64
		neg := text[0] == '-'
		digits := text
		if neg {
			digits = text[1:]
		}
		plain := true
		for _, c := range digits {
			if !isDigit(c) {
				plain = false
				break
			}
			n = n*10 + int64(c-'0')
		}
		if plain {
			if neg {
				n = -n
			}
			return strconv.AppendInt(dst, n, 10), failure{}
		}
	}
	d := parseDec(text, sc.dec)
	sc.keepDec(d)
	n, integral, inRange := d.int64Value()
	switch {
	case !integral:
		return dst, fail(RuleType, "%s is not a whole number (column type Int64)", snippet(text))
	case !inRange:
		return dst, fail(RuleRange, "%s is outside the Int64 range Power BI accepts (Int64 min and max excluded)", snippet(text))
	}
	return strconv.AppendInt(dst, n, 10), failure{}
}

func writeDouble(dst, text []byte, strict bool) ([]byte, failure) {
	f, err := strconv.ParseFloat(string(text), 64)
	if err != nil {
		if !errors.Is(err, strconv.ErrRange) || math.IsInf(f, 0) {
			return dst, fail(RuleRange, "%s is beyond the Double range", snippet(text))
		}
		strict = false // write the rounded value
	}
	if f == math.MaxFloat64 || f == -math.MaxFloat64 {
		return dst, fail(RuleRange, "%s is Double.MaxValue or MinValue, which Power BI rejects", snippet(text))
	}
	if f == 0 {
		// Also catches underflow ("1e-400"), which ParseFloat rounds to 0
		// silently; write the value Power BI will store.
		return append(dst, '0'), failure{}
	}
	if strict {
		return append(dst, text...), failure{}
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64), failure{}
}

func writeBool(dst []byte, v val, sc *scratch) ([]byte, failure) {
	var t []byte
	switch v.kind {
	case kTrue:
		return append(dst, "true"...), failure{}
	case kFalse:
		return append(dst, "false"...), failure{}
	case kNumber:
		t = v.text
	case kString:
		t = stringText(v, sc)
		switch {
		case bytes.EqualFold(t, []byte("true")):
			return append(dst, "true"...), failure{}
		case bytes.EqualFold(t, []byte("false")):
			return append(dst, "false"...), failure{}
		}
	default:
		return dst, fail(RuleType, "cannot read %s as Boolean", kindName(v))
	}
	switch string(t) {
	case "1":
		return append(dst, "true"...), failure{}
	case "0":
		return append(dst, "false"...), failure{}
	}
	return dst, fail(RuleType, "%s %s is not a boolean (want true, false, 0 or 1)", v.kind, snippet(t))
}

func (c *column) writeDateTime(dst []byte, v val, sc *scratch) ([]byte, failure) {
	switch v.kind {
	case kTime:
		if v.ms < minMillis || v.ms > maxMillis {
			return dst, fail(RuleRange, "time is outside 0001-01-01..9999-12-31")
		}
		return appendDateTime(dst, v.ms), failure{}
	case kNumber:
		return c.writeEpoch(dst, v.text, sc)
	case kString:
		t := stringText(v, sc)
		if _, ok := numberSyntax(t); ok {
			return c.writeEpoch(dst, t, sc)
		}
		ms, ok := parseDateTime(t)
		if !ok {
			return dst, fail(RuleType, "string %s is not an RFC 3339 date-time in years 0001-9999", snippet(t))
		}
		return appendDateTime(dst, ms), failure{}
	}
	return dst, fail(RuleType, "cannot read %s as DateTime", kindName(v))
}

func (c *column) writeEpoch(dst, text []byte, sc *scratch) ([]byte, failure) {
	d := parseDec(text, sc.dec)
	sc.keepDec(d)
	shift, unit := 3, EpochSeconds
	if c.epochMillis {
		shift, unit = 0, EpochMilliseconds
	}
	ms, ok := d.truncated(shift)
	if !ok || ms < minMillis || ms > maxMillis {
		return dst, fail(RuleRange, "%s epoch %s is outside 0001-01-01..9999-12-31", snippet(text), unit)
	}
	return appendDateTime(dst, ms), failure{}
}

func (c *column) writeString(dst []byte, v val, sc *scratch) ([]byte, failure) {
	switch v.kind {
	case kString:
	case kNumber:
		dst = append(dst, '"')
		dst = append(dst, v.text...)
		return append(dst, '"'), failure{}
	case kTrue:
		return append(dst, `"true"`...), failure{}
	case kFalse:
		return append(dst, `"false"`...), failure{}
	case kTime:
		return appendDateTime(dst, v.ms), failure{}
	default:
		return dst, fail(RuleType, "cannot store %s in a String column", kindName(v))
	}
	if !v.esc && !v.high {
		// Printable ASCII with nothing to escape: one byte, one character.
		t := v.text
		if len(t) > MaxStringLength {
			if !c.truncate {
				return dst, fail(RuleLength, "string of %d characters is longer than %d", len(t), MaxStringLength)
			}
			t = t[:MaxStringLength]
		}
		dst = append(dst, '"')
		dst = append(dst, t...)
		return append(dst, '"'), failure{}
	}
	sc.str = unescape(sc.str[:0], v.text)
	s := sc.str
	units, cut := utf16Cut(s, MaxStringLength)
	if units > MaxStringLength {
		if !c.truncate {
			return dst, fail(RuleLength, "string of %d characters (UTF-16 code units) is longer than %d", units, MaxStringLength)
		}
		s = s[:cut]
	}
	return appendQuoted(dst, s), failure{}
}

// snippet quotes the start of a value for an error message.
func snippet(b []byte) string {
	const max = 40
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}

// toVal turns a Go value (from metadata or a YAML default) into a val,
// JSON-encoding strings into buf.
func toVal(x any, buf []byte) (val, []byte) {
	switch x := x.(type) {
	case nil:
		return val{kind: kNull}, buf
	case string:
		return quotedVal(buf, []byte(x))
	case []byte:
		return quotedVal(buf, x)
	case bool:
		if x {
			return val{kind: kTrue}, buf
		}
		return val{kind: kFalse}, buf
	case time.Time:
		return val{kind: kTime, ms: x.UnixMilli()}, buf
	case int:
		return numVal(buf, strconv.AppendInt(buf, int64(x), 10))
	case int8:
		return numVal(buf, strconv.AppendInt(buf, int64(x), 10))
	case int16:
		return numVal(buf, strconv.AppendInt(buf, int64(x), 10))
	case int32:
		return numVal(buf, strconv.AppendInt(buf, int64(x), 10))
	case int64:
		return numVal(buf, strconv.AppendInt(buf, x, 10))
	case uint:
		return numVal(buf, strconv.AppendUint(buf, uint64(x), 10))
	case uint8:
		return numVal(buf, strconv.AppendUint(buf, uint64(x), 10))
	case uint16:
		return numVal(buf, strconv.AppendUint(buf, uint64(x), 10))
	case uint32:
		return numVal(buf, strconv.AppendUint(buf, uint64(x), 10))
	case uint64:
		return numVal(buf, strconv.AppendUint(buf, x, 10))
	case float32:
		return floatVal(buf, float64(x), 32)
	case float64:
		return floatVal(buf, x, 64)
	}
	return val{kind: kUnsupported}, buf
}

func numVal(before, after []byte) (val, []byte) {
	return val{kind: kNumber, text: after[len(before):]}, after
}

func floatVal(buf []byte, f float64, bits int) (val, []byte) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		// Not a JSON number; Double columns reject it, String columns
		// store its name.
		v, buf := quotedVal(buf, strconv.AppendFloat(nil, f, 'g', -1, bits))
		return v, buf
	}
	return numVal(buf, strconv.AppendFloat(buf, f, 'g', -1, bits))
}

func quotedVal(buf, s []byte) (val, []byte) {
	start := len(buf) + 1
	buf = appendQuoted(buf, s)
	text := buf[start : len(buf)-1]
	v := val{kind: kString, text: text, esc: bytes.IndexByte(text, '\\') >= 0}
	for _, c := range text {
		if c >= 0x80 {
			v.high = true
			break
		}
	}
	return v, buf
}

// encodeDefault checks a configured default against the column type and
// returns its encoding.
func (c *column) encodeDefault(x any) ([]byte, error) {
	v, _ := toVal(x, nil)
	switch v.kind {
	case kUnsupported:
		return nil, fmt.Errorf("default of type %T cannot be used (want a number, string or boolean)", x)
	case kString:
		if len(v.text) == 0 && c.typ != tString {
			return nil, fmt.Errorf("empty default for a %s column", c.typ)
		}
	}
	var sc scratch
	out, f := c.write(nil, v, &sc)
	if f.rule != "" {
		shown := fmt.Sprint(x)
		if len(shown) > 40 {
			shown = shown[:40] + "..."
		}
		return nil, fmt.Errorf("default %s does not fit type %s: %s", shown, c.typ, f.msg)
	}
	return out, nil
}
