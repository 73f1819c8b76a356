package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

// Fuzz targets for the input pushd takes from outside: HTTP ingest bodies,
// stdin lines and Kafka records. Each holds the framing against a simple
// reference of the documented rule, and checks that nothing panics.
//
//	go test -run '^$' -fuzz FuzzFrameBody -fuzztime 10s ./internal/source/
//	go test -run '^$' -fuzz FuzzStdin -fuzztime 10s ./internal/source/
//	go test -run '^$' -fuzz FuzzKafkaRecord -fuzztime 10s ./internal/source/

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
	// A line longer than the read buffer (bodyReadChunk in production,
	// 16..79 bytes in the fuzz) and a 1,000-line body of {} (the 16 MiB
	// body of tiny events, shrunk).
	"{\"pad\":\"" + strings.Repeat("p", 200) + "\"}\n{}\n", strings.Repeat("{}\n", 1000),
}

// FuzzFrameBody frames HTTP ingest bodies (NDJSON and JSON) and checks
// them against a reference framing: never a panic; every error a 400
// (errBodyFormat) or a bound; an accepted body has 1..max events, exactly
// the reference's, each byte for byte the JSON the caller sent (it
// round-trips through encoding/json) and marked for the dead letter by the
// rule every source follows (checkEvent). The same body read in pieces of
// fuzzed sizes through the size bound (http.MaxBytesReader) and with the
// in-flight room bound is framed the same way: accepted only within both
// bounds, refused with the bound's error past them.
func FuzzFrameBody(f *testing.F) {
	for _, b := range bodySeeds {
		f.Add([]byte(b), false, uint8(3), uint8(2), uint16(40), []byte{5, 1}, uint8(0))
		f.Add([]byte(b), true, uint8(20), uint8(39), uint16(1000), []byte{63}, uint8(7))
	}
	f.Fuzz(func(t *testing.T, body []byte, asJSON bool, limit, room uint8, maxBytes uint16, pieces []byte, chunk uint8) {
		maxEvents := int(limit%32) + 1
		kind := formatNDJSON
		if asJSON {
			kind = formatJSON
		}
		// Whole: through a buffer larger than most inputs (not the 64 KiB
		// of bodyReadChunk, which would make each run allocate 128 KiB).
		bounds := bodyBounds{maxEvents: maxEvents, eventsLimit: "max_events_per_request", readChunk: 4096}
		events, err := frameBody(bytes.NewReader(body), kind, bounds)
		ref, refOK := referenceFrame(body, asJSON)
		checkFramed(t, body, events, err, ref, refOK, maxEvents)

		// In pieces, through a small buffer, within max_body_bytes and
		// the room in flight.
		bounds.readChunk = int(chunk%64) + 16
		roomFor := int(room % 40)
		bounds.room = func(n int) bool { return n <= roomFor }
		limited := http.MaxBytesReader(nil, io.NopCloser(&pieceReader{data: body, sizes: pieces}), int64(maxBytes))
		events2, err2 := frameBody(limited, kind, bounds)
		var tooLarge *http.MaxBytesError
		switch {
		case len(body) > int(maxBytes):
			if err2 == nil || errors.Is(err2, errNoRoom) {
				t.Fatalf("%q (%d bytes) over max_body_bytes %d: %v", body, len(body), maxBytes, err2)
			}
		case errors.As(err2, &tooLarge):
			t.Fatalf("%q (%d bytes) within max_body_bytes %d refused as too large", body, len(body), maxBytes)
		case err != nil:
			if err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("%q refused with %v whole, %v in pieces", body, err, err2)
			}
		case len(events) > roomFor:
			if !errors.Is(err2, errNoRoom) || events2 != nil {
				t.Fatalf("%q: %d events, room for %d: %d kept, %v", body, len(events), roomFor, len(events2), err2)
			}
		case err2 != nil || len(events2) != len(events):
			t.Fatalf("%q framed as %d events whole, %d in pieces (%v)", body, len(events), len(events2), err2)
		default:
			for i := range events {
				if !bytes.Equal(events[i].data, events2[i].data) || events[i].err != events2[i].err {
					t.Fatalf("%q event %d: %q (%v) whole, %q (%v) in pieces", body, i, events[i].data, events[i].err, events2[i].data, events2[i].err)
				}
			}
		}
	})
}

