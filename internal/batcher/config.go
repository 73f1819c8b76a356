package batcher

import "time"

// Config says when a batch is flushed: whichever limit is reached first.
type Config struct {
	// MaxRows per request; Power BI accepts at most 10,000 (the default).
	MaxRows int `yaml:"max_rows"`
	// MaxBytes of the encoded request body; Power BI accepts at most 16 MB
	// (the default, 16,000,000 bytes to stay clear of the limit).
	MaxBytes int `yaml:"max_bytes"`
	// Linger is the longest a row waits for its batch to fill (default 1s).
	Linger time.Duration `yaml:"linger"`
}
