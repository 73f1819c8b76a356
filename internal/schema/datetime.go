package schema

// Dates are handled in milliseconds since the Unix epoch, UTC. Power BI
// stores DateTime at a resolution of 1/300 s, so milliseconds lose nothing
// it keeps.

const (
	msPerDay = 86_400_000
	// minMillis and maxMillis bound .NET's DateTime: 0001-01-01 to 9999-12-31.
	minMillis = -62_135_596_800_000
	maxMillis = 253_402_300_799_999
)

// DaysFromCivil returns the days since 1970-01-01 of a proleptic Gregorian
// date (Howard Hinnant's algorithm).
func DaysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// CivilFromDays is the inverse of DaysFromCivil.
func CivilFromDays(z int64) (y, m, d int64) {
	z += 719468
	era := z
	if era < 0 {
		era -= 146096
	}
	era /= 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	if mp < 10 {
		m = mp + 3
	} else {
		m = mp - 9
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

func daysIn(y, m int64) int64 {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

func digits(b []byte, i, n int) (int64, bool) {
	var v int64
	for _, c := range b[i : i+n] {
		if !isDigit(c) {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// parseDateTime parses an RFC 3339 date-time into Unix milliseconds. It also
// accepts: a space or lower-case "t" between date and time, "z" for UTC, no
// zone at all (read as UTC), and a date alone ("2026-11-28", midnight UTC).
// Digits after the milliseconds are dropped. Years 0001-9999 only.
func parseDateTime(b []byte) (int64, bool) {
	if len(b) < 10 || b[4] != '-' || b[7] != '-' {
		return 0, false
	}
	y, ok1 := digits(b, 0, 4)
	mo, ok2 := digits(b, 5, 2)
	d, ok3 := digits(b, 8, 2)
	if !ok1 || !ok2 || !ok3 || y < 1 || mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) {
		return 0, false
	}
	ms := DaysFromCivil(y, mo, d) * msPerDay
	if len(b) == 10 {
		return ms, true
	}
	if len(b) < 19 || (b[10] != 'T' && b[10] != 't' && b[10] != ' ') || b[13] != ':' || b[16] != ':' {
		return 0, false
	}
	hh, ok1 := digits(b, 11, 2)
	mm, ok2 := digits(b, 14, 2)
	ss, ok3 := digits(b, 17, 2)
	if !ok1 || !ok2 || !ok3 || hh > 23 || mm > 59 || ss > 59 {
		return 0, false
	}
	ms += ((hh*60+mm)*60 + ss) * 1000
	i := 19
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && isDigit(b[i]) {
			if i-start < 3 {
				ms += int64(b[i]-'0') * [3]int64{100, 10, 1}[i-start]
			}
			i++
		}
		if i == start {
			return 0, false
		}
	}
	switch {
	case i == len(b):
	case (b[i] == 'Z' || b[i] == 'z') && i+1 == len(b):
	case (b[i] == '+' || b[i] == '-') && i+6 == len(b) && b[i+3] == ':':
		oh, ok1 := digits(b, i+1, 2)
		om, ok2 := digits(b, i+4, 2)
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0, false
		}
		off := (oh*60 + om) * 60_000
		if b[i] == '+' {
			ms -= off
		} else {
			ms += off
		}
	default:
		return 0, false
	}
	if ms < minMillis || ms > maxMillis {
		return 0, false
	}
	return ms, true
}

// appendDateTime appends ms as a quoted RFC 3339 UTC time with exactly three
// fractional digits: "2026-11-28T07:10:21.123Z". ms is within
// [minMillis, maxMillis].
func appendDateTime(dst []byte, ms int64) []byte {
	days := ms / msPerDay
	rem := ms % msPerDay
	if rem < 0 {
		rem += msPerDay
		days--
	}
	y, m, d := CivilFromDays(days)
	var b [26]byte
	b[0] = '"'
	put := func(i int, v int64, n int) {
		for j := n - 1; j >= 0; j-- {
			b[i+j] = byte('0' + v%10)
			v /= 10
		}
	}
	put(1, y, 4)
	b[5] = '-'
	put(6, m, 2)
	b[8] = '-'
	put(9, d, 2)
	b[11] = 'T'
	put(12, rem/3_600_000, 2)
	b[14] = ':'
	put(15, rem/60_000%60, 2)
	b[17] = ':'
	put(18, rem/1000%60, 2)
	b[20] = '.'
	put(21, rem%1000, 3)
	b[24] = 'Z'
	b[25] = '"'
	return append(dst, b[:]...)
}
