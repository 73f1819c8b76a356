package batcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pushd/pushd/internal/source"
)

// ackLog records the acks of the events of a test.
type ackLog struct {
	mu   sync.Mutex
	acks map[string][]error // position -> every ack call
}

func newAckLog() *ackLog { return &ackLog{acks: map[string][]error{}} }

func (l *ackLog) tracker(pos string) *Tracker {
	return NewTracker(source.Event{Data: []byte(`{}`), Position: pos}, func(err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.acks[pos] = append(l.acks[pos], err)
	})
}

// get returns the ack calls of pos.
func (l *ackLog) get(pos string) []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.acks[pos]...)
}

func row(n int) json.RawMessage {
	// {"v":"xxx"}: 8 bytes of framing.
	return json.RawMessage(`{"v":"` + strings.Repeat("x", n-8) + `"}`)
}

// drain returns every batch waiting in out.
func drain(out chan *Batch) []*Batch {
	var bs []*Batch
	for {
		select {
		case b := <-out:
			bs = append(bs, b)
		default:
			return bs
		}
	}
}

func mustNew(t *testing.T, cfg Config, out chan<- *Batch) *Batcher {
	t.Helper()
	b, err := New(cfg, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func checkBody(t *testing.T, b *Batch, maxBytes int) {
	t.Helper()
	body := b.AppendBody(nil)
	if len(body) != b.Bytes {
		t.Errorf("Bytes = %d, encoded body is %d bytes", b.Bytes, len(body))
	}
	if b.Bytes > maxBytes {
		t.Errorf("Bytes = %d, over max_bytes %d", b.Bytes, maxBytes)
	}
	var v struct{ Rows []json.RawMessage }
	if err := json.Unmarshal(body, &v); err != nil || len(v.Rows) != b.Len() {
		t.Errorf("body %q: %v, %d rows, want %d", body, err, len(v.Rows), b.Len())
	}
	if len(b.Trackers) != len(b.Rows) {
		t.Errorf("%d trackers for %d rows", len(b.Trackers), len(b.Rows))
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"defaults", DefaultConfig(), nil},
		{"smallest", Config{MaxRows: 1, MaxBytes: 1, Linger: time.Nanosecond}, nil},
		{"too many rows", Config{MaxRows: 20000, MaxBytes: 1000, Linger: time.Second},
			[]string{"max_rows: must be 1..10000, got 20000"}},
		{"zero rows", Config{MaxRows: 0, MaxBytes: 1000, Linger: time.Second},
			[]string{"max_rows: must be 1..10000, got 0"}},
		{"too many bytes", Config{MaxRows: 10, MaxBytes: 16_000_001, Linger: time.Second},
			[]string{"max_bytes: must be 1..16000000, got 16000001"}},
		{"every problem at once", Config{MaxRows: -1, MaxBytes: 0, Linger: 0},
			[]string{"max_rows: must be 1..10000, got -1", "max_bytes: must be 1..16000000, got 0", "linger: must be > 0, got 0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if got := strings.Count(err.Error(), "\n") + 1; got != len(tt.want) {
				t.Errorf("Validate() reported %d problems, want %d: %q", got, len(tt.want), err)
			}
			if _, err := New(tt.cfg, make(chan *Batch)); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}

func TestFlushTriggers(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		rowSizes []int
		want     [][]int // row sizes of each batch sent, then of the final Flush
	}{
		{
			name:     "max rows",
			cfg:      Config{MaxRows: 3, MaxBytes: LimitBytes, Linger: time.Hour},
			rowSizes: []int{10, 10, 10, 10, 10, 10, 10},
			want:     [][]int{{10, 10, 10}, {10, 10, 10}, {10}},
		},
		{
			// 11 + 3*10 + 2 commas = 43: three rows fill the body exactly.
			name:     "max bytes reached exactly",
			cfg:      Config{MaxRows: 100, MaxBytes: 43, Linger: time.Hour},
			rowSizes: []int{10, 10, 10, 10},
			want:     [][]int{{10, 10, 10}, {10}},
		},
		{
			// 43 bytes after three rows; a fourth would make 54 > 50.
			name:     "next row would not fit",
			cfg:      Config{MaxRows: 100, MaxBytes: 50, Linger: time.Hour},
			rowSizes: []int{10, 10, 10, 10, 12},
			want:     [][]int{{10, 10, 10}, {10, 12}},
		},
		{
			name:     "one row alone at the limit",
			cfg:      Config{MaxRows: 100, MaxBytes: 31, Linger: time.Hour},
			rowSizes: []int{20, 9, 9, 20},
			want:     [][]int{{20}, {9, 9}, {20}},
		},
		{
			name:     "mixed sizes stay under the byte limit",
			cfg:      Config{MaxRows: 5, MaxBytes: 120, Linger: time.Hour},
			rowSizes: []int{30, 9, 50, 17, 8, 8, 8, 8, 8, 8, 100, 40, 40},
			want:     [][]int{{30, 9, 50, 17}, {8, 8, 8, 8, 8}, {8, 100}, {40, 40}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := make(chan *Batch, 100)
			b := mustNew(t, tt.cfg, out)
			acks := newAckLog()
			ctx := t.Context()
			for i, n := range tt.rowSizes {
				tr := acks.tracker(fmt.Sprint(i))
				if err := b.Add(ctx, row(n), tr); err != nil {
					t.Fatalf("Add(row %d): %v", i, err)
				}
				tr.Seal()
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			got := drain(out)
			var sizes [][]int
			for _, bt := range got {
				checkBody(t, bt, tt.cfg.MaxBytes)
				var s []int
				for _, r := range bt.Rows {
					s = append(s, len(r))
				}
				sizes = append(sizes, s)
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tt.want) {
				t.Errorf("batches by row size = %v, want %v", sizes, tt.want)
			}
			if err := b.Flush(ctx); err != nil || len(drain(out)) != 0 {
				t.Errorf("Flush of an empty batcher: %v, or it sent a batch", err)
			}
		})
	}
}

func TestRowTooLarge(t *testing.T) {
	out := make(chan *Batch, 1)
	b := mustNew(t, Config{MaxRows: 10, MaxBytes: 30, Linger: time.Hour}, out)
	acks := newAckLog()
	tr := acks.tracker("big")
	err := b.Add(t.Context(), row(20), tr)
	if !errors.Is(err, ErrRowTooLarge) {
		t.Fatalf("Add = %v, want ErrRowTooLarge", err)
	}
	if !strings.Contains(err.Error(), "20 bytes") || !strings.Contains(err.Error(), "max_bytes 30") {
		t.Errorf("error %q does not give the sizes", err)
	}
	// The row was not counted: sealing acks at once.
	tr.Seal()
	if got := acks.get("big"); len(got) != 1 || got[0] != nil {
		t.Errorf("acks = %v, want one nil", got)
	}
	if err := b.Add(t.Context(), row(19), acks.tracker("fits")); err != nil {
		t.Errorf("Add of a 19-byte row with max_bytes 30: %v", err)
	}
}

func TestLinger(t *testing.T) {
	const linger = time.Second
	cfg := Config{MaxRows: 3, MaxBytes: LimitBytes, Linger: linger}
	t.Run("from the first row", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			out := make(chan *Batch, 10)
			b := mustNew(t, cfg, out)
			acks := newAckLog()
			start := time.Now()
			if err := b.Add(t.Context(), row(10), acks.tracker("a")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(600 * time.Millisecond)
			if err := b.Add(t.Context(), row(10), acks.tracker("b")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(linger - 600*time.Millisecond - time.Nanosecond)
			synctest.Wait()
			if n := len(out); n != 0 {
				t.Fatalf("%d batches sent before the linger passed", n)
			}
			time.Sleep(time.Nanosecond)
			synctest.Wait()
			got := drain(out)
			if len(got) != 1 || got[0].Len() != 2 {
				t.Fatalf("after linger: %d batches, want one of 2 rows", len(got))
			}
			if d := time.Since(start); d != linger {
				t.Errorf("sent after %v, want %v", d, linger)
			}
		})
	})
	t.Run("restarts for each batch", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			out := make(chan *Batch, 10)
			b := mustNew(t, cfg, out)
			acks := newAckLog()
			add := func() {
				if err := b.Add(t.Context(), row(10), acks.tracker("x")); err != nil {
					t.Fatal(err)
				}
			}
			// A batch that fills by rows goes at once; its timer must not
			// send the next batch early.
			add()
			time.Sleep(900 * time.Millisecond)
			add()
			add()
			synctest.Wait()
			if got := drain(out); len(got) != 1 || got[0].Len() != 3 {
				t.Fatalf("full batch not sent at once: %d batches", len(got))
			}
			add() // starts a new batch at 0.9s; due at 1.9s
			time.Sleep(500 * time.Millisecond)
			synctest.Wait()
			if n := len(out); n != 0 {
				t.Fatalf("new batch sent %v after its first row, before its linger", 500*time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			synctest.Wait()
			if got := drain(out); len(got) != 1 || got[0].Len() != 1 {
				t.Fatalf("new batch not sent after its linger: %d batches", len(got))
			}
			// Idle: nothing more is sent.
			time.Sleep(10 * linger)
			synctest.Wait()
			if n := len(out); n != 0 {
				t.Errorf("%d batches sent while idle", n)
			}
		})
	})
	t.Run("waits for room in out", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			out := make(chan *Batch) // nobody receives yet
			b := mustNew(t, cfg, out)
			if err := b.Add(t.Context(), row(10), newAckLog().tracker("a")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * linger)
			synctest.Wait()
			got := <-out
			if got.Len() != 1 {
				t.Errorf("batch has %d rows, want 1", got.Len())
			}
		})
	})
}

