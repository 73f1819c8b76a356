package batcher

import (
	"errors"
	"fmt"
	"time"
)

// Power BI's documented limits for one POST of rows.
const (
	// LimitRows is the most rows Power BI accepts in one request.
	LimitRows = 10_000
	// LimitBytes is the largest request body pushd sends: Power BI's limit is
	// 16 MB; 16,000,000 bytes stays clear of it whichever way MB is counted.
	LimitBytes = 16_000_000
)

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

// DefaultConfig returns Power BI's limits and a one-second linger.
func DefaultConfig() Config {
	return Config{MaxRows: LimitRows, MaxBytes: LimitBytes, Linger: time.Second}
}

// Validate reports every problem at once, each naming its key relative to
// the batch section ("max_rows: must be 1..10000, got 20000"); the config
// loader prefixes the path of the section.
func (c Config) Validate() error {
	var errs []error
	if c.MaxRows < 1 || c.MaxRows > LimitRows {
		errs = append(errs, fmt.Errorf("max_rows: must be 1..%d, got %d", LimitRows, c.MaxRows))
	}
	if c.MaxBytes < 1 || c.MaxBytes > LimitBytes {
		errs = append(errs, fmt.Errorf("max_bytes: must be 1..%d, got %d", LimitBytes, c.MaxBytes))
	}
	if c.Linger <= 0 {
		errs = append(errs, fmt.Errorf("linger: must be > 0, got %s", c.Linger))
	}
	return errors.Join(errs...)
}
