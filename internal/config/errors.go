package config

import (
	"strconv"
	"strings"
)

// Problem is one thing wrong with a config.
type Problem struct {
	// Path of the key, e.g. "pipelines[0].batch.max_rows"; empty for a
	// problem with the document as a whole (a YAML syntax error).
	Path string
	// Line in the file (1-based): the key's line, or for a missing key the
	// line of the section that lacks it; 0 when unknown.
	Line int
	// Msg says what is wrong, e.g. "must be 1..10000, got 20000".
	Msg string
}

// Error lists every problem found in one config file. It prints one problem
// per line as FILE:LINE: PATH: MSG, in line order.
type Error struct {
	// File is the name given to Load or Parse.
	File     string
	Problems []Problem
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File)
		if p.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
		if p.Path != "" {
			b.WriteString(p.Path)
			b.WriteString(": ")
		}
		b.WriteString(p.Msg)
	}
	return b.String()
}
