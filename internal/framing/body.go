package framing

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// An ingest body is framed while it is read, never after: events are
// counted as they come, and reading stops at the first one past a bound, so
// what one request holds is bounded by the configuration whatever the
// caller sends (a 16 MiB body of "{}" lines is refused after reading about
// 30 KiB, not after 5.6 million slices were made of it).

// BodyReadChunk is the buffer a body is read through, and the size of the
// arenas NDJSON lines are copied into.
const BodyReadChunk = 64 << 10

// Kind is the format of an ingest body.
type Kind int

const (
	// NDJSON is one JSON object (or array) per line.
	NDJSON Kind = iota
	// JSON is one object, or one array of objects.
	JSON
)

// Event is one event framed from a body: its data and, when the event
// breaks the rule every source follows (Check), why it goes to the dead
// letter.
type Event struct {
	Data []byte
	Err  error
}

// Bounds bound a body while it is read.
type Bounds struct {
	// MaxEvents is the most events a request may hold (the smaller of
	// max_events_per_request and max_unacked_events); past it: 413.
	MaxEvents int
	// EventsLimit names the bound in the 413 message.
	EventsLimit string
	// Room, when not nil, says whether n events fit in flight now; past
	// it, events are counted but no longer kept, and the request is
	// answered 429 (413 if it passes MaxEvents too).
	Room func(n int) bool
	// ReadChunk is the read buffer and arena block size: BodyReadChunk
	// when 0; smaller in tests to exercise the edges.
	ReadChunk int
}

// TooManyEventsError is returned by Body past Bounds.MaxEvents.
type TooManyEventsError struct {
	Limit int
	Name  string
}

func (e *TooManyEventsError) Error() string {
	return fmt.Sprintf("more events than %s (%d): split the request", e.Name, e.Limit)
}

// ErrNoRoom is returned by Body when the request's events do not fit in
// flight: the pipeline cannot take the request now.
var ErrNoRoom = errors.New("no room in flight for the request's events")

// FormatError is a malformed body (400).
type FormatError struct{ err error }

func (e *FormatError) Error() string { return e.err.Error() }

func badBody(format string, args ...any) error {
	return &FormatError{fmt.Errorf(format, args...)}
}

// Body reads an ingest body of the given kind from r, a leading UTF-8 BOM
// stripped, and returns its events. It stops at the first event past a
// bound (*TooManyEventsError, ErrNoRoom), at the first malformed line or
// element (*FormatError), or at a read error (returned as it is: a
// *http.MaxBytesError, a timeout).
func Body(r io.Reader, kind Kind, bounds Bounds) ([]Event, error) {
	chunk := bounds.ReadChunk
	if chunk <= 0 {
		chunk = BodyReadChunk
	}
	br := bufio.NewReaderSize(r, chunk)
	if head, _ := br.Peek(len(BOM)); bytes.Equal(head, BOM) {
		_, _ = br.Discard(len(BOM))
	}
	var (
		events []Event
		count  int  // events framed, kept or not
		noRoom bool // some did not fit in flight: count the rest, keep none
		err    error
	)
	add := func(data []byte) error {
		count++
		if count > bounds.MaxEvents {
			return &TooManyEventsError{Limit: bounds.MaxEvents, Name: bounds.EventsLimit}
		}
		if noRoom = noRoom || (bounds.Room != nil && !bounds.Room(count)); noRoom {
			// The answer will be 429 unless the request turns out to be
			// over MaxEvents (413: a retry could never pass), so read on
			// to tell, but keep nothing.
			events = nil
			return nil
		}
		ev := Event{Data: data}
		if bad := Check(data); bad != nil {
			ev.Err = bad
		}
		events = append(events, ev)
		return nil
	}
	if kind == JSON {
		err = frameJSON(br, add)
	} else {
		err = frameNDJSON(br, chunk, add)
	}
	switch {
	case err != nil:
		return nil, err
	case noRoom:
		return nil, ErrNoRoom
	}
	return events, nil
}

