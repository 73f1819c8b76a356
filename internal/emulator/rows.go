package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// rowError is a POST rows body the service would refuse with 400.
type rowError struct {
	msg    string
	target string
}

func (e *rowError) Error() string { return e.msg }

// rowsParser decodes a POST rows body in one pass: it checks the JSON
// syntax, the {"rows":[...]} shape and every value against its column type,
// and cuts each row object out of the body without copying it. Only a row
// with unknown keys (in ignore mode) is re-encoded.
type rowsParser struct {
	b       []byte
	i       int
	sc      *schema
	maxRows int
	maxStr  int
	reject  bool // unknown keys are an error

	dropped int // unknown keys dropped
	spans   []span
}

type span struct{ start, end int }

func (p *rowsParser) fail(target, format string, args ...any) *rowError {
	return &rowError{msg: fmt.Sprintf(format, args...), target: target}
}

func (p *rowsParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *rowsParser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *rowsParser) expect(c byte, what string) *rowError {
	p.ws()
	if p.peek() != c {
		if p.i >= len(p.b) {
			return p.fail("", "the request body is not valid JSON: unexpected end, want %s", what)
		}
		return p.fail("", "the request body is not valid JSON: at offset %d want %s, got %q", p.i, what, p.b[p.i])
	}
	p.i++
	return nil
}

// parse returns the row objects. notRows reports a valid body of another
// shape than {"rows":[...]}.
func (p *rowsParser) parse() ([][]byte, *rowError) {
	const shape = `the request body must be {"rows":[...]}`
	p.ws()
	if p.peek() != '{' {
		return nil, p.fail("", shape)
	}
	p.i++
	p.ws()
	ks, ke, esc, err := p.str()
	if err != nil {
		return nil, p.fail("", shape)
	}
	key := string(p.b[ks:ke])
	if esc {
		key = unescape(p.b[ks-1 : ke+1])
	}
	if !strings.EqualFold(key, "rows") {
		return nil, p.fail("", shape+`; got key %q`, key)
	}
	if err := p.expect(':', "':'"); err != nil {
		return nil, err
	}
	p.ws()
	if p.peek() != '[' {
		return nil, p.fail("", shape+`; "rows" is not an array`)
	}
	p.i++
	var rows [][]byte
	p.ws()
	if p.peek() == ']' {
		p.i++
	} else {
		for {
			if p.maxRows > 0 && len(rows) >= p.maxRows {
				return nil, p.fail("rows", "the request has more than %d rows, the maximum per request", p.maxRows)
			}
			row, err := p.row(len(rows))
			if err != nil {
				return nil, err
			}
			rows = append(rows, row)
			p.ws()
			switch p.peek() {
			case ',':
				p.i++
				continue
			case ']':
				p.i++
			default:
				return nil, p.fail("", "the request body is not valid JSON: at offset %d want ',' or ']'", p.i)
			}
			break
		}
	}
	p.ws()
	if p.peek() == ',' {
		return nil, p.fail("", shape+`; only the key "rows" is allowed`)
	}
	if err := p.expect('}', "'}'"); err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.b) {
		return nil, p.fail("", "the request body is not valid JSON: data after the closing '}' at offset %d", p.i)
	}
	return rows, nil
}

// row scans one row object and checks its values.
func (p *rowsParser) row(n int) ([]byte, *rowError) {
	p.ws()
	start := p.i
	if p.peek() != '{' {
		return nil, p.fail(fmt.Sprintf("rows[%d]", n), "rows[%d] is not a JSON object", n)
	}
	p.i++
	p.spans = p.spans[:0]
	unknown := false
	p.ws()
	if p.peek() == '}' {
		p.i++
		return p.b[start:p.i], nil
	}
	for {
		p.ws()
		memberStart := p.i
		ks, ke, esc, err := p.str()
		if err != nil {
			return nil, p.fail(fmt.Sprintf("rows[%d]", n), "rows[%d]: %s", n, err.msg)
		}
		var col int
		var ok bool
		var name string
		if esc {
			name = unescape(p.b[ks-1 : ke+1])
			col, ok = p.sc.index[name]
		} else {
			col, ok = p.sc.index[string(p.b[ks:ke])]
		}
		if err := p.expect(':', "':'"); err != nil {
			return nil, err
		}
		p.ws()
		if !ok {
			if !esc {
				name = string(p.b[ks:ke])
			}
			if p.reject {
				return nil, p.fail(fmt.Sprintf("rows[%d].%s", n, name), "rows[%d]: %q is not a column of table %q", n, name, p.sc.def.Name)
			}
			if err := p.skipValue(n, name); err != nil {
				return nil, err
			}
			unknown = true
			p.dropped++
		} else {
			if err := p.value(n, col); err != nil {
				return nil, err
			}
			p.spans = append(p.spans, span{memberStart, p.i})
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
			continue
		case '}':
			p.i++
		default:
			return nil, p.fail(fmt.Sprintf("rows[%d]", n), "the request body is not valid JSON: at offset %d want ',' or '}'", p.i)
		}
		break
	}
	if !unknown {
		return p.b[start:p.i], nil
	}
	size := 2
	for _, s := range p.spans {
		size += s.end - s.start + 1
	}
	out := make([]byte, 0, size)
	out = append(out, '{')
	for i, s := range p.spans {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, p.b[s.start:s.end]...)
	}
	return append(out, '}'), nil
}

