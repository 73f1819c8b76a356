package framing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// Fuzz targets for the framing of the input pushd takes from outside: HTTP
// ingest bodies and stdin lines. Each holds the framing against a simple
// reference of the documented rule, and checks that nothing panics.
//
//	go test -run '^$' -fuzz FuzzFrameBody -fuzztime 10s ./internal/framing/
//	go test -run '^$' -fuzz FuzzLines -fuzztime 10s ./internal/framing/
//
// They live in this package, which imports nothing outside the standard
// library, because a fuzz target's speed falls with the size of the test
// binary: Go's fuzzer copies and compares every coverage counter of the
// binary on every execution. In internal/source (kafka-go, net/http,
// Prometheus) the same targets ran at a third of the speed.

// bodySeeds are real bodies: what the README's examples send, what the
// issue's measurements sent, and the malformed ones the tests refuse.
var bodySeeds = []string{
	`{"device":{"id":"dev-1"},"seq":1,"ts":"2026-11-28T00:00:00Z"}`,
	"{\"seq\":1}\n{\"seq\":2}\n",
	"{\"seq\":1}\r\n\r\n  \n[{\"seq\":2},{\"seq\":3}]",
	`[{"seq":1},{"seq":2}]`,
	"\xef\xbb\xbf{\"seq\":1}",
	"{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
	`[]`, "[]\n", ` [ ] `, `{"s":"\xff"}`, `{"s":"\ud800"}`,
	`{"seq":1}{"seq":2}`, `[{"seq":1},]`, `[1,2]`, `"text"`, `42`, ``, "\n\n",
	`{"truncated":`, "{\"a\":1}\nnot json\n", `[{"a":[[[[[[[[[[1]]]]]]]]]]}]`,
	// Not JSON whitespace around a line (NBSP, NEL, vertical tab):
	// refused as stdin's mapper refuses them, not trimmed.
	"\xc2\xa0{\"seq\":1}", "{\"seq\":1}\xc2\x85", "\v{}\f",
	// A line longer than the read buffer (BodyReadChunk in production,
	// 16..79 bytes in the fuzz) and a 1,000-line body of {} (the 16 MiB
	// body of tiny events, shrunk).
	"{\"pad\":\"" + strings.Repeat("p", 200) + "\"}\n{}\n", strings.Repeat("{}\n", 1000),
}

// FuzzFrameBody frames HTTP ingest bodies (NDJSON and JSON) and checks
// them against a reference framing: never a panic; every error a 400
// (FormatError) or a bound; an accepted body has 1..max events, exactly
// the reference's, each byte for byte the JSON the caller sent (it
// round-trips through encoding/json) and marked for the dead letter by the
// rule every source follows (Check). The same body read in pieces of
// fuzzed sizes through the size bound (as http.MaxBytesReader bounds it) and with the
// in-flight room bound is framed the same way: accepted only within both
// bounds, refused with the bound's error past them.
func FuzzFrameBody(f *testing.F) {
	for _, b := range bodySeeds {
		f.Add([]byte(b), false, uint8(3), uint8(2), uint16(40), []byte{5, 1}, uint8(0))
		f.Add([]byte(b), true, uint8(20), uint8(39), uint16(1000), []byte{63}, uint8(7))
	}
	f.Fuzz(func(t *testing.T, body []byte, asJSON bool, limit, room uint8, maxBytes uint16, pieces []byte, chunk uint8) {
		maxEvents := int(limit%32) + 1
		kind := NDJSON
		if asJSON {
			kind = JSON
		}
		// Whole: through a buffer larger than most inputs (not the 64 KiB
		// of BodyReadChunk, which would make each run allocate 128 KiB).
		bounds := Bounds{MaxEvents: maxEvents, EventsLimit: "max_events_per_request", ReadChunk: 4096}
		events, err := Body(bytes.NewReader(body), kind, bounds)
		ref, refOK := referenceFrame(body, asJSON)
		checkFramed(t, body, events, err, ref, refOK, maxEvents)

		// In pieces, through a small buffer, within max_body_bytes and
		// the room in flight.
		bounds.ReadChunk = int(chunk%64) + 16
		roomFor := int(room % 40)
		bounds.Room = func(n int) bool { return n <= roomFor }
		limited := &maxBytesReader{r: &pieceReader{data: body, sizes: pieces}, left: int64(maxBytes)}
		events2, err2 := Body(limited, kind, bounds)
		switch {
		case len(body) > int(maxBytes):
			if err2 == nil || errors.Is(err2, ErrNoRoom) {
				t.Fatalf("%q (%d bytes) over max_body_bytes %d: %v", body, len(body), maxBytes, err2)
			}
		case errors.Is(err2, errTooLarge):
			t.Fatalf("%q (%d bytes) within max_body_bytes %d refused as too large", body, len(body), maxBytes)
		case err != nil:
			if err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("%q refused with %v whole, %v in pieces", body, err, err2)
			}
		case len(events) > roomFor:
			if !errors.Is(err2, ErrNoRoom) || events2 != nil {
				t.Fatalf("%q: %d events, room for %d: %d kept, %v", body, len(events), roomFor, len(events2), err2)
			}
		case err2 != nil || len(events2) != len(events):
			t.Fatalf("%q framed as %d events whole, %d in pieces (%v)", body, len(events), len(events2), err2)
		default:
			for i := range events {
				if !bytes.Equal(events[i].Data, events2[i].Data) || events[i].Err != events2[i].Err {
					t.Fatalf("%q event %d: %q (%v) whole, %q (%v) in pieces", body, i, events[i].Data, events[i].Err, events2[i].Data, events2[i].Err)
				}
			}
		}
	})
}