func TestAcks(t *testing.T) {
	errPost := errors.New("post failed")
	tests := []struct {
		name string
		// events[i] is the number of rows of event i; rows go in event order.
		events  []int
		maxRows int
		// settle the batches (by index, in this order) with these errors
		order []int
		errs  map[int]error
		// wantAfter[k]: events acked once batch order[k] is settled
		wantAfter [][]int
		wantErr   map[int]error
	}{
		{
			name: "fan-out acks after the last batch", events: []int{3}, maxRows: 2,
			order: []int{1, 0}, wantAfter: [][]int{nil, {0}},
		},
		{
			name: "fan-out, batches settled in order", events: []int{1, 3, 1}, maxRows: 2,
			order: []int{0, 1, 2}, wantAfter: [][]int{{0}, {1}, {2}},
		},
		{
			name: "one failed batch fails only its events", events: []int{2, 2, 2}, maxRows: 2,
			order: []int{0, 1, 2}, errs: map[int]error{1: errPost},
			wantAfter: [][]int{{0}, {1}, {2}}, wantErr: map[int]error{1: errPost},
		},
		{
			name: "an event spanning a failed and an accepted batch fails", events: []int{1, 2, 1}, maxRows: 2,
			order: []int{1, 0}, errs: map[int]error{0: errPost},
			wantAfter: [][]int{{2}, {0, 1}}, wantErr: map[int]error{0: errPost, 1: errPost},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := make(chan *Batch, 100)
			b := mustNew(t, Config{MaxRows: tt.maxRows, MaxBytes: LimitBytes, Linger: time.Hour}, out)
			acks := newAckLog()
			for ev, rows := range tt.events {
				tr := acks.tracker(fmt.Sprint(ev))
				for range rows {
					if err := b.Add(t.Context(), row(10), tr); err != nil {
						t.Fatal(err)
					}
				}
				tr.Seal()
			}
			if err := b.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			batches := drain(out)
			acked := map[int]bool{}
			for k, bi := range tt.order {
				batches[bi].Done(tt.errs[bi])
				for _, ev := range tt.wantAfter[k] {
					acked[ev] = true
				}
				for ev := range tt.events {
					got := acks.get(fmt.Sprint(ev))
					switch {
					case acked[ev] && len(got) != 1:
						t.Errorf("after settling batch %d: event %d acked %d times, want once", bi, ev, len(got))
					case !acked[ev] && len(got) != 0:
						t.Errorf("after settling batch %d: event %d acked early", bi, ev)
					case acked[ev] && !errors.Is(got[0], tt.wantErr[ev]) || (tt.wantErr[ev] == nil && acked[ev] && got[0] != nil):
						t.Errorf("event %d acked with %v, want %v", ev, got[0], tt.wantErr[ev])
					}
				}
			}
		})
	}
}