// str scans a JSON string at p.i and returns the bounds of its contents
// (without quotes) and whether it holds escapes.
func (p *rowsParser) str() (start, end int, escaped bool, err *rowError) {
	if p.peek() != '"' {
		return 0, 0, false, p.fail("", "want a string at offset %d", p.i)
	}
	p.i++
	start = p.i
	high := false
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			end = p.i
			p.i++
			if high && !utf8.Valid(p.b[start:end]) {
				return 0, 0, false, p.fail("", "invalid UTF-8 in a string at offset %d", start)
			}
			return start, end, escaped, nil
		case c == '\\':
			escaped = true
			if p.i+1 >= len(p.b) {
				return 0, 0, false, p.fail("", "unterminated string at offset %d", start)
			}
			switch p.b[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(p.b) {
					return 0, 0, false, p.fail("", "bad \\u escape at offset %d", p.i)
				}
				for _, h := range p.b[p.i+2 : p.i+6] {
					if !isHex(h) {
						return 0, 0, false, p.fail("", "bad \\u escape at offset %d", p.i)
					}
				}
				p.i += 6
			default:
				return 0, 0, false, p.fail("", "bad escape at offset %d", p.i)
			}
		case c < 0x20:
			return 0, 0, false, p.fail("", "control character in a string at offset %d", p.i)
		default:
			if c >= 0x80 {
				high = true
			}
			p.i++
		}
	}
	return 0, 0, false, p.fail("", "unterminated string at offset %d", start)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// unescape decodes a quoted JSON string known to be valid.
func unescape(quoted []byte) string {
	var s string
	_ = json.Unmarshal(quoted, &s)
	return s
}