// checkFramed holds one framing of body against the reference.
func checkFramed(t *testing.T, body []byte, events []Event, err error, ref [][]byte, refOK bool, maxEvents int) {
	t.Helper()
	var tooMany *TooManyEventsError
	var format *FormatError
	switch {
	case errors.As(err, &tooMany):
		if refOK && len(ref) <= maxEvents {
			t.Fatalf("%q refused as over %d events; it holds %d", body, maxEvents, len(ref))
		}
		return
	case errors.As(err, &format):
		if refOK && len(ref) <= maxEvents {
			t.Fatalf("%q refused (%v), the reference frames %d events", body, err, len(ref))
		}
		return
	case err != nil:
		t.Fatalf("%q: error %v is neither a 400 nor the events bound", body, err)
	}
	if !refOK {
		t.Fatalf("%q accepted as %d events; the reference refuses it", body, len(events))
	}
	if len(events) != len(ref) || len(events) == 0 || len(events) > maxEvents {
		t.Fatalf("%q framed as %d events, reference %d, bound %d", body, len(events), len(ref), maxEvents)
	}
	for i, ev := range events {
		if !bytes.Equal(ev.Data, ref[i]) {
			t.Fatalf("%q event %d = %q, reference %q", body, i, ev.Data, ref[i])
		}
		if want := Check(ev.Data); !errors.Is(ev.Err, want) || (want == nil) != (ev.Err == nil) {
			t.Fatalf("%q event %d marked %v, the rule says %v", body, i, ev.Err, want)
		}
		if ev.Err == nil && !roundTrips(ev.Data) {
			t.Fatalf("%q event %d = %q does not round-trip through encoding/json", body, i, ev.Data)
		}
	}
}

// roundTrips reports whether data decodes with encoding/json and encodes
// back to the same value.
func roundTrips(data []byte) bool {
	decode := func(b []byte) (any, bool) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v) == nil
	}
	v, ok := decode(data)
	if !ok {
		return false
	}
	out, err := json.Marshal(v)
	if err != nil {
		return false
	}
	w, ok := decode(out)
	return ok && reflect.DeepEqual(v, w)
}

// jsonSpace is JSON's whitespace (RFC 8259): nothing else may stand
// around a value, not even Unicode's other spaces.
const jsonSpace = " \t\r\n"

// referenceFrame frames a body the plain way: NDJSON splits on newlines
// and keeps the trimmed non-blank lines, each a JSON object or array; a
// JSON body is one object or a non-empty array of objects.
func referenceFrame(body []byte, asJSON bool) ([][]byte, bool) {
	body = bytes.TrimPrefix(body, BOM)
	if asJSON {
		trimmed := bytes.Trim(body, jsonSpace)
		if len(trimmed) == 0 || !json.Valid(trimmed) {
			return nil, false
		}
		switch trimmed[0] {
		case '{':
			return [][]byte{trimmed}, true
		case '[':
			var elems []json.RawMessage
			if json.Unmarshal(trimmed, &elems) != nil || len(elems) == 0 {
				return nil, false
			}
			out := make([][]byte, len(elems))
			for i, e := range elems {
				if e[0] != '{' {
					return nil, false
				}
				out[i] = e
			}
			return out, true
		}
		return nil, false
	}
	var out [][]byte
	for _, line := range bytes.Split(body, []byte("\n")) {
		line = bytes.Trim(line, jsonSpace)
		if len(line) == 0 {
			continue
		}
		if (line[0] != '{' && line[0] != '[') || !json.Valid(line) {
			return out, false
		}
		out = append(out, line)
	}
	return out, len(out) > 0
}

