package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"testing/synctest"
)

// stdinEvent is what a test expects of one event.
type stdinEvent struct {
	data string
	pos  string
	err  error // wrapped in Event.Err
}

// readAll reads every event without acking any, then returns them.
func readAll(t *testing.T, s *Stdin) ([]Event, []Ack, error) {
	t.Helper()
	var evs []Event
	var acks []Ack
	for {
		ev, ack, err := s.Read(t.Context())
		if err != nil {
			return evs, acks, err
		}
		evs = append(evs, ev)
		acks = append(acks, ack)
	}
}

func TestStdinLines(t *testing.T) {
	long := strings.Repeat("x", 30)
	tests := []struct {
		name  string
		input string
		max   int
		want  []stdinEvent
	}{
		{"empty input", "", 20, nil},
		{"one line", "{\"a\":1}\n", 20, []stdinEvent{{`{"a":1}`, "stdin:1", nil}}},
		{"no trailing newline", "{\"a\":1}\n{\"a\":2}", 20, []stdinEvent{
			{`{"a":1}`, "stdin:1", nil}, {`{"a":2}`, "stdin:2", nil}}},
		{"blank lines skipped but counted", "\n{\"a\":1}\n\n  \t\n\r\n{\"a\":2}\n\n", 20, []stdinEvent{
			{`{"a":1}`, "stdin:2", nil}, {`{"a":2}`, "stdin:6", nil}}},
		{"CRLF", "{\"a\":1}\r\n{\"a\":2}\r\n{\"a\":3}\r", 20, []stdinEvent{
			{`{"a":1}`, "stdin:1", nil}, {`{"a":2}`, "stdin:2", nil}, {`{"a":3}`, "stdin:3", nil}}},
		{"exactly the limit, with CRLF", "[\"" + long[:6] + "\"]\r\n", 10, []stdinEvent{
			{`["xxxxxx"]`, "stdin:1", nil}}},
		{"one over the limit", "[\"" + long[:7] + "\"]\n{}\n", 10, []stdinEvent{
			{`["xxxxxxx"`, "stdin:1", ErrLineTooLong}, {`{}`, "stdin:2", nil}}},
		{"long line does not stop the stream", "{}\n\"" + long + "\"\n{\"b\":2}\n", 10, []stdinEvent{
			{`{}`, "stdin:1", nil}, {`"` + long[:9], "stdin:2", ErrLineTooLong}, {`{"b":2}`, "stdin:3", nil}}},
		{"long line at the end without newline", "{}\n" + long, 10, []stdinEvent{
			{`{}`, "stdin:1", nil}, {long[:10], "stdin:2", ErrLineTooLong}}},
		{"invalid UTF-8", "{\"a\":\"\xff\"}\n{}\n", 20, []stdinEvent{
			{"{\"a\":\"\xff\"}", "stdin:1", ErrInvalidUTF8}, {`{}`, "stdin:2", nil}}},
		{"byte order mark", "\xEF\xBB\xBF{\"a\":1}\n", 20, []stdinEvent{{`{"a":1}`, "stdin:1", nil}}},
		{"empty array", "[]\n[ ]\n[{}]\n", 20, []stdinEvent{
			{`[]`, "stdin:1", ErrEmptyArray}, {`[ ]`, "stdin:2", ErrEmptyArray}, {`[{}]`, "stdin:3", nil}}},
	}
	readers := []struct {
		name  string
		wrap  func(io.Reader) io.Reader
		chunk int
	}{
		{"whole", func(r io.Reader) io.Reader { return r }, stdinChunkBytes},
		{"byte by byte", iotest.OneByteReader, stdinChunkBytes},
		{"data with EOF", iotest.DataErrReader, stdinChunkBytes},
		{"small chunks", iotest.HalfReader, 16},
		{"tiny chunks", iotest.OneByteReader, 4},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				s := NewStdin(rd.wrap(strings.NewReader(tt.input)), tt.max, "stdin")
				s.chunkSize = rd.chunk
				evs, acks, err := readAll(t, s)
				if !errors.Is(err, ErrEndOfInput) {
					t.Fatalf("Read = %v at the end, want ErrEndOfInput", err)
				}
				if len(evs) != len(tt.want) {
					t.Fatalf("got %d events %+v, want %d", len(evs), evs, len(tt.want))
				}
				for i, w := range tt.want {
					ev := evs[i]
					if string(ev.Data) != w.data || ev.Position != w.pos {
						t.Errorf("event %d = %q at %s, want %q at %s", i, ev.Data, ev.Position, w.data, w.pos)
					}
					if !errors.Is(ev.Err, w.err) || (w.err == nil) != (ev.Err == nil) {
						t.Errorf("event %d Err = %v, want %v", i, ev.Err, w.err)
					} else if ev.Err != nil && !strings.Contains(ev.Err.Error(), w.pos[len("stdin:"):]) {
						t.Errorf("event %d Err = %q does not name its line", i, ev.Err)
					}
				}
				if _, _, err := s.Read(t.Context()); !errors.Is(err, ErrEndOfInput) {
					t.Errorf("Read after the end = %v, want ErrEndOfInput again", err)
				}
				for _, ack := range acks {
					ack(nil)
				}
				if err := s.Close(t.Context()); err != nil {
					t.Errorf("Close = %v after every event was acked", err)
				}
			})
		}
	}
}

