package source

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
)

// An ingest body is framed while it is read, never after: events are
// counted as they come, and reading stops at the first one past a bound, so
// what one request holds is bounded by the configuration whatever the
// caller sends (a 16 MiB body of "{}" lines is refused after reading about
// 30 KiB, not after 5.6 million slices were made of it).

// bodyReadChunk is the buffer a body is read through, and the size of the
// arenas NDJSON lines are copied into.
const bodyReadChunk = 64 << 10

// bodyEvent is one event framed from a body: its data and, when the event
// breaks the rule every source follows (checkEvent), why it goes to the
// dead letter.
type bodyEvent struct {
	data []byte
	err  error
}

// bodyBounds bound a body while it is read.
type bodyBounds struct {
	// maxEvents is the most events a request may hold (the smaller of
	// max_events_per_request and max_unacked_events); past it: 413.
	maxEvents int
	// eventsLimit names the bound in the 413 message.
	eventsLimit string
	// room, when not nil, says whether n events fit in flight now; past
	// it, events are counted but no longer kept, and the request is
	// answered 429 (413 if it passes maxEvents too).
	room func(n int) bool
	// readChunk is the read buffer and arena block size: bodyReadChunk
	// when 0; smaller in tests to exercise the edges.
	readChunk int
}

// errTooManyEvents is returned by frameBody past bodyBounds.maxEvents.
type errTooManyEvents struct {
	limit int
	name  string
}

func (e *errTooManyEvents) Error() string {
	return fmt.Sprintf("more events than %s (%d): split the request", e.name, e.limit)
}

// errNoRoom is returned by frameBody when the request's events do not fit
// in flight: the pipeline cannot take the request now.
var errNoRoom = errors.New("no room in flight for the request's events")

// errBodyFormat wraps a malformed body (400).
type errBodyFormat struct{ err error }

func (e *errBodyFormat) Error() string { return e.err.Error() }

func badBody(format string, args ...any) error {
	return &errBodyFormat{fmt.Errorf(format, args...)}
}

// frameBody reads an ingest body of the given kind from r, a leading UTF-8
// BOM stripped, and returns its events. It stops at the first event past a
// bound (errTooManyEvents, errNoRoom), at the first malformed line or
// element (errBodyFormat), or at a read error (returned as it is: a
// *http.MaxBytesError, a timeout).
func frameBody(r io.Reader, kind bodyKind, bounds bodyBounds) ([]bodyEvent, error) {
	chunk := bounds.readChunk
	if chunk <= 0 {
		chunk = bodyReadChunk
	}
	br := bufio.NewReaderSize(r, chunk)
	if head, _ := br.Peek(len(utf8BOM)); bytes.Equal(head, utf8BOM) {
		_, _ = br.Discard(len(utf8BOM))
	}
	var (
		events []bodyEvent
		count  int  // events framed, kept or not
		noRoom bool // some did not fit in flight: count the rest, keep none
		err    error
	)
	add := func(data []byte) error {
		count++
		if count > bounds.maxEvents {
			return &errTooManyEvents{limit: bounds.maxEvents, name: bounds.eventsLimit}
		}
		if noRoom = noRoom || (bounds.room != nil && !bounds.room(count)); noRoom {
			// The answer will be 429 unless the request turns out to be
			// over maxEvents (413: a retry could never pass), so read on
			// to tell, but keep nothing.
			events = nil
			return nil
		}
		ev := bodyEvent{data: data}
		if bad := checkEvent(data); bad != nil {
			ev.err = bad
		}
		events = append(events, ev)
		return nil
	}
	if kind == formatJSON {
		err = frameJSON(br, add)
	} else {
		err = frameNDJSON(br, chunk, add)
	}
	switch {
	case err != nil:
		return nil, err
	case noRoom:
		return nil, errNoRoom
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

// errNoBudget is returned by a reservation's reader when the body passes
// what the buffered-bytes budget has left.
var errNoBudget = errors.New("max_buffered_bytes reached")

// byteBudget bounds the request bodies the HTTP source holds at once, from
// their first byte read until their last event is acknowledged
// (max_buffered_bytes).
type byteBudget struct {
	mu    sync.Mutex
	used  int64
	limit int64
}

// take reserves n bytes, or returns false when they do not fit.
func (b *byteBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

// give returns n bytes to the budget.
func (b *byteBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// inUse returns the bytes reserved now.
func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// bodyReservation is one request's share of the budget: its declared
// length, taken before reading, or what was read so far for a body of
// unknown length (chunked).
type bodyReservation struct {
	budget   *byteBudget
	declared bool
	taken    atomic.Int64
	once     sync.Once
}

// reader returns r, taking budget for each read when the length was not
// declared.
func (res *bodyReservation) reader(r io.Reader) io.Reader {
	if res.declared {
		return r
	}
	return &budgetReader{r: r, res: res}
}

// release gives the reservation back; later calls do nothing.
func (res *bodyReservation) release() {
	res.once.Do(func() { res.budget.give(res.taken.Load()) })
}

type budgetReader struct {
	r   io.Reader
	res *bodyReservation
}

func (b *budgetReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		if !b.res.budget.take(int64(n)) {
			return 0, errNoBudget
		}
		b.res.taken.Add(int64(n))
	}
	return n, err
}
