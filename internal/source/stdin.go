package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pushd/pushd/internal/framing"
)

// ErrLineTooLong is the Event.Err (wrapped) of a stdin line longer than the
// limit. The event's Data holds the line's first max bytes; the rest of the
// line is skipped and reading goes on with the next line.
var ErrLineTooLong = framing.ErrLineTooLong

// ErrUndelivered is wrapped by Stdin.Close when some events read were not
// delivered: acked with an error, or never acked. Standard input cannot be
// read again, so those events are lost unless the caller feeds them again.
var ErrUndelivered = errors.New("events not delivered")

// errStdinClosed is returned by Read after Close.
var errStdinClosed = errors.New("stdin source closed")

const (
	// stdinDefaultMaxLineBytes applies when NewStdin is given no limit.
	stdinDefaultMaxLineBytes = 1 << 20
	// stdinChunkBytes is the size of the buffers lines are read into. Events
	// point into them (no copy), so a chunk is never reused: it is dropped
	// to the garbage collector once every event in it is gone.
	stdinChunkBytes = framing.DefaultChunk
	// stdinReadAhead is how many read results the reader goroutine may hold
	// before Read takes them: a few chunks of read-ahead, no more.
	stdinReadAhead = 2
)

// Stdin reads newline-delimited JSON, one event per non-blank line, from an
// io.Reader (standard input in pushd run). Position is "stdin:<line>", with
// lines counted from 1, blank ones included. A line ending in CRLF loses the
// CR; a last line without a newline is an event too.
//
// A line over the limit, one that is not valid UTF-8 or one that is an
// empty array does not stop the stream: it comes out as an event whose Err
// wraps ErrLineTooLong, ErrInvalidUTF8 or ErrEmptyArray, for the pipeline to
// dead-letter and ack (the rule every source follows: see framing.Check).
//
// Lines are read by a goroutine that Stdin starts on the first Read, because
// a blocked read of standard input cannot be interrupted; Read itself waits
// on a channel and so honours its context. Close stops that goroutine,
// except that one blocked in the reader's Read leaves when that call returns
// (at the next line or the end of input).
//
// Stdin has nothing to commit, but it counts acks (Stats) so the run summary
// can say how many events were not delivered.
type Stdin struct {
	r         io.Reader
	maxLine   int
	name      string
	chunkSize int // stdinChunkBytes; smaller in tests to exercise the edges

	start sync.Once
	lines chan []stdinLine // batches of lines from the reader goroutine
	stop  chan struct{}    // closed by Close
	close sync.Once
	// end is the reader goroutine's last word (ErrEndOfInput or a read
	// error); written before lines is closed.
	end error

	mu      sync.Mutex  // serialises Read
	pending []stdinLine // lines taken from the channel, not yet returned

	read, acked, deadLettered, failed atomic.Int64
	lastLine                          atomic.Int64 // line of the last event returned by Read
	ended                             atomic.Bool  // Read returned ErrEndOfInput: all input read

	failedMu    sync.Mutex
	failedLines []int64 // lines of the events acked with an error (rare)
}

// ErrStoppedEarly is wrapped by Stdin.Close when reading stopped before the
// end of the input (a signal, a fatal error): the lines after the one it
// names were not read, and would be lost if the input were thrown away.
var ErrStoppedEarly = errors.New("stopped before the end of the input")

var _ Source = (*Stdin)(nil)

// stdinLine is one event prepared by the reader goroutine.
type stdinLine struct {
	data []byte
	pos  string
	line int64
	err  error
	done atomic.Bool // set by the first ack
}

// StdinStats counts the events of a Stdin source for the run summary.
type StdinStats struct {
	// Read is the number of events returned by Read.
	Read int64
	// Acked events were delivered: their rows were accepted.
	Acked int64
	// DeadLettered events (acked with source.ErrDeadLettered) went, whole
	// or in part, to the dead letter; they count as done.
	DeadLettered int64
	// Failed events were acked with another error: not delivered.
	Failed int64
	// Unacked events were read but never acked.
	Unacked int64
}

// NewStdin returns a source reading NDJSON from r. maxLineBytes is the
// longest line accepted (StdinConfig.MaxLineBytes; 1 MiB when not positive);
// name appears in error messages ("stdin", or the pipeline's name).
func NewStdin(r io.Reader, maxLineBytes int, name string) *Stdin {
	if maxLineBytes <= 0 {
		maxLineBytes = stdinDefaultMaxLineBytes
	}
	return &Stdin{
		r:         r,
		maxLine:   maxLineBytes,
		name:      name,
		chunkSize: stdinChunkBytes,
		lines:     make(chan []stdinLine, stdinReadAhead),
		stop:      make(chan struct{}),
	}
}