// frameNDJSON passes each non-blank line of br to add: a JSON object or
// array per line, checked as it comes.
func frameNDJSON(br *bufio.Reader, chunk int, add func([]byte) error) error {
	a := arena{chunk: chunk}
	n := 0
	for line := 1; ; line++ {
		text, err := a.readLine(br)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		// JSON's whitespace only: a line with another space around its
		// value (NBSP, NEL, \v) is not JSON, as stdin's mapper says too.
		text = bytes.Trim(text, " \t\r\n")
		if len(text) > 0 {
			if text[0] != '{' && text[0] != '[' {
				return badBody("line %d: not a JSON object or array", line)
			}
			if !json.Valid(text) {
				return badBody("line %d: invalid JSON: %v", line, jsonError(text))
			}
			if aerr := add(text); aerr != nil {
				return aerr
			}
			n++
		}
		if err != nil { // io.EOF
			break
		}
	}
	if n == 0 {
		return badBody("empty body: no events")
	}
	return nil
}

// jsonError returns the decoder's error for invalid JSON data.
func jsonError(data []byte) error {
	var v json.RawMessage
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	return errors.New("invalid JSON")
}

// frameJSON passes the events of an application/json body to add: the body
// itself when it is an object, each element when it is an array of objects.
func frameJSON(br *bufio.Reader, add func([]byte) error) error {
	first, err := firstByte(br)
	if errors.Is(err, io.EOF) {
		return badBody("empty body: no events")
	}
	if err != nil {
		return err
	}
	dec := json.NewDecoder(br)
	switch first {
	case '{':
		var obj json.RawMessage
		if err := dec.Decode(&obj); err != nil {
			return jsonBodyError("", err)
		}
		if err := add(obj); err != nil {
			return err
		}
	case '[':
		if _, err := dec.Token(); err != nil {
			return jsonBodyError("", err)
		}
		i := 0
		for ; dec.More(); i++ {
			var elem json.RawMessage
			if err := dec.Decode(&elem); err != nil {
				return jsonBodyError("element "+strconv.Itoa(i)+": ", err)
			}
			if elem[0] != '{' {
				return badBody("element %d: not a JSON object", i)
			}
			if err := add(elem); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // the closing ']'
			return jsonBodyError("element "+strconv.Itoa(i)+": ", err)
		}
		if i == 0 {
			return badBody("empty array: no events")
		}
	default:
		return badBody("JSON body must be an object or an array of objects")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return jsonBodyError("after the body: ", err)
		}
		return badBody("data after the JSON body: send one object or one array")
	}
	return nil
}

// jsonBodyError turns a decoding error into a 400 naming where it is, or
// returns a read error as it is.
func jsonBodyError(where string, err error) error {
	var syntax *json.SyntaxError
	switch {
	case errors.As(err, &syntax):
		return badBody("%sinvalid JSON: %v", where, err)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badBody("%sinvalid JSON: unexpected end of body", where)
	}
	var unmarshal *json.UnmarshalTypeError
	if errors.As(err, &unmarshal) {
		return badBody("%sinvalid JSON: %v", where, err)
	}
	return err
}

// firstByte returns the first byte of br that is not JSON whitespace,
// leaving it unread.
func firstByte(br *bufio.Reader) (byte, error) {
	for {
		c, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c, br.UnreadByte()
	}
}

// arena holds the lines of one body: each line is copied once into a
// shared block, so an event costs its bytes and a slice header, not an
// allocation of its own. A block is never reused; it is freed when no
// event points into it any more.
type arena struct {
	block []byte
	chunk int // the size of a new block (when a line fits in it)
}

// readLine copies the next line of br (without its '\n') into the arena
// and returns it; err is io.EOF after the last line.
func (a *arena) readLine(br *bufio.Reader) ([]byte, error) {
	start := len(a.block)
	for {
		frag, err := br.ReadSlice('\n')
		if len(a.block)+len(frag) > cap(a.block) {
			// Start a new block and carry the line's head over.
			head := a.block[start:]
			block := make([]byte, 0, max(a.chunk, 2*(len(head)+len(frag))))
			a.block = append(block, head...)
			start = 0
		}
		a.block = append(a.block, frag...)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil && !errors.Is(err, io.EOF):
			return nil, err
		}
		line := a.block[start:len(a.block):len(a.block)]
		line = bytes.TrimSuffix(line, []byte{'\n'})
		return line, err
	}
}