// TestStdinDataStaysValid reads many lines across many chunks, holding every
// event unacked, and checks that none was overwritten by later reads.
func TestStdinDataStaysValid(t *testing.T) {
	var in bytes.Buffer
	var want []string
	for i := range 5000 {
		line := fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, i, strings.Repeat("p", i%300))
		want = append(want, line)
		in.WriteString(line + "\n")
	}
	for _, chunk := range []int{stdinChunkBytes, 1000} {
		t.Run(fmt.Sprintf("chunk %d", chunk), func(t *testing.T) {
			s := NewStdin(iotest.HalfReader(bytes.NewReader(in.Bytes())), 400, "stdin")
			s.chunkSize = chunk
			evs, _, err := readAll(t, s)
			if !errors.Is(err, ErrEndOfInput) {
				t.Fatal(err)
			}
			if len(evs) != len(want) {
				t.Fatalf("%d events, want %d", len(evs), len(want))
			}
			for i, ev := range evs {
				if string(ev.Data) != want[i] || ev.Err != nil {
					t.Fatalf("event %d = %q (err %v), want %q", i, ev.Data, ev.Err, want[i])
				}
				// Appending to one event's data must not touch the next.
				_ = append(ev.Data, "garbage"...)
			}
			for i, ev := range evs {
				if string(ev.Data) != want[i] {
					t.Fatalf("event %d changed to %q", i, ev.Data)
				}
			}
		})
	}
}

func TestStdinContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pr, pw := io.Pipe()
		s := NewStdin(pr, 100, "stdin")
		ctx, cancel := context.WithCancel(t.Context())
		got := make(chan error, 1)
		go func() {
			_, _, err := s.Read(ctx)
			got <- err
		}()
		synctest.Wait()
		if len(got) != 0 {
			t.Fatal("Read returned with no input")
		}
		cancel()
		if err := <-got; !errors.Is(err, context.Canceled) {
			t.Fatalf("Read = %v after cancel, want context.Canceled", err)
		}
		// The line written after the cancel is not lost.
		go func() { _, _ = pw.Write([]byte("{\"a\":1}\n")) }()
		ev, ack, err := s.Read(t.Context())
		if err != nil || string(ev.Data) != `{"a":1}` {
			t.Fatalf("Read = %q, %v", ev.Data, err)
		}
		ack(nil)
		// Close wakes a waiting Read; the reader goroutine leaves when its
		// blocked read returns.
		go func() {
			_, _, err := s.Read(t.Context())
			got <- err
		}()
		synctest.Wait()
		// The input did not end: Close says where reading stopped.
		if err := s.Close(t.Context()); !errors.Is(err, ErrStoppedEarly) || !strings.Contains(err.Error(), "after line 1") {
			t.Errorf("Close = %v, want ErrStoppedEarly after line 1", err)
		}
		if err := <-got; err == nil || errors.Is(err, ErrEndOfInput) {
			t.Errorf("Read after Close = %v, want a closed error", err)
		}
		_ = pw.Close()
		synctest.Wait() // every goroutine of the source is gone (synctest checks)
	})
}

func TestStdinReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	s := NewStdin(io.MultiReader(strings.NewReader("{}\n{\"cut"), iotest.ErrReader(boom)), 100, "stdin")
	evs, _, err := readAll(t, s)
	if !errors.Is(err, boom) || errors.Is(err, ErrEndOfInput) {
		t.Fatalf("Read = %v, want the read error", err)
	}
	if !strings.Contains(err.Error(), "after line 1") {
		t.Errorf("error %q does not say where", err)
	}
	if len(evs) != 1 || string(evs[0].Data) != "{}" {
		t.Errorf("events = %+v, want the complete line only", evs)
	}
}

func TestStdinAcks(t *testing.T) {
	input := strings.Repeat("{}\n", 6)
	tests := []struct {
		name      string
		acks      []error // one per event read; nil entry with skip = never acked
		never     []bool
		want      StdinStats
		wantClose bool   // Close reports undelivered events
		wantLines string // the failed lines Close names
	}{
		{"all delivered", []error{nil, nil, nil, nil, nil, nil}, nil,
			StdinStats{Read: 6, Acked: 6}, false, ""},
		{"dead-lettered counts as done", []error{nil, fmt.Errorf("row: %w", ErrDeadLettered), nil, nil, ErrDeadLettered, nil}, nil,
			StdinStats{Read: 6, Acked: 4, DeadLettered: 2}, false, ""},
		{"failed and never acked", []error{nil, errors.New("post failed"), nil, nil, nil, nil}, []bool{false, false, true, false, true, false},
			StdinStats{Read: 6, Acked: 3, Failed: 1, Unacked: 2}, true, "2"},
		{"failed lines as ranges", []error{errors.New("x"), errors.New("x"), nil, errors.New("x"), errors.New("x"), errors.New("x")}, nil,
			StdinStats{Read: 6, Acked: 1, Failed: 5}, true, "1-2, 4-6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStdin(strings.NewReader(input), 100, "stdin")
			evs, acks, err := readAll(t, s)
			if !errors.Is(err, ErrEndOfInput) || len(evs) != 6 {
				t.Fatalf("read %d events, %v", len(evs), err)
			}
			for i, ack := range acks {
				if tt.never != nil && tt.never[i] {
					continue
				}
				ack(tt.acks[i])
				ack(errors.New("second ack, ignored"))
			}
			if got := s.Stats(); got != tt.want {
				t.Errorf("Stats = %+v, want %+v", got, tt.want)
			}
			err = s.Close(t.Context())
			if tt.wantClose != (err != nil) || (err != nil && !errors.Is(err, ErrUndelivered)) {
				t.Errorf("Close = %v, want undelivered error: %v", err, tt.wantClose)
			}
			if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("%d failed, %d never acknowledged", tt.want.Failed, tt.want.Unacked)) {
				t.Errorf("Close error %q does not give the counts", err)
			}
			if tt.wantLines != "" && (err == nil || !strings.Contains(err.Error(), "failed: line "+tt.wantLines)) {
				t.Errorf("Close error %q does not name the failed lines %s", err, tt.wantLines)
			}
		})
	}
}

// BenchmarkStdin reads telemetry lines of about 250 bytes and acks each.
func BenchmarkStdin(b *testing.B) {
	var in bytes.Buffer
	for i := range 4096 {
		fmt.Fprintf(&in, `{"device":{"id":"dev-%d","site":"plant-%d","firmware":"1.2.2"},"ts":"2026-11-28T00:00:00.000Z","seq":%d,"metrics":{"temperature_c":34.44,"humidity_pct":69.0,"pressure_hpa":1011.2,"battery_v":"3.71"},"status":{"online":true,"alarms":[]}}`+"\n", i%50, i%7, i)
	}
	data := in.Bytes()
	b.SetBytes(int64(len(data) / 4096))
	b.ReportAllocs()
	r := &repeatReader{data: data}
	s := NewStdin(r, 1<<20, "stdin")
	ctx := b.Context()
	b.ResetTimer()
	for range b.N {
		_, ack, err := s.Read(ctx)
		if err != nil {
			b.Fatal(err)
		}
		ack(nil)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	_ = s.Close(ctx)
}

// repeatReader returns data over and over.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}
