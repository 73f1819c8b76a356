// Package framing cuts the input pushd takes from outside into events: the
// lines of NDJSON on standard input (Lines), the body of an HTTP ingest
// request (Body), and the rule every source applies to each event it
// framed (Check).
//
// It depends on nothing but the standard library, on purpose: these are the
// parsers of untrusted input, and a fuzz target's speed falls with the size
// of the program it is linked into (Go's fuzzer copies and compares every
// coverage counter of the test binary on every execution), so a small
// package is fuzzed several times faster than the sources that use it.
package framing

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// The rule for invalid input, the same on every source (stdin, Kafka,
// HTTP). A source frames its input into events its own way (lines, records,
// array elements) and then passes each event through Check:
//
//   - A UTF-8 byte order mark at the start of a stream (stdin), of a
//     request body (HTTP) or of a record (Kafka) is stripped: editors and
//     PowerShell on Windows write one, and it is not part of the data.
//   - An event that is not valid UTF-8 (JSON requires it) is not mapped: it
//     goes to the dead letter as it is, its bytes kept exactly (in
//     "event_base64"), and the stream goes on.
//   - An event that is an empty array holds no object, so no row: it goes
//     to the dead letter too, rather than be acknowledged as if a row had
//     landed. (An HTTP request whose body holds no event at all, such as a
//     JSON body "[]" or a blank NDJSON body, is answered 400: there the
//     caller is still there to be told.)

// ErrInvalidUTF8 is the error (wrapped) of an event that is not valid
// UTF-8, which JSON requires.
var ErrInvalidUTF8 = errors.New("event is not valid UTF-8")

// ErrEmptyArray is the error (wrapped) of an event that is an empty JSON
// array: it holds no object, so it would make no row.
var ErrEmptyArray = errors.New("event is an empty array: no object, no row")

// BOM is the UTF-8 byte order mark, stripped at the start of a stream, body
// or record.
var BOM = []byte{0xEF, 0xBB, 0xBF}

// StripBOM returns b without a leading UTF-8 byte order mark.
func StripBOM(b []byte) []byte { return bytes.TrimPrefix(b, BOM) }

// Check applies the rule above to one framed event (BOM already stripped
// where the source's stream starts) and returns nil, or the error
// (ErrInvalidUTF8, ErrEmptyArray) that sends it to the dead letter. The
// caller wraps it with the event's position.
func Check(data []byte) error {
	if !utf8.Valid(data) {
		return ErrInvalidUTF8
	}
	if isEmptyArray(data) {
		return ErrEmptyArray
	}
	return nil
}

// isEmptyArray reports whether data is "[" and "]" with only JSON
// whitespace around and between them.
func isEmptyArray(data []byte) bool {
	data = bytes.TrimSpace(data)
	if len(data) < 2 || data[0] != '[' || data[len(data)-1] != ']' {
		return false
	}
	return len(bytes.TrimSpace(data[1:len(data)-1])) == 0
}
