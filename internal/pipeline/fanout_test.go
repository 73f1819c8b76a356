package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/source"
)

// fakeTarget records the rows it accepts. While hold is open, Send waits
// (a throttled target). A row containing bad is refused alone (RowErrors),
// with the verdict badVerdict.
type fakeTarget struct {
	mu       sync.Mutex
	accepted []string
	sends    int
	hold     chan struct{} // nil: never held
	bad      string
	verdict  Outcome
	sendErr  error // every Send fails with it when set
	entered  chan struct{}
}

func (f *fakeTarget) Send(ctx context.Context, rows []json.RawMessage) error {
	f.mu.Lock()
	f.sends++
	hold := f.hold
	f.mu.Unlock()
	if f.entered != nil {
		select {
		case f.entered <- struct{}{}:
		default:
		}
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.sendErr != nil {
		return f.sendErr
	}
	errs := make(rowErrs, len(rows))
	failed := false
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range rows {
		if f.bad != "" && strings.Contains(string(r), f.bad) {
			errs[i] = errors.New("refused: " + f.bad)
			failed = true
			continue
		}
		f.accepted = append(f.accepted, string(r))
	}
	if failed {
		return errs
	}
	return nil
}

func (f *fakeTarget) Verdict(err error) Verdict {
	return Verdict{Outcome: f.verdict, Rule: "size", Message: err.Error()}
}

func (f *fakeTarget) rows() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.accepted...)
}

type rowErrs []error

func (e rowErrs) Error() string        { return "some rows failed" }
func (e rowErrs) RowError(i int) error { return e[i] }
func (e rowErrs) Unwrap() []error      { return nil }
func (f *fakeTarget) String() string   { return fmt.Sprint(len(f.accepted)) }

func eventsN(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"id":%d,"name":"n%d"}`, i, i)
	}
	return out
}

func fanOutPipeline(t *testing.T, src source.Source, dl DeadLetter, maxUnacked int, targets ...*fakeTarget) *Pipeline {
	t.Helper()
	var opts []TargetOptions
	for i, ft := range targets {
		opts = append(opts, TargetOptions{Name: fmt.Sprintf("t%d", i), Target: ft,
			Batch: batcher.Config{MaxRows: 10, MaxBytes: batcher.LimitBytes, Linger: 10 * time.Millisecond}, Senders: 2})
	}
	p, err := New(Options{Name: "fan", Source: src, Mapper: testMapper(t), Targets: opts, DeadLetter: dl, MaxUnacked: maxUnacked})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFanOutHeldTarget: while one target is held (throttled), the other
// keeps receiving rows up to max_unacked_events, and no event is acked
// until both accepted its row; once released, every event lands once in
// each target and is acked once.
func TestFanOutHeldTarget(t *testing.T) {
	const n, bound = 400, 150
	src := newSliceSource(eventsN(n)...)
	fast := &fakeTarget{}
	slow := &fakeTarget{hold: make(chan struct{}), entered: make(chan struct{}, 1)}
	p := fanOutPipeline(t, src, &memDeadLetter{}, bound, fast, slow)
	done := make(chan Summary, 1)
	go func() {
		s, err := p.Run(t.Context())
		if err != nil {
			t.Error(err)
		}
		done <- s
	}()
	select {
	case <-slow.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the held target was never sent a batch")
	}
	// The fast target gets the rows of every unacked event, no more: the
	// reader stops at the bound.
	deadline := time.Now().Add(20 * time.Second)
	for len(fast.rows()) < bound && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := len(fast.rows()); got != bound {
		t.Fatalf("the free target got %d rows while the other was held, want the bound %d", got, bound)
	}
	src.mu.Lock()
	acked, read := len(src.acks), src.next
	src.mu.Unlock()
	if acked != 0 || read > bound {
		t.Fatalf("while a target was held: %d events acked (want 0), %d read (want at most %d)", acked, read, bound)
	}
	close(slow.hold)
	s := <-done
	for name, ft := range map[string]*fakeTarget{"fast": fast, "slow": slow} {
		seen := map[string]int{}
		for _, r := range ft.rows() {
			seen[r]++
		}
		if len(seen) != n {
			t.Errorf("%s target: %d distinct rows, want %d", name, len(seen), n)
		}
		for r, c := range seen {
			if c != 1 {
				t.Errorf("%s target: row %s landed %d times", name, r, c)
			}
		}
	}
	for i := range n {
		if err, ok := src.acks[i]; !ok || err != nil {
			t.Fatalf("event %d ack = %v (acked %v), want nil", i, err, ok)
		}
	}
	if s.RowsAccepted != 2*n || len(s.Targets) != 2 || s.Targets[0].RowsAccepted != n || s.Targets[1].RowsAccepted != n {
		t.Errorf("summary %+v, want %d rows accepted by each target", s, n)
	}
}

// TestFanOutRowOutcomes: a row one target refuses for good goes to the dead
// letter naming that target, the other target still gets it, the event is
// acked as dead-lettered; a fatal verdict stops the pipeline with nothing
// acked as done.
func TestFanOutRowOutcomes(t *testing.T) {
	t.Run("dead letter for one target", func(t *testing.T) {
		src := newSliceSource(`{"id":1,"name":"ok"}`, `{"id":2,"name":"huge"}`, `{"id":3,"name":"ok"}`)
		dl := &memDeadLetter{}
		pb := &fakeTarget{}
		es := &fakeTarget{bad: "huge", verdict: OutcomeDeadLetter}
		s, err := fanOutPipeline(t, src, dl, 10, pb, es).Run(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(pb.rows()) != 3 || len(es.rows()) != 2 {
			t.Errorf("rows: %d in t0, %d in t1; want 3 and 2", len(pb.rows()), len(es.rows()))
		}
		if len(dl.got) != 1 || dl.got[0].Target != "t1" || dl.got[0].Rule != "size" || !strings.Contains(string(dl.got[0].Row), "huge") {
			t.Fatalf("dead letter %+v, want the huge row refused by t1", dl.got)
		}
		if !errors.Is(src.acks[1], source.ErrDeadLettered) || src.acks[0] != nil || src.acks[2] != nil {
			t.Errorf("acks %v, want event 1 dead-lettered and the others nil", src.acks)
		}
		if s.Targets[1].RowsDeadLettered != 1 || s.Targets[1].RowsAccepted != 2 {
			t.Errorf("t1 summary %+v", s.Targets[1])
		}
	})
	t.Run("fatal stops the pipeline", func(t *testing.T) {
		src := newSliceSource(eventsN(5)...)
		src.block = true
		es := &fakeTarget{sendErr: errors.New("authentication failed"), verdict: OutcomeFatal}
		_, err := fanOutPipeline(t, src, &memDeadLetter{}, 10, &fakeTarget{}, es).Run(t.Context())
		if err == nil || !strings.Contains(err.Error(), "target t1: authentication failed") {
			t.Fatalf("Run = %v, want the target's refusal", err)
		}
		for i, err := range src.acks {
			if err == nil {
				t.Errorf("event %d acked as done although target t1 refused it", i)
			}
		}
	})
}