func TestTracker(t *testing.T) {
	t.Run("no rows acks at seal", func(t *testing.T) {
		acks := newAckLog()
		tr := acks.tracker("e")
		if len(acks.get("e")) != 0 {
			t.Fatal("acked before Seal")
		}
		tr.Seal()
		if got := acks.get("e"); len(got) != 1 || got[0] != nil {
			t.Errorf("acks = %v, want one nil", got)
		}
	})
	t.Run("seal after rows settled", func(t *testing.T) {
		out := make(chan *Batch, 1)
		b := mustNew(t, Config{MaxRows: 2, MaxBytes: LimitBytes, Linger: time.Hour}, out)
		acks := newAckLog()
		tr := acks.tracker("e")
		_ = b.Add(t.Context(), row(10), tr)
		_ = b.Add(t.Context(), row(10), tr)
		bt := <-out
		bt.RowDone(1, nil)
		bt.RowDone(0, nil)
		if len(acks.get("e")) != 0 {
			t.Fatal("acked before Seal, though more rows could come")
		}
		tr.Seal()
		if got := acks.get("e"); len(got) != 1 || got[0] != nil {
			t.Errorf("acks = %v, want one nil", got)
		}
	})
	t.Run("row errors keep the first", func(t *testing.T) {
		out := make(chan *Batch, 1)
		b := mustNew(t, Config{MaxRows: 3, MaxBytes: LimitBytes, Linger: time.Hour}, out)
		acks := newAckLog()
		tr := acks.tracker("e")
		for range 3 {
			_ = b.Add(t.Context(), row(10), tr)
		}
		tr.Seal()
		bt := <-out
		first, second := errors.New("first"), errors.New("second")
		bt.RowDone(2, first)
		bt.RowDone(0, nil)
		bt.RowDone(1, second)
		if got := acks.get("e"); len(got) != 1 || got[0] != first {
			t.Errorf("acks = %v, want one with %v", got, first)
		}
	})
	t.Run("dead-lettered", func(t *testing.T) {
		errPost := errors.New("post failed")
		tests := []struct {
			name    string
			rows    []error // how each row is settled; no rows: all dead-lettered at mapping
			mark    bool
			wantErr error
		}{
			{"all rows dead-lettered before batching", nil, true, source.ErrDeadLettered},
			{"one row dead-lettered, one accepted", []error{nil, nil}, true, source.ErrDeadLettered},
			{"a failure wins over dead-lettered", []error{nil, errPost}, true, errPost},
			{"not marked", []error{nil, nil}, false, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				out := make(chan *Batch, 1)
				b := mustNew(t, Config{MaxRows: max(1, len(tt.rows)), MaxBytes: LimitBytes, Linger: time.Hour}, out)
				acks := newAckLog()
				tr := acks.tracker("e")
				for range tt.rows {
					_ = b.Add(t.Context(), row(10), tr)
				}
				if tt.mark {
					tr.MarkDeadLettered()
				}
				tr.Seal()
				if len(tt.rows) > 0 {
					bt := <-out
					for i, err := range tt.rows {
						bt.RowDone(i, err)
					}
				}
				got := acks.get("e")
				if len(got) != 1 || got[0] != tt.wantErr {
					t.Errorf("acks = %v, want one %v", got, tt.wantErr)
				}
			})
		}
	})
	misuse := []struct {
		name string
		do   func(tr *Tracker, b *Batcher, out chan *Batch)
	}{
		{"sealed twice", func(tr *Tracker, _ *Batcher, _ chan *Batch) { tr.Seal(); tr.Seal() }},
		{"row settled twice", func(tr *Tracker, b *Batcher, out chan *Batch) {
			_ = b.Add(context.Background(), row(10), tr)
			tr.Seal()
			bt := <-out
			bt.Done(nil)
			bt.Done(nil)
		}},
		{"row added after ack", func(tr *Tracker, b *Batcher, _ chan *Batch) {
			tr.Seal()
			_ = b.Add(context.Background(), row(10), tr)
		}},
	}
	for _, m := range misuse {
		t.Run("panics when "+m.name, func(t *testing.T) {
			out := make(chan *Batch, 1)
			b := mustNew(t, Config{MaxRows: 1, MaxBytes: LimitBytes, Linger: time.Hour}, out)
			acks := newAckLog()
			tr := acks.tracker("e")
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
				if n := len(acks.get("e")); n > 1 {
					t.Errorf("acked %d times", n)
				}
			}()
			m.do(tr, b, out)
		})
	}
}

