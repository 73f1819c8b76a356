package schema

import "math"

// numberSyntax checks a numeric literal: JSON's number grammar, loosened for
// numeric strings to allow a leading "+", leading zeros, and a missing digit
// before or after the point ("+5", "007", ".5", "5."). strict reports that b
// is a valid JSON number as it is, so it can be copied to the row.
func numberSyntax(b []byte) (strict, ok bool) {
	i := 0
	strict = true
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		if b[i] == '+' {
			strict = false
		}
		i++
	}
	intStart := i
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	intDigits := i - intStart
	if intDigits > 1 && b[intStart] == '0' {
		strict = false
	}
	fracDigits := 0
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		fracDigits = i - start
		if fracDigits == 0 {
			strict = false
		}
	}
	if intDigits == 0 {
		if fracDigits == 0 {
			return false, false
		}
		strict = false
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == start {
			return false, false
		}
	}
	if i != len(b) {
		return false, false
	}
	return strict, true
}

// dec is an exact decimal: value = ±0.d1d2d3... × 10^point, with digits free
// of leading and trailing zeros (empty for zero).
type dec struct {
	neg    bool
	digits []byte
	point  int
}

// expLimit caps exponents: beyond it every value is out of range or zero.
const expLimit = 1 << 20

// parseDec parses a literal accepted by numberSyntax, storing digits in buf.
func parseDec(b, buf []byte) dec {
	var d dec
	i := 0
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		d.neg = b[i] == '-'
		i++
	}
	digits := buf[:0]
	point := 0
	seenPoint := false
	for ; i < len(b); i++ {
		c := b[i]
		if c == '.' {
			seenPoint = true
			continue
		}
		if !isDigit(c) {
			break
		}
		if c == '0' && len(digits) == 0 {
			if seenPoint {
				point--
			}
			continue
		}
		digits = append(digits, c)
		if !seenPoint {
			point++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		neg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			neg = b[i] == '-'
			i++
		}
		exp := 0
		for ; i < len(b); i++ {
			if exp < expLimit {
				exp = exp*10 + int(b[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
		point += exp
	}
	for len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
	}
	if len(digits) == 0 {
		return dec{}
	}
	d.digits = digits
	d.point = point
	return d
}

// int64Value returns the value of an integral d. Power BI rejects exactly
// Int64.MaxValue and Int64.MinValue, so those count as out of range.
func (d dec) int64Value() (v int64, integral, inRange bool) {
	if len(d.digits) == 0 {
		return 0, true, true
	}
	if len(d.digits) > d.point {
		return 0, false, true
	}
	if d.point > 19 {
		return 0, true, false
	}
	var u uint64
	for i := 0; i < d.point; i++ {
		c := byte('0')
		if i < len(d.digits) {
			c = d.digits[i]
		}
		u = u*10 + uint64(c-'0')
	}
	if u > math.MaxInt64 || (u == math.MaxInt64 && !d.neg) {
		return 0, true, false
	}
	if d.neg {
		return -int64(u), true, true
	}
	return int64(u), true, true
}

// truncated returns d × 10^shift with its fraction dropped (toward zero),
// and false when it does not fit in 18 digits.
func (d dec) truncated(shift int) (int64, bool) {
	p := d.point + shift
	if len(d.digits) == 0 || p <= 0 {
		return 0, true
	}
	if p > 18 {
		return 0, false
	}
	var v int64
	for i := 0; i < p; i++ {
		c := byte('0')
		if i < len(d.digits) {
			c = d.digits[i]
		}
		v = v*10 + int64(c-'0')
	}
	if d.neg {
		v = -v
	}
	return v, true
}

// Decimal columns are Power BI's fixed decimal number: a 64-bit integer
// count of 1/10,000ths, so scale 4 and a range of
// ±922,337,203,685,477.5807 (decimalMaxScaled / 10^4).
const (
	decimalScale     = 4
	decimalIntDigits = 15
	decimalMaxScaled = "9223372036854775807" // decimalIntDigits+decimalScale digits
	// DecimalRange is the Decimal range in words, for messages.
	DecimalRange = "±922,337,203,685,477.5807"
)

// appendDecimal rounds d half away from zero to 4 fractional digits and
// appends it as a JSON number; ok is false when the result is outside
// ±922,337,203,685,477.5807 (Power BI's fixed decimal).
func appendDecimal(dst []byte, d dec) ([]byte, bool) {
	keep := d.point + decimalScale // digits that survive rounding
	digits, point := d.digits, d.point
	var carry [1]byte
	if len(digits) > keep {
		if keep < 0 {
			digits = nil
		} else {
			up := digits[keep] >= '5'
			digits = digits[:keep]
			if up {
				// digits is parseDec's scratch buffer: increment in place.
				i := len(digits) - 1
				for i >= 0 && digits[i] == '9' {
					i--
				}
				if i < 0 {
					carry[0] = '1'
					digits = carry[:]
					point++
				} else {
					digits[i]++
					digits = digits[:i+1]
				}
			}
		}
		for len(digits) > 0 && digits[len(digits)-1] == '0' {
			digits = digits[:len(digits)-1]
		}
	}
	if len(digits) == 0 {
		return append(dst, '0'), true
	}
	if !decimalFits(digits, point) {
		return dst, false
	}
	if d.neg {
		dst = append(dst, '-')
	}
	if point <= 0 {
		dst = append(dst, '0')
	} else {
		for i := 0; i < point; i++ {
			if i < len(digits) {
				dst = append(dst, digits[i])
			} else {
				dst = append(dst, '0')
			}
		}
	}
	if len(digits) > point {
		dst = append(dst, '.')
		for i := point; i < 0; i++ {
			dst = append(dst, '0')
		}
		dst = append(dst, digits[max(point, 0):]...)
	}
	return dst, true
}

// decimalFits reports whether 0.digits × 10^point, already rounded to 4
// places, is at most decimalMaxScaled / 10^4 in magnitude.
func decimalFits(digits []byte, point int) bool {
	if point < decimalIntDigits {
		return true
	}
	if point > decimalIntDigits {
		return false
	}
	// Same number of integer digits: compare the 19-digit scaled values.
	for i := 0; i < len(decimalMaxScaled); i++ {
		c := byte('0')
		if i < len(digits) {
			c = digits[i]
		}
		if c != decimalMaxScaled[i] {
			return c < decimalMaxScaled[i]
		}
	}
	return true
}
