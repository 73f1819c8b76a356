// Package schema maps events onto rows of a Power BI push table: it finds
// each column's value by a path into the event, coerces it to the column's
// Power BI type, checks Power BI's value rules, and writes the row as JSON.
// It is pure: no I/O, no goroutines.
//
// # Events
//
// An event is one JSON object (one row) or a JSON array of objects (one row
// each; an empty array gives none). Anything else, or invalid JSON, fails the
// whole event (rules "shape" and "syntax") and gives no rows. The whole event
// is validated, including the parts no column reads. When a key appears twice
// in an object the last one wins, as in encoding/json.
//
// # Paths
//
// A column's From is a dotted path ("device.id"). A segment that is a number
// indexes into an array ("readings.0.value") and also matches an object key
// of that name. A backslash escapes ".", "@" or "\" in a key ("cpu\.usage").
// An empty From reads the key equal to the column name, taken literally.
// Paths starting with "@" read source metadata through Meta: @key, @topic,
// @partition, @offset, @timestamp and @headers.NAME; without metadata (stdin)
// they are missing.
//
// # Missing values
//
// A value is missing when its path is absent or null, or when it is the
// empty string in a column that is not String. A missing value takes the
// column's default; failing that a required column fails the object (rule
// "required"), and any other column is written as null. Every row holds every
// configured column, in order.
//
// # Coercions
//
// Int64: JSON numbers and numeric strings with an integral value ("3", 3.0,
// 1e3; 3.5 fails with rule "type"). Power BI rejects Int64.MaxValue and
// Int64.MinValue, so the range is -(2^63-1) .. 2^63-2 (rule "range").
//
// Double: numbers and numeric strings; beyond ±MaxFloat64, or exactly
// ±MaxFloat64 (which Power BI rejects), fails with "range". A JSON number is
// written as it was sent; a numeric string in Go's shortest form. "NaN" and
// "Infinity" are not numbers.
//
// Decimal (Power BI's fixed decimal number: scale 4, within
// ±922,337,203,685,477.5807): numbers and numeric strings, computed
// exactly in decimal (no float rounding), rounded half away from zero to 4
// fractional digits rather than rejected (sensors send more digits than a
// fixed decimal keeps); a result outside that range fails with "range".
//
// Numeric strings may carry surrounding white space, a leading "+", leading
// zeros, or a bare "." (" +.5 "); hex, underscores, NaN and Inf are refused.
//
// Boolean: true and false; the strings "true" and "false" in any case; the
// numbers 0 and 1 and the strings "0" and "1". Anything else fails with "type".
//
// DateTime: RFC 3339 strings ("2026-11-28T07:10:21.123+01:00"), also with a
// space or "t" before the time, "z" for UTC, no zone (read as UTC), or a date
// alone (midnight UTC); numbers and numeric strings are epoch seconds or
// milliseconds per Config.EpochUnit. Years 0001-9999 only. The row holds RFC
// 3339 UTC with exactly three fractional digits ("2026-11-28T06:10:21.123Z");
// digits below the millisecond are dropped (Power BI keeps 1/300 s).
//
// String: strings; numbers as written (1.50 gives "1.50"); booleans as "true"
// or "false". Objects and arrays fail with "type". Length is counted in UTF-16
// code units, as .NET and so Power BI count characters (one for "é", two for
// "😀"); over 4,000 the object fails with "length", or with string_overflow:
// truncate the string is cut to 4,000 units without splitting a character.
// Invalid UTF-8 and lone surrogates become U+FFFD, as in encoding/json.
//
// # Types
//
// Column types are case-insensitive with aliases; CanonicalType gives Power
// BI's name (Int64, Double, Boolean, DateTime, String, Decimal), which table
// provisioning must use.
package schema