func TestSplit(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 10} {
		t.Run(fmt.Sprintf("%d rows", n), func(t *testing.T) {
			out := make(chan *Batch, 1)
			b := mustNew(t, Config{MaxRows: n, MaxBytes: LimitBytes, Linger: time.Hour}, out)
			acks := newAckLog()
			for i := range n {
				tr := acks.tracker(fmt.Sprint(i))
				if err := b.Add(t.Context(), row(9+i), tr); err != nil {
					t.Fatal(err)
				}
				tr.Seal()
			}
			parent := <-out
			rows := append([]json.RawMessage(nil), parent.Rows...)
			first, second := parent.Split()
			if n == 1 {
				if first != parent || second != nil {
					t.Fatalf("Split of one row = %p, %v; want the batch itself and nil", first, second)
				}
				return
			}
			if first.Len() != n/2 || second.Len() != n-n/2 {
				t.Fatalf("halves of %d and %d rows", first.Len(), second.Len())
			}
			checkBody(t, first, LimitBytes)
			checkBody(t, second, LimitBytes)
			// Appending to the first half must not overwrite the second.
			first.Rows = append(first.Rows, row(40))
			for i, r := range append(first.Rows[:n/2:n/2], second.Rows...) {
				if string(r) != string(rows[i]) {
					t.Errorf("row %d = %s, want %s", i, r, rows[i])
				}
			}
			first.Rows = first.Rows[:n/2]
			// The rows still ack their own events.
			second.Done(nil)
			for i := range n {
				want := 0
				if i >= n/2 {
					want = 1
				}
				if got := len(acks.get(fmt.Sprint(i))); got != want {
					t.Errorf("event %d acked %d times after settling the second half, want %d", i, got, want)
				}
			}
			a, c := first.Split()
			a.Done(nil)
			if c != nil {
				c.Done(nil)
			}
			for i := range n {
				if got := len(acks.get(fmt.Sprint(i))); got != 1 {
					t.Errorf("event %d acked %d times, want once", i, got)
				}
			}
		})
	}
}