// pieceReader returns its data in pieces of the given sizes (cycled), as a
// pipe, terminal or slow client would, to exercise the readers' chunk
// edges.
type pieceReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (r *pieceReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(r.sizes) > 0 {
		n = int(r.sizes[r.i%len(r.sizes)])%64 + 1
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// FuzzLines reads NDJSON (stdin's framing) in pieces of fuzzed sizes
// through a small chunk of fuzzed size, and checks the events against a
// reference split, so that a line is read the same way however the input
// is chunked: one event per non-blank line (CRLF and a leading BOM
// accepted), its line number counted from 1, a line over max_line_bytes
// (blank or not) cut to its first max_line_bytes bytes and marked
// ErrLineTooLong, invalid UTF-8 and empty arrays marked by the rule every
// source follows, each error naming the input and the line; no event
// longer than max_line_bytes; every event's data intact after the whole
// input was read (a buffer an event points into is never written again);
// io.EOF at the end, and again after it; never a panic.
func FuzzLines(f *testing.F) {
	for _, b := range bodySeeds {
		f.Add([]byte(b), []byte{3, 200, 7}, uint8(40), uint8(16))
	}
	f.Add([]byte("\xef\xbb\xbf{\"a\":1}\r\n\t \n{\"b\":\"\xff\"}\n[]\n"+strings.Repeat("x", 100)+"\n{}"), []byte{1}, uint8(16), uint8(0))
	// testdata/fuzz/FuzzLines holds what fuzzing found: a BOM before a
	// first line of exactly max_line_bytes was refused when read in
	// pieces; a blank line over max_line_bytes was dead-lettered or
	// skipped by how it was read.
	f.Fuzz(func(t *testing.T, input, pieces []byte, maxLine, chunk uint8) {
		limit := int(maxLine%64) + 8
		lines := NewLines(&pieceReader{data: input, sizes: pieces}, limit, int(chunk%64)+16, "stdin")
		var got []Line
		for {
			batch, err := lines.Next()
			got = append(got, batch...)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
		}
		if batch, err := lines.Next(); len(batch) != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("Next after the end: %d events, %v", len(batch), err)
		}
		want := referenceLines(input, limit)
		if len(got) != len(want) {
			t.Fatalf("%q (max %d) read as %d events, reference %d", input, limit, len(got), len(want))
		}
		for i, w := range want {
			g := got[i]
			if g.No != w.no {
				t.Fatalf("%q event %d at line %d, want %d", input, i, g.No, w.no)
			}
			if len(g.Data) > limit {
				t.Fatalf("%q event %d (line %d) is %d bytes, over max_line_bytes %d", input, i, w.no, len(g.Data), limit)
			}
			where := fmt.Sprintf("stdin line %d: ", w.no)
			if g.Err != nil && !strings.HasPrefix(g.Err.Error(), where) {
				t.Fatalf("%q event %d: error %q does not start with %q", input, i, g.Err, where)
			}
			if w.tooLong {
				if !errors.Is(g.Err, ErrLineTooLong) || !bytes.Equal(g.Data, w.data[:limit]) {
					t.Fatalf("%q event %d (line %d): %q, %v; want %q and ErrLineTooLong", input, i, w.no, g.Data, g.Err, w.data[:limit])
				}
				continue
			}
			if !bytes.Equal(g.Data, w.data) {
				t.Fatalf("%q event %d (line %d) = %q, want %q", input, i, w.no, g.Data, w.data)
			}
			if want := Check(w.data); !errors.Is(g.Err, want) || (want == nil) != (g.Err == nil) {
				t.Fatalf("%q event %d marked %v, the rule says %v", input, i, g.Err, want)
			}
		}
	})
}

type refLine struct {
	data    []byte
	no      int64
	tooLong bool
}

// referenceLines splits NDJSON input the plain way.
func referenceLines(input []byte, maxLine int) []refLine {
	var out []refLine
	lines := bytes.Split(input, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1] // the newline ending the last line
	}
	for i, l := range lines {
		if i == 0 {
			l = bytes.TrimPrefix(l, BOM)
		}
		l = bytes.TrimSuffix(l, []byte("\r"))
		no := int64(i + 1)
		switch {
		case len(l) > maxLine:
			out = append(out, refLine{data: l, no: no, tooLong: true})
		case len(bytes.Trim(l, " \t\r")) > 0:
			out = append(out, refLine{data: l, no: no})
		}
	}
	return out
}

// errTooLarge is maxBytesReader's error past its bound.
var errTooLarge = errors.New("body too large")

// maxBytesReader bounds a body as http.MaxBytesReader does (without the
// net/http dependency, which would slow the fuzzing three times): the
// first left bytes read, then an error at the first byte past them.
type maxBytesReader struct {
	r    io.Reader
	left int64
	err  error
}

func (m *maxBytesReader) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > m.left+1 {
		p = p[:m.left+1]
	}
	n, err := m.r.Read(p)
	if int64(n) <= m.left {
		m.left -= int64(n)
		m.err = err
		return n, err
	}
	n, m.left, m.err = int(m.left), 0, errTooLarge
	return n, m.err
}
