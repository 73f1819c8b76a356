package reduce

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/pushd/pushd/internal/schema"
)

// layout reads the rows that schema.Mapper writes: a JSON object holding
// every column of the schema, in order, as "name":value with no spaces;
// DateTime values are "YYYY-MM-DDTHH:MM:SS.mmmZ". Knowing that shape, a row
// splits into its values in one pass, without a general JSON parser.
type layout struct {
	names []string // column names
	keys  [][]byte // "name": of each column, for output rows
	types []string // canonical types
	index map[string]int
}

func newLayout(cols []schema.Column) *layout {
	l := &layout{index: make(map[string]int, len(cols))}
	for i, c := range cols {
		t, _ := schema.CanonicalType(c.Type)
		l.names = append(l.names, c.Name)
		l.keys = append(l.keys, quotedName(c.Name))
		l.types = append(l.types, t)
		l.index[strings.ToLower(c.Name)] = i
	}
	return l
}

// col returns the index of a column by name (case-insensitive), -1 if none.
func (l *layout) col(name string) int {
	if i, ok := l.index[strings.ToLower(name)]; ok {
		return i
	}
	return -1
}

var errRowShape = errors.New("row does not have the shape the schema writes")

// split sets vals[i] to the raw JSON value of column i of row.
func (l *layout) split(row []byte, vals [][]byte) error {
	if len(row) < 2 || row[0] != '{' {
		return errRowShape
	}
	pos := 1
	for i := range l.names {
		if i > 0 {
			if pos >= len(row) || row[pos] != ',' {
				return errRowShape
			}
			pos++
		}
		// The key: the mapper writes the columns in order, so only skip it.
		if pos >= len(row) || row[pos] != '"' {
			return errRowShape
		}
		if pos = stringEnd(row, pos+1); pos < 0 || pos+1 >= len(row) || row[pos] != ':' {
			return errRowShape
		}
		pos++
		start := pos
		if row[pos] == '"' {
			pos = stringEnd(row, pos+1)
			if pos < 0 {
				return errRowShape
			}
		} else {
			for pos < len(row) && row[pos] != ',' && row[pos] != '}' {
				pos++
			}
		}
		vals[i] = row[start:pos]
	}
	if pos != len(row)-1 || row[pos] != '}' {
		return errRowShape
	}
	return nil
}

// stringEnd returns the offset just past the closing quote of the string
// whose content starts at i, or -1.
func stringEnd(b []byte, i int) int {
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		q := i + j
		// The quote is escaped if an odd number of backslashes precede it.
		n := 0
		for k := q - 1; k >= i && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		i = q + 1
	}
}

func isNull(v []byte) bool { return len(v) == 4 && v[0] == 'n' }

// parseMillis reads a DateTime value as the mapper writes it,
// "YYYY-MM-DDTHH:MM:SS.mmmZ" with its quotes, into milliseconds since the
// Unix epoch.
func parseMillis(v []byte) (int64, bool) {
	if len(v) != 26 || v[0] != '"' || v[25] != '"' || v[5] != '-' || v[8] != '-' || v[11] != 'T' ||
		v[14] != ':' || v[17] != ':' || v[20] != '.' || v[24] != 'Z' {
		return 0, false
	}
	num := func(i, n int) int64 {
		var x int64
		for _, c := range v[i : i+n] {
			if c < '0' || c > '9' {
				return -1
			}
			x = x*10 + int64(c-'0')
		}
		return x
	}
	y, mo, d := num(1, 4), num(6, 2), num(9, 2)
	h, mi, s, ms := num(12, 2), num(15, 2), num(18, 2), num(21, 3)
	if y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 59 || ms < 0 {
		return 0, false
	}
	days := schema.DaysFromCivil(y, mo, d)
	return ((days*24+h)*60+mi)*60_000 + s*1000 + ms, true
}

// appendMillis appends ms as a quoted DateTime value like the mapper's.
func appendMillis(dst []byte, ms int64) []byte {
	const msPerDay = 86_400_000
	days, rem := ms/msPerDay, ms%msPerDay
	if rem < 0 {
		rem += msPerDay
		days--
	}
	y, m, d := schema.CivilFromDays(days)
	var b [26]byte
	put := func(i int, v int64, n int) {
		for j := n - 1; j >= 0; j-- {
			b[i+j] = byte('0' + v%10)
			v /= 10
		}
	}
	b[0], b[5], b[8], b[11], b[14], b[17], b[20], b[24], b[25] = '"', '-', '-', 'T', ':', ':', '.', 'Z', '"'
	put(1, y, 4)
	put(6, m, 2)
	put(9, d, 2)
	put(12, rem/3_600_000, 2)
	put(15, rem/60_000%60, 2)
	put(18, rem/1000%60, 2)
	put(21, rem%1000, 3)
	return append(dst, b[:]...)
}

// parseInt reads an Int64 value as the mapper writes it (an optional minus
// and digits).
func parseInt(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 20 {
		return 0, false
	}
	neg := v[0] == '-'
	if neg {
		v = v[1:]
		if len(v) == 0 {
			return 0, false
		}
	}
	var x int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n := x*10 + int64(c-'0')
		if n < x {
			return 0, false
		}
		x = n
	}
	if neg {
		x = -x
	}
	return x, true
}

// parseFloat reads a number (Double, Decimal, or Int64) value.
func parseFloat(v []byte) (float64, bool) {
	if n, ok := parseInt(v); ok && n > -1<<53 && n < 1<<53 {
		return float64(n), true
	}
	f, err := strconv.ParseFloat(string(v), 64)
	return f, err == nil
}