func TestBackpressureAndClose(t *testing.T) {
	cfg := Config{MaxRows: 1, MaxBytes: LimitBytes, Linger: time.Hour}
	t.Run("Add waits for out and keeps the row when ctx ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			out := make(chan *Batch) // nobody receives: out is full
			b := mustNew(t, cfg, out)
			acks := newAckLog()
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			trA := acks.tracker("a")
			go func() { done <- b.Add(ctx, row(10), trA); trA.Seal() }()
			synctest.Wait()
			if len(done) != 0 {
				t.Fatalf("Add returned %v while out was full", <-done)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Add = %v after ctx ended with its row added, want nil", err)
			}
			// The full batch is still held: a row with an ended ctx is refused,
			// and so is a Flush.
			if err := b.Add(ctx, row(10), acks.tracker("b")); !errors.Is(err, context.Canceled) {
				t.Fatalf("Add = %v, want context.Canceled", err)
			}
			if err := b.Flush(ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("Flush = %v, want context.Canceled", err)
			}
			// Once a receiver comes, Flush sends the held batch.
			go func() { bt := <-out; bt.Done(nil) }()
			if err := b.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			if got := acks.get("a"); len(got) != 1 || got[0] != nil {
				t.Errorf("event a acks = %v, want one nil", got)
			}
			if got := acks.get("b"); len(got) != 0 {
				t.Errorf("refused event b acked: %v", got)
			}
		})
	})
	t.Run("Close wakes blocked senders and returns the held batch", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			out := make(chan *Batch)
			b := mustNew(t, Config{MaxRows: 10, MaxBytes: LimitBytes, Linger: time.Second}, out)
			acks := newAckLog()
			trA := acks.tracker("a")
			if err := b.Add(t.Context(), row(10), trA); err != nil {
				t.Fatal(err)
			}
			trA.Seal()
			time.Sleep(2 * time.Second) // the linger send now blocks on out
			synctest.Wait()
			flushed := make(chan error, 1)
			go func() { flushed <- b.Flush(t.Context()) }()
			synctest.Wait()
			unsent := b.Close()
			if err := <-flushed; !errors.Is(err, ErrClosed) {
				t.Errorf("blocked Flush = %v on Close, want ErrClosed", err)
			}
			if unsent == nil || unsent.Len() != 1 {
				t.Fatalf("Close returned %v, want the held batch of 1 row", unsent)
			}
			unsent.Done(errors.New("shut down"))
			if got := acks.get("a"); len(got) != 1 || got[0] == nil {
				t.Errorf("event a acks = %v, want one error", got)
			}
			if err := b.Add(t.Context(), row(10), acks.tracker("c")); !errors.Is(err, ErrClosed) {
				t.Errorf("Add after Close = %v, want ErrClosed", err)
			}
			if err := b.Flush(t.Context()); !errors.Is(err, ErrClosed) {
				t.Errorf("Flush after Close = %v, want ErrClosed", err)
			}
			if b.Close() != nil {
				t.Error("second Close returned a batch")
			}
		})
	})
}

