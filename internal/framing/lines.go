package framing

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrLineTooLong is the error (wrapped) of a line longer than the limit.
// The line's Data holds its first max bytes; the rest of the line is
// skipped and reading goes on with the next line.
var ErrLineTooLong = errors.New("line too long")

// DefaultChunk is the size of the buffers Lines reads into.
const DefaultChunk = 64 << 10

// Line is one event framed from NDJSON input.
type Line struct {
	// Data is the line without its newline (and CR). It points into a
	// buffer that is never written again: it stays valid.
	Data []byte
	// No is the line's number, counted from 1, blank lines included.
	No int64
	// Err, when not nil, wraps ErrLineTooLong, ErrInvalidUTF8 or
	// ErrEmptyArray and names the input and the line: the event goes to
	// the dead letter.
	Err error
}

// Lines cuts newline-delimited JSON into events, one per non-blank line,
// the same way however the input arrives (byte by byte from a terminal, in
// 64 KiB reads from a file): a leading UTF-8 BOM stripped, a CRLF line
// ending accepted, a last line without a newline an event too. A line over
// the limit, blank or not, comes out cut to its first max bytes with an
// error wrapping ErrLineTooLong, and is never held whole: it costs at most
// one buffer however long it is. Every other line passes through Check.
//
// Lines points events into the buffers it reads into rather than copy
// them: a buffer that holds an event is never written again, and is left
// to the garbage collector once no event points into it.
type Lines struct {
	r       io.Reader
	name    string
	maxLine int
	size    int // the size of a new buffer

	chunk    []byte
	begin    int  // start of the unfinished line in chunk
	end      int  // end of the data in chunk
	shared   bool // some event points into chunk: never write over it
	skipping bool // inside an over-long line, discarding up to its newline
	lineNo   int64
	first    bool // the BOM check is pending
	batch    []Line
	err      error // the end, once reached
}

// NewLines returns a reader of the lines of r. maxLine is the longest line
// accepted (at least 1), chunk the size of the buffers read into
// (DefaultChunk when not positive), name what error messages call the
// input ("stdin").
func NewLines(r io.Reader, maxLine, chunk int, name string) *Lines {
	if chunk <= 0 {
		chunk = DefaultChunk
	}
	return &Lines{r: r, name: name, maxLine: max(maxLine, 1), size: chunk, chunk: make([]byte, chunk), first: true}
}

// Next reads the input once and returns the events that read completed
// (none, when it ended no line). err is io.EOF once the input has ended,
// returned with its last events, or the read error that stopped it,
// wrapped with the number of the last line read: the unfinished line is
// dropped then, since it may be cut short. After an error, Next returns it
// again and no events. The slice returned is reused by the next call; the
// events' Data stays valid.
func (l *Lines) Next() ([]Line, error) {
	if l.err != nil {
		return nil, l.err
	}
	l.batch = l.batch[:0]
	n, err := l.r.Read(l.chunk[l.end:])
	l.end += n
	for {
		i := bytes.IndexByte(l.chunk[l.begin:l.end], '\n')
		if i < 0 {
			break
		}
		if l.skipping {
			l.skipping = false
		} else {
			l.line(l.chunk[l.begin : l.begin+i])
		}
		l.begin += i + 1
	}
	if l.skipping {
		l.begin = l.end
	} else if head := l.unfinished(); len(head) > l.maxLine+1 { // +1: a CR before the newline is not counted
		// Too long whatever comes next: emit its head now, skip the rest.
		// The line is cut as line would cut it whole, so that how the
		// input was chunked never changes what becomes of a line.
		l.lineNo++
		l.first = false
		l.emit(head[:l.maxLine:l.maxLine], l.tooLong())
		l.skipping = true
		l.begin = l.end
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			if !l.skipping && l.end > l.begin {
				l.line(l.chunk[l.begin:l.end])
			}
			l.err = io.EOF
		} else {
			l.err = fmt.Errorf("reading %s after line %d: %w", l.name, l.lineNo, err)
		}
		return l.batch, l.err
	}
	// Make room for the next read.
	switch {
	case l.begin == l.end && !l.shared:
		l.begin, l.end = 0, 0 // nothing points into chunk: reuse it
	case len(l.chunk)-l.end < l.size/16+1:
		partial := l.end - l.begin
		next := make([]byte, max(l.size, 2*partial))
		copy(next, l.chunk[l.begin:l.end])
		l.chunk, l.begin, l.end, l.shared = next, 0, partial, false
	}
	return l.batch, nil
}

// line handles one complete line (without its '\n').
func (l *Lines) line(data []byte) {
	l.lineNo++
	if l.first {
		l.first = false
		data = StripBOM(data)
	}
	if n := len(data); n > 0 && data[n-1] == '\r' {
		data = data[:n-1]
	}
	switch {
	case len(data) > l.maxLine: // blank or not, as the cut in Next
		l.emit(data[:l.maxLine:l.maxLine], l.tooLong())
	case isBlank(data):
	default:
		var err error
		if bad := Check(data); bad != nil {
			err = fmt.Errorf("%s line %d: %w", l.name, l.lineNo, bad)
		}
		l.emit(data[:len(data):len(data)], err)
	}
}

func (l *Lines) emit(data []byte, err error) {
	l.batch = append(l.batch, Line{Data: data, No: l.lineNo, Err: err})
	l.shared = true
}

// unfinished returns the part of a line read so far that counts against
// the limit: without the stream's BOM on the first line (which line strips
// too; a BOM still arriving is at most 2 bytes, below any limit).
func (l *Lines) unfinished() []byte {
	partial := l.chunk[l.begin:l.end]
	if l.first {
		return StripBOM(partial)
	}
	return partial
}

func (l *Lines) tooLong() error {
	return fmt.Errorf("%s line %d: longer than max_line_bytes %d: %w", l.name, l.lineNo, l.maxLine, ErrLineTooLong)
}

// isBlank reports whether a line holds only spaces and tabs (and CRs).
func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}