// Read returns the next event, ErrEndOfInput after the last one, or the
// error that ended reading. It blocks until one of these, ctx ends or Close.
// The event's Data stays valid until it is acked (and after).
func (s *Stdin) Read(ctx context.Context) (Event, Ack, error) {
	s.start.Do(func() { go s.run() })
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
		return Event{}, nil, errStdinClosed
	default:
	}
	for len(s.pending) == 0 {
		select {
		case batch, ok := <-s.lines:
			if !ok {
				if errors.Is(s.end, ErrEndOfInput) {
					s.ended.Store(true)
				}
				return Event{}, nil, s.end
			}
			s.pending = batch
		case <-ctx.Done():
			return Event{}, nil, fmt.Errorf("reading %s: %w", s.name, context.Cause(ctx))
		case <-s.stop:
			return Event{}, nil, errStdinClosed
		}
	}
	l := &s.pending[0]
	s.pending = s.pending[1:]
	s.read.Add(1)
	s.lastLine.Store(l.line)
	return Event{Data: l.data, Position: l.pos, Err: l.err}, func(err error) { s.ack(l, err) }, nil
}

// ack counts the first ack of an event; any later one is ignored.
func (s *Stdin) ack(l *stdinLine, err error) {
	if l.done.Swap(true) {
		return
	}
	switch {
	case err == nil:
		s.acked.Add(1)
	case errors.Is(err, ErrDeadLettered):
		s.deadLettered.Add(1)
	default:
		s.failed.Add(1)
		s.failedMu.Lock()
		s.failedLines = append(s.failedLines, l.line)
		s.failedMu.Unlock()
	}
}

// Stats returns the counts so far. Safe to call at any time.
func (s *Stdin) Stats() StdinStats {
	st := StdinStats{
		Acked:        s.acked.Load(),
		DeadLettered: s.deadLettered.Load(),
		Failed:       s.failed.Load(),
	}
	st.Read = s.read.Load()
	st.Unacked = max(0, st.Read-st.Acked-st.DeadLettered-st.Failed)
	return st
}

// Close stops reading: a Read waiting now or later returns an error. Call
// it after the pipeline has drained. It returns an error wrapping
// ErrUndelivered, naming their lines, when some events read were acked with
// an error or never acked; and one wrapping ErrStoppedEarly, naming the
// last line read, when reading stopped before the end of the input; so
// that a run that lost input does not look clean (`pushd run < f && rm f`
// keeps f). Close does not close the reader. Later calls do the same check.
func (s *Stdin) Close(context.Context) error {
	s.close.Do(func() { close(s.stop) })
	var errs []error
	st := s.Stats()
	if st.Failed > 0 || st.Unacked > 0 {
		s.failedMu.Lock()
		lines := lineRanges(s.failedLines, 20)
		s.failedMu.Unlock()
		detail := ""
		if lines != "" {
			detail = "; failed: line " + lines
		}
		errs = append(errs, fmt.Errorf("%s: %d of %d events read not delivered (%d failed, %d never acknowledged%s): %w",
			s.name, st.Failed+st.Unacked, st.Read, st.Failed, st.Unacked, detail, ErrUndelivered))
	}
	if !s.ended.Load() {
		last := s.lastLine.Load()
		errs = append(errs, fmt.Errorf("%s: %w, after line %d: the lines after it were not read; feed them again (tail -n +%d)",
			s.name, ErrStoppedEarly, last, last+1))
	}
	return errors.Join(errs...)
}

// lineRanges formats line numbers as sorted ranges ("4-6, 9"), at most max
// of them, then the count of the rest.
func lineRanges(lines []int64, max int) string {
	sorted := slices.Clone(lines)
	slices.Sort(sorted)
	var b strings.Builder
	ranges := 0
	for i := 0; i < len(sorted); {
		j := i
		for j+1 < len(sorted) && sorted[j+1] <= sorted[j]+1 {
			j++
		}
		if ranges == max {
			fmt.Fprintf(&b, " and %d more lines", len(sorted)-i)
			break
		}
		if ranges > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatInt(sorted[i], 10))
		if sorted[j] != sorted[i] {
			b.WriteString("-" + strconv.FormatInt(sorted[j], 10))
		}
		ranges++
		i = j + 1
	}
	return b.String()
}

// run is the reader goroutine: framing.Lines cuts the input into lines,
// and run hands them to Read in batches, one batch per read of the input.
func (s *Stdin) run() {
	defer close(s.lines)
	lines := framing.NewLines(s.r, s.maxLine, s.chunkSize, s.name)
	var pos []byte // scratch for positions
	for {
		framed, err := lines.Next()
		var batch []stdinLine
		if len(framed) > 0 {
			batch = make([]stdinLine, len(framed))
			for i, l := range framed {
				pos = strconv.AppendInt(append(pos[:0], "stdin:"...), l.No, 10)
				batch[i] = stdinLine{data: l.Data, pos: string(pos), line: l.No, err: l.Err}
			}
		}
		if err != nil {
			s.end = err
			if errors.Is(err, io.EOF) {
				s.end = ErrEndOfInput
			}
			s.send(batch)
			return
		}
		if !s.send(batch) {
			return
		}
	}
}

// send hands a batch to Read; false when Close came first.
func (s *Stdin) send(batch []stdinLine) bool {
	if len(batch) == 0 {
		return true
	}
	select {
	case s.lines <- batch:
		return true
	case <-s.stop:
		return false
	}
}
