package main

import (
	"io"
	"os"
	"sync"
)

// termStatus is the live one-line status of `pushd run` on a terminal: the
// line is redrawn in place, and log lines written through it appear above
// it (the line is cleared, the log written, the line drawn again).
type termStatus struct {
	mu   sync.Mutex
	w    io.Writer
	line string
}

// clearLine returns the cursor to the start of the line and erases it.
const clearLine = "\r\x1b[K"

// maxStatusWidth keeps the status on one line of a usual terminal.
const maxStatusWidth = 160

// Write writes a log line above the status.
func (t *termStatus) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.line != "" {
		_, _ = io.WriteString(t.w, clearLine)
	}
	n, err := t.w.Write(p)
	if t.line != "" {
		_, _ = io.WriteString(t.w, t.line)
	}
	return n, err
}

// Set replaces the status.
func (t *termStatus) Set(text string) {
	if r := []rune(text); len(r) > maxStatusWidth {
		text = string(r[:maxStatusWidth-1]) + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.line = text
	_, _ = io.WriteString(t.w, clearLine+text)
}

// Done ends the status line, leaving its last text on screen.
func (t *termStatus) Done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.line != "" {
		_, _ = io.WriteString(t.w, "\n")
	}
	t.line = ""
}

// isTerminal tells whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
