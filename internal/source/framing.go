package source

import "github.com/pushd/pushd/internal/framing"

// The rule for invalid input is the same on every source (stdin, Kafka,
// HTTP): see framing.Check. A source frames its input into events its own
// way (lines, records, array elements) and then passes each event through
// it.

// ErrInvalidUTF8 is the Event.Err (wrapped) of an event that is not valid
// UTF-8, which JSON requires.
var ErrInvalidUTF8 = framing.ErrInvalidUTF8

// ErrEmptyArray is the Event.Err (wrapped) of an event that is an empty JSON
// array: it holds no object, so it would make no row.
var ErrEmptyArray = framing.ErrEmptyArray