// number scans a JSON number and returns its bounds.
func (p *rowsParser) number() (int, int, bool) {
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.peek() == '0' {
		p.i++
	} else if digits() == 0 {
		return start, p.i, false
	}
	if p.peek() == '.' {
		p.i++
		if digits() == 0 {
			return start, p.i, false
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if digits() == 0 {
			return start, p.i, false
		}
	}
	return start, p.i, true
}

func (p *rowsParser) literal(lit string) bool {
	if len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit {
		p.i += len(lit)
		return true
	}
	return false
}

// value checks the value at p.i against column col.
func (p *rowsParser) value(n, col int) *rowError {
	kind := p.sc.kinds[col]
	name := p.sc.def.Columns[col].Name
	target := func() string { return fmt.Sprintf("rows[%d].%s", n, name) }
	bad := func(what string) *rowError {
		return p.fail(target(), "rows[%d]: column %q (%s): %s", n, name, kind, what)
	}
	switch c := p.peek(); {
	case c == 'n':
		if !p.literal("null") {
			return bad("invalid JSON literal")
		}
		return nil
	case c == 't' || c == 'f':
		if !p.literal("true") && !p.literal("false") {
			return bad("invalid JSON literal")
		}
		if kind != kindBoolean {
			return bad("a boolean does not fit this column")
		}
		return nil
	case c == '"':
		s, e, esc, err := p.str()
		if err != nil {
			return bad(err.msg)
		}
		switch kind {
		case kindString:
			if p.maxStr > 0 && e-s > p.maxStr {
				text := p.b[s:e]
				if esc {
					text = []byte(unescape(p.b[s-1 : e+1]))
				}
				if units := utf16Len(text); units > p.maxStr {
					return bad(fmt.Sprintf("a string of %d characters is longer than the maximum of %d", units, p.maxStr))
				}
			}
			return nil
		case kindDateTime:
			if !esc && fastISODateTime(p.b[s:e]) {
				return nil
			}
			v := string(p.b[s:e])
			if esc {
				v = unescape(p.b[s-1 : e+1])
			}
			if !parseDateTime(v) {
				return bad(fmt.Sprintf("%q is not a date and time", v))
			}
			return nil
		default:
			return bad("a string does not fit this column")
		}
	case c == '-' || c >= '0' && c <= '9':
		s, e, ok := p.number()
		if !ok {
			return bad("invalid JSON number")
		}
		return p.checkNumber(kind, p.b[s:e], bad)
	case c == '{' || c == '[':
		return bad("an object or array does not fit any column")
	default:
		return bad("invalid JSON value")
	}
}

// A Decimal column is Power BI's fixed decimal number: a 64-bit count of
// 1/10,000ths, so ±922,337,203,685,477.5807. A value with more places is
// rounded half away from zero to 4, so it fits when its magnitude is below
// decimalLimit (which would round up past the range).
var decimalLimit, _ = new(big.Rat).SetString("922337203685477.58075")

// decimalFits reports whether a JSON number fits a Decimal column: far
// from the edge a float64 decides, near it the exact value.
func decimalFits(num []byte) bool {
	f, err := strconv.ParseFloat(string(num), 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return false
	case math.Abs(f) < 9.2e14:
		return true
	case math.Abs(f) > 9.3e14:
		return false
	}
	q, ok := new(big.Rat).SetString(string(num))
	return ok && q.Abs(q).Cmp(decimalLimit) < 0
}

func (p *rowsParser) checkNumber(kind colKind, num []byte, bad func(string) *rowError) *rowError {
	switch kind {
	case kindInt64:
		v, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil {
			f, ferr := strconv.ParseFloat(string(num), 64)
			if ferr != nil || f != math.Trunc(f) || f <= math.MinInt64 || f >= math.MaxInt64 {
				return bad(fmt.Sprintf("%s is not an Int64", num))
			}
			return nil
		}
		if v == math.MaxInt64 || v == math.MinInt64 {
			return bad("Int64.MaxValue and Int64.MinValue are not allowed")
		}
		return nil
	case kindDouble:
		f, err := strconv.ParseFloat(string(num), 64)
		if err != nil || math.IsInf(f, 0) || f == math.MaxFloat64 || f == -math.MaxFloat64 {
			return bad(fmt.Sprintf("%s is not a finite Double (Double.MaxValue and Double.MinValue are not allowed)", num))
		}
		return nil
	case kindDecimal:
		if !decimalFits(num) {
			return bad(fmt.Sprintf("%s is outside the range of a Decimal column (a fixed decimal number, ±922,337,203,685,477.5807)", num))
		}
		return nil
	default:
		return bad("a number does not fit this column")
	}
}

// skipValue skips any JSON value (for keys that name no column).
func (p *rowsParser) skipValue(n int, name string) *rowError {
	bad := func() *rowError {
		return p.fail(fmt.Sprintf("rows[%d].%s", n, name), "rows[%d]: key %q: invalid JSON value at offset %d", n, name, p.i)
	}
	switch c := p.peek(); {
	case c == 'n':
		if !p.literal("null") {
			return bad()
		}
	case c == 't':
		if !p.literal("true") {
			return bad()
		}
	case c == 'f':
		if !p.literal("false") {
			return bad()
		}
	case c == '"':
		if _, _, _, err := p.str(); err != nil {
			return bad()
		}
	case c == '-' || c >= '0' && c <= '9':
		if _, _, ok := p.number(); !ok {
			return bad()
		}
	case c == '{' || c == '[':
		start := p.i
		depth := 0
		for p.i < len(p.b) {
			switch p.b[p.i] {
			case '"':
				if _, _, _, err := p.str(); err != nil {
					return bad()
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			p.i++
			if depth == 0 {
				if !json.Valid(p.b[start:p.i]) {
					return bad()
				}
				return nil
			}
		}
		return bad()
	default:
		return bad()
	}
	return nil
}

// utf16Len counts UTF-16 code units, the unit of .NET string lengths.
func utf16Len(b []byte) int {
	n := 0
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		n += utf16.RuneLen(r) // 1 for utf8.RuneError too
	}
	return n
}

// dateTimeLayouts are the forms accepted for DateTime values: ISO 8601 with
// or without zone and fraction, date only, and the US forms of Microsoft's
// examples ("07/30/2014"). The service's exact list is not documented.
var dateTimeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
	"01/02/2006",
	"01/02/2006 15:04:05",
	"1/2/2006",
	"1/2/2006 15:04:05",
	"1/2/2006 3:04:05 PM",
}

// fastISODateTime accepts YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM] without
// allocating (the common case); anything else goes to parseDateTime.
func fastISODateTime(b []byte) bool {
	num := func(i, n, lo, hi int) bool {
		v := 0
		for _, c := range b[i : i+n] {
			if c < '0' || c > '9' {
				return false
			}
			v = v*10 + int(c-'0')
		}
		return v >= lo && v <= hi
	}
	if len(b) < 19 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != ' ') || b[13] != ':' || b[16] != ':' {
		return false
	}
	if !num(0, 4, 1, 9999) || !num(5, 2, 1, 12) || !num(8, 2, 1, daysIn(b)) || !num(11, 2, 0, 23) || !num(14, 2, 0, 59) || !num(17, 2, 0, 59) {
		return false
	}
	i := 19
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start || i-start > 9 {
			return false
		}
	}
	switch {
	case i == len(b):
		return true
	case b[i] == 'Z' && i+1 == len(b):
		return true
	case (b[i] == '+' || b[i] == '-') && len(b)-i == 6 && b[i+3] == ':':
		return num(i+1, 2, 0, 23) && num(i+4, 2, 0, 59)
	}
	return false
}

// daysIn is the number of days in the month of an ISO date whose year and
// month digits are already known to be digits (31 when they are not).
func daysIn(b []byte) int {
	y := int(b[0]-'0')*1000 + int(b[1]-'0')*100 + int(b[2]-'0')*10 + int(b[3]-'0')
	m := int(b[5]-'0')*10 + int(b[6]-'0')
	if m < 1 || m > 12 {
		return 31
	}
	return time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

func parseDateTime(v string) bool {
	for _, l := range dateTimeLayouts {
		if _, err := time.Parse(l, v); err == nil {
			return true
		}
	}
	return false
}