func TestConcurrentAdds(t *testing.T) {
	const producers, events, rowsPer = 4, 300, 3
	out := make(chan *Batch, 4)
	b := mustNew(t, Config{MaxRows: 7, MaxBytes: 200, Linger: time.Millisecond}, out)
	acks := newAckLog()
	var rows sync.Map
	received := make(chan int)
	go func() {
		n := 0
		for bt := range out {
			for _, r := range bt.Rows {
				if _, dup := rows.LoadOrStore(string(r), true); dup {
					t.Errorf("row %s sent twice", r)
				}
			}
			n += bt.Len()
			bt.Done(nil)
		}
		received <- n
	}()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for e := range events {
				tr := acks.tracker(fmt.Sprintf("%d/%d", p, e))
				for r := range rowsPer {
					if err := b.Add(t.Context(), json.RawMessage(fmt.Sprintf(`{"p":%d,"e":%d,"r":%d}`, p, e, r)), tr); err != nil {
						t.Error(err)
						return
					}
				}
				tr.Seal()
			}
		})
	}
	wg.Wait()
	if err := b.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	close(out)
	if n := <-received; n != producers*events*rowsPer {
		t.Errorf("received %d rows, want %d", n, producers*events*rowsPer)
	}
	for p := range producers {
		for e := range events {
			if got := acks.get(fmt.Sprintf("%d/%d", p, e)); len(got) != 1 || got[0] != nil {
				t.Fatalf("event %d/%d acks = %v, want one nil", p, e, got)
			}
		}
	}
}