// checkFramed holds one framing of body against the reference.
func checkFramed(t *testing.T, body []byte, events []bodyEvent, err error, ref [][]byte, refOK bool, maxEvents int) {
	t.Helper()
	var tooMany *errTooManyEvents
	var format *errBodyFormat
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
		if !bytes.Equal(ev.data, ref[i]) {
			t.Fatalf("%q event %d = %q, reference %q", body, i, ev.data, ref[i])
		}
		if want := checkEvent(ev.data); !errors.Is(ev.err, want) || (want == nil) != (ev.err == nil) {
			t.Fatalf("%q event %d marked %v, the rule says %v", body, i, ev.err, want)
		}
		if ev.err == nil && !roundTrips(ev.data) {
			t.Fatalf("%q event %d = %q does not round-trip through encoding/json", body, i, ev.data)
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
	body = bytes.TrimPrefix(body, utf8BOM)
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
// pipe or terminal would, to exercise the stdin reader's chunk edges.
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

// FuzzStdin reads NDJSON from stdin in pieces of fuzzed sizes through a
// small chunk of fuzzed size, and checks the events against a reference
// split, so that a line is read the same way however the input is
// chunked: one event per non-blank line (CRLF and a leading BOM
// accepted), the line number as its position, a line over max_line_bytes
// (blank or not) cut to its first max_line_bytes bytes and marked
// ErrLineTooLong, invalid UTF-8 and empty arrays marked by the rule every
// source follows; no event longer than max_line_bytes; never a panic.
func FuzzStdin(f *testing.F) {
	for _, b := range bodySeeds {
		f.Add([]byte(b), []byte{3, 200, 7}, uint8(40), uint8(16))
	}
	f.Add([]byte("\xef\xbb\xbf{\"a\":1}\r\n\t \n{\"b\":\"\xff\"}\n[]\n"+strings.Repeat("x", 100)+"\n{}"), []byte{1}, uint8(16), uint8(0))
	// testdata/fuzz/FuzzStdin holds what fuzzing found: a BOM before a
	// first line of exactly max_line_bytes was refused when read in
	// pieces; a blank line over max_line_bytes was dead-lettered or
	// skipped by how it was read.
	f.Fuzz(func(t *testing.T, input, pieces []byte, maxLine, chunk uint8) {
		limit := int(maxLine%64) + 8
		s := NewStdin(&pieceReader{data: input, sizes: pieces}, limit, "stdin")
		s.chunkSize = int(chunk%64) + 16
		var got []Event
		for {
			ev, ack, err := s.Read(context.Background())
			if errors.Is(err, ErrEndOfInput) {
				break
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			ack(nil)
			got = append(got, ev)
		}
		if err := s.Close(context.Background()); err != nil {
			t.Fatalf("Close after the end, every event acked: %v", err)
		}
		want := referenceLines(input, limit)
		if len(got) != len(want) {
			t.Fatalf("%q (max %d) read as %d events, reference %d", input, limit, len(got), len(want))
		}
		for i, w := range want {
			g := got[i]
			if g.Position != w.pos {
				t.Fatalf("%q event %d at %s, want %s", input, i, g.Position, w.pos)
			}
			if len(g.Data) > limit {
				t.Fatalf("%q event %d (%s) is %d bytes, over max_line_bytes %d", input, i, w.pos, len(g.Data), limit)
			}
			if w.tooLong {
				if !errors.Is(g.Err, ErrLineTooLong) || !bytes.Equal(g.Data, w.data[:limit]) {
					t.Fatalf("%q event %d (%s): %q, %v; want %q and ErrLineTooLong", input, i, w.pos, g.Data, g.Err, w.data[:limit])
				}
				continue
			}
			if !bytes.Equal(g.Data, w.data) {
				t.Fatalf("%q event %d (%s) = %q, want %q", input, i, w.pos, g.Data, w.data)
			}
			if want := checkEvent(w.data); !errors.Is(g.Err, want) || (want == nil) != (g.Err == nil) {
				t.Fatalf("%q event %d marked %v, the rule says %v", input, i, g.Err, want)
			}
		}
	})
}

type refLine struct {
	data    []byte
	pos     string
	tooLong bool
}

// referenceLines splits stdin input the plain way.
func referenceLines(input []byte, maxLine int) []refLine {
	var out []refLine
	lines := bytes.Split(input, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1] // the newline ending the last line
	}
	for i, l := range lines {
		if i == 0 {
			l = bytes.TrimPrefix(l, utf8BOM)
		}
		l = bytes.TrimSuffix(l, []byte("\r"))
		pos := "stdin:" + strconv.Itoa(i+1)
		switch {
		case len(l) > maxLine:
			out = append(out, refLine{data: l, pos: pos, tooLong: true})
		case len(bytes.Trim(l, " \t\r")) > 0:
			out = append(out, refLine{data: l, pos: pos})
		}
	}
	return out
}

// FuzzKafkaRecord decodes Kafka records as the source hands them to the
// pipeline (Kafka.event, on kafka-go's Message): the value with a leading
// BOM stripped and the rule every source follows applied, the error naming
// the record; the key, headers (the last of a repeated name wins),
// partition and offset readable through the metadata paths (@key,
// @headers.NAME ...); and the ack: the first one frees the in-flight slot
// and moves the offset to commit past the record (or not, when it failed),
// a second one changes nothing. Never a panic.
func FuzzKafkaRecord(f *testing.F) {
	f.Add([]byte(`{"device":{"id":"dev-1"},"seq":1}`), []byte("dev-1"), "trace", []byte("abc"), "trace", []byte("def"), int32(2), int64(42), uint8(0))
	f.Add([]byte("\xef\xbb\xbf{\"a\":1}"), []byte(nil), "", []byte(nil), "", []byte(nil), int32(0), int64(0), uint8(1))
	f.Add([]byte(`[]`), []byte("\xff"), "h\xff", []byte("\xfe"), "g", []byte{}, int32(-1), int64(-1), uint8(2))
	f.Add([]byte(" [ \n ] "), []byte{}, "x", []byte{}, "", []byte(nil), int32(7), int64(1<<62), uint8(0))
	f.Add([]byte(`{"s":"\xc3"}`), []byte("k"), "a", []byte("1"), "b", []byte("2"), int32(1), int64(9), uint8(1))
	f.Add([]byte(`this is not json`), []byte{}, "x", []byte{}, "", []byte(nil), int32(7), int64(1<<62), uint8(2))
	f.Fuzz(func(t *testing.T, value, key []byte, h1 string, v1 []byte, h2 string, v2 []byte, partition int32, offset int64, outcome uint8) {
		if offset < 0 {
			offset = -(offset + 1) // a record's offset is never negative
		}
		if offset == math.MaxInt64 {
			offset-- // nor the last int64: the offset to commit is one past it
		}
		msg := kafka.Message{Topic: "events", Partition: int(partition), Offset: offset, HighWaterMark: offset + 1, Key: key, Value: value}
		headers := map[string]string{}
		for _, h := range []kafka.Header{{Key: h1, Value: v1}, {Key: h2, Value: v2}} {
			if h.Key != "" {
				msg.Headers = append(msg.Headers, h)
				headers[h.Key] = string(h.Value)
			}
		}
		k := &Kafka{tracker: newOffsetTracker(), log: slog.New(slog.DiscardHandler), sem: make(chan struct{}, 1)}
		k.sem <- struct{}{} // as Read takes it
		ev, ack, err := k.event(&msg)
		if err != nil {
			t.Fatal(err)
		}
		if want := bytes.TrimPrefix(value, utf8BOM); !bytes.Equal(ev.Data, want) {
			t.Fatalf("event data %q, want %q", ev.Data, want)
		}
		if bad := checkEvent(ev.Data); (bad == nil) != (ev.Err == nil) || !errors.Is(ev.Err, bad) {
			t.Fatalf("event %q marked %v, the rule says %v", ev.Data, ev.Err, bad)
		}
		where := KafkaPosition("events", int(partition), offset)
		if ev.Where() != where || (ev.Err != nil && !strings.HasPrefix(ev.Err.Error(), where+": ")) {
			t.Fatalf("event at %s (error %v), want %s", ev.Where(), ev.Err, where)
		}
		checkKafkaMeta(t, ev.Meta, msg, headers)
		failed := outcome%3 == 2
		ackErr := []error{nil, fmt.Errorf("bad row: %w", ErrDeadLettered), errors.New("not delivered")}[outcome%3]
		ack(ackErr)
		if len(k.sem) != 0 {
			t.Fatalf("the ack did not free the in-flight slot")
		}
		ack(nil) // a second ack changes nothing (and does not block on sem)
		next := offset + 1
		if failed {
			next = offset
		}
		if points := k.tracker.toCommit(); len(points) != 1 || points[0].next != next {
			t.Fatalf("after ack(%v) of offset %d: to commit %+v, want next %d", ackErr, offset, points, next)
		}
	})
}

// checkKafkaMeta holds the event's metadata against the record.
func checkKafkaMeta(t *testing.T, meta *Metadata, msg kafka.Message, headers map[string]string) {
	t.Helper()
	k, ok := meta.MetaValue("key")
	if (msg.Key != nil) != ok || (ok && k != string(msg.Key)) {
		t.Fatalf("@key = %v, %v; record key %q", k, ok, msg.Key)
	}
	if v, ok := meta.MetaValue("topic"); !ok || v != msg.Topic {
		t.Fatalf("@topic = %v, %v; want %s", v, ok, msg.Topic)
	}
	if v, ok := meta.MetaValue("partition"); !ok || v != int64(msg.Partition) {
		t.Fatalf("@partition = %v, %v; want %d", v, ok, msg.Partition)
	}
	if v, ok := meta.MetaValue("offset"); !ok || v != msg.Offset {
		t.Fatalf("@offset = %v, %v; want %d", v, ok, msg.Offset)
	}
	for name, want := range headers {
		if v, ok := meta.MetaValue("headers." + name); !ok || v != want {
			t.Fatalf("@headers.%s = %v, %v; want %q", name, v, ok, want)
		}
	}
	if len(meta.Headers) != len(headers) {
		t.Fatalf("headers %v, want %v", meta.Headers, headers)
	}
	if _, ok := meta.MetaValue("headers." + "absent\x00"); ok {
		t.Fatalf("an absent header answers")
	}
}
