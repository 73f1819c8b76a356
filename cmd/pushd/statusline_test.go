package main

import (
	"bytes"
	"os"
	"testing"
)

// TestTermStatus: the status is redrawn in place, log lines pass above it,
// and Done leaves the last status on its own line.
func TestTermStatus(t *testing.T) {
	var out bytes.Buffer
	s := &termStatus{w: &out}
	_, _ = s.Write([]byte("log before\n"))
	s.Set("a: 1 read")
	s.Set("a: 2 read")
	_, _ = s.Write([]byte("log between\n"))
	s.Done()
	want := "log before\n" + clearLine + "a: 1 read" + clearLine + "a: 2 read" + clearLine + "log between\n" + "a: 2 read" + "\n"
	if got := out.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'x'
	}
	out.Reset()
	s.Set(string(long))
	if n := len([]rune(out.String())) - len(clearLine); n != maxStatusWidth {
		t.Errorf("a long status takes %d characters, want %d", n, maxStatusWidth)
	}
}

// TestIsTerminal: a pipe or a buffer is no terminal, so tests, CI and
// `pushd run 2> log` get progress log lines.
func TestIsTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) || isTerminal(&bytes.Buffer{}) {
		t.Error("a pipe or a buffer taken for a terminal")
	}
}