// TestAppend: batches merged by a sender make one exact body, keep each
// row with its event's tracker, and ack every event once.
func TestAppend(t *testing.T) {
	for _, sizes := range [][]int{{1, 1}, {3, 2, 4}, {5}} {
		t.Run(fmt.Sprint(sizes), func(t *testing.T) {
			acks := newAckLog()
			var batches []*Batch
			id := 0
			for _, n := range sizes {
				out := make(chan *Batch, 1)
				b := mustNew(t, Config{MaxRows: n, MaxBytes: LimitBytes, Linger: time.Hour}, out)
				for range n {
					tr := acks.tracker(fmt.Sprint(id))
					if err := b.Add(t.Context(), row(9+id), tr); err != nil {
						t.Fatal(err)
					}
					tr.Seal()
					id++
				}
				batches = append(batches, <-out)
			}
			merged := batches[0]
			for _, o := range batches[1:] {
				want := merged.BytesWith(o)
				merged.Append(o)
				if merged.Bytes != want {
					t.Fatalf("Bytes %d after Append, BytesWith said %d", merged.Bytes, want)
				}
			}
			checkBody(t, merged, LimitBytes)
			if merged.Len() != id {
				t.Fatalf("%d rows merged, want %d", merged.Len(), id)
			}
			// Row i is event i's, and settling it acks that event alone.
			for i := range id {
				if string(merged.Rows[i]) != string(row(9+i)) {
					t.Fatalf("row %d = %s, want %s", i, merged.Rows[i], row(9+i))
				}
				merged.RowDone(i, nil)
				for j := range id {
					want := 0
					if j <= i {
						want = 1
					}
					if got := len(acks.get(fmt.Sprint(j))); got != want {
						t.Fatalf("after settling row %d, event %d acked %d times, want %d", i, j, got, want)
					}
				}
			}
		})
	}
}

// TestFront: the rows that fill a request up to its limits move to a new
// batch with their trackers; the rest stays, with an exact body size.
func TestFront(t *testing.T) {
	tests := []struct {
		name               string
		dst, src           int // rows
		maxRows, maxBytes  int
		wantFront, wantRem int
	}{
		{"rows bound", 2, 5, 4, LimitBytes, 2, 3},
		{"all fit", 1, 3, 10, LimitBytes, 3, 0},
		{"bytes bound", 1, 5, 10, -1, 2, 3}, // -1: room for two more rows exactly
		{"none fits", 4, 2, 4, LimitBytes, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acks := newAckLog()
			mk := func(prefix string, n int) *Batch {
				out := make(chan *Batch, 1)
				b := mustNew(t, Config{MaxRows: n, MaxBytes: LimitBytes, Linger: time.Hour}, out)
				for i := range n {
					tr := acks.tracker(fmt.Sprint(prefix, i))
					if err := b.Add(t.Context(), row(9+i), tr); err != nil {
						t.Fatal(err)
					}
					tr.Seal()
				}
				return <-out
			}
			dst, src := mk("d", tt.dst), mk("s", tt.src)
			if tt.maxBytes < 0 {
				tt.maxBytes = dst.Bytes + len(src.Rows[0]) + 1 + len(src.Rows[1]) + 1
			}
			front := src.Front(dst, tt.maxRows, tt.maxBytes)
			if tt.wantFront == 0 {
				if front != nil || src.Len() != tt.src {
					t.Fatalf("Front = %v, source keeps %d rows; want nil and all %d", front, src.Len(), tt.src)
				}
				return
			}
			if front.Len() != tt.wantFront || src.Len() != tt.wantRem {
				t.Fatalf("front %d rows, rest %d; want %d and %d", front.Len(), src.Len(), tt.wantFront, tt.wantRem)
			}
			checkBody(t, front, LimitBytes)
			if src.Len() > 0 {
				checkBody(t, src, LimitBytes)
			}
			if got := dst.BytesWith(front); got > tt.maxBytes {
				t.Errorf("merged body %d bytes, over %d", got, tt.maxBytes)
			}
			// Settling the front acks exactly the events of its rows.
			front.Done(nil)
			for i := range tt.src {
				want := 0
				if i < tt.wantFront {
					want = 1
				}
				if got := len(acks.get(fmt.Sprint("s", i))); got != want {
					t.Errorf("event s%d acked %d times, want %d", i, got, want)
				}
			}
		})
	}
}
