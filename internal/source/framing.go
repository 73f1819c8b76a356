package source

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// The rule for invalid input, the same on every source (stdin, Kafka,
// HTTP). A source frames its input into events its own way (lines, records,
// array elements) and then passes each event through checkEvent:
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

// ErrInvalidUTF8 is the Event.Err (wrapped) of an event that is not valid
// UTF-8, which JSON requires.
var ErrInvalidUTF8 = errors.New("event is not valid UTF-8")

// ErrEmptyArray is the Event.Err (wrapped) of an event that is an empty JSON
// array: it holds no object, so it would make no row.
var ErrEmptyArray = errors.New("event is an empty array: no object, no row")

// utf8BOM is stripped at the start of a stream, body or record.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// stripBOM returns b without a leading UTF-8 byte order mark.
func stripBOM(b []byte) []byte { return bytes.TrimPrefix(b, utf8BOM) }

// checkEvent applies the rule above to one framed event (BOM already
// stripped where the source's stream starts) and returns nil, or the error
// (ErrInvalidUTF8, ErrEmptyArray) that sends it to the dead letter. The
// caller wraps it with the event's position.
func checkEvent(data []byte) error {
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
