// Package source defines how pushd reads events and acknowledges them, and
// holds one implementation per kind of input (stdin, Kafka, HTTP).
package source

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// ErrEndOfInput is returned by Read when a finite source (stdin) has no more
// events. The pipeline then drains, flushes and exits.
var ErrEndOfInput = errors.New("end of input")

// Source yields events. Read blocks until an event, the end of input
// (ErrEndOfInput) or ctx ends. Close releases the source; a Kafka source
// commits what was acknowledged before it returns.
type Source interface {
	Read(ctx context.Context) (Event, Ack, error)
	Close(ctx context.Context) error
}

// Ack is called exactly once per event: nil when its rows were accepted or
// dead-lettered, an error when they were not (the source then must not commit
// past it; the event comes again after a restart).
type Ack func(err error)

// Event is one unit read from a source: a JSON object or an array of objects.
type Event struct {
	// Data is the raw event body. It stays valid until the event is acked.
	Data []byte
	// Position says where the event came from, for dead letters and logs:
	// "stdin:42" (line), "http:127.0.0.1:5555#7/0". The Kafka source leaves
	// it empty (formatting it for every record would cost more than the
	// rest of the record's handling); Where formats it from Meta.
	Position string
	// Meta carries values from outside the body (Kafka key, topic, headers);
	// nil for sources that have none.
	Meta *Metadata
	// Err, when not nil, is a problem the source found with this event before
	// anyone parsed it (a stdin line over the size limit, invalid UTF-8). The
	// pipeline does not map such an event: it writes it to the dead letter
	// with Err as the reason (kind "source") and then acks it, so the stream
	// goes on. Data then holds what the source kept (for an over-long line,
	// its first bytes).
	Err error
	// Claim, when not nil, lets the source withdraw the event until its
	// rows are taken for sending (see Claim); nil for sources that never
	// withdraw (stdin, Kafka).
	Claim *Claim
}

// Where returns the event's position: Position, or for a Kafka record
// "kafka:topic/partition@offset" made from Meta. Call it only where the
// position is shown (dead letters, logs).
func (e Event) Where() string {
	if e.Position == "" && e.Meta != nil {
		return KafkaPosition(e.Meta.Topic, e.Meta.Partition, e.Meta.Offset)
	}
	return e.Position
}

// Metadata holds the Kafka record fields that schema columns can read with
// paths starting with "@": @key, @topic, @partition, @offset, @timestamp,
// @headers.NAME.
type Metadata struct {
	Key       []byte
	Topic     string
	Partition int
	Offset    int64
	Timestamp time.Time
	Headers   map[string]string
}

// MetaValue implements schema.Meta.
func (m *Metadata) MetaValue(name string) (any, bool) {
	if m == nil {
		return nil, false
	}
	switch name {
	case "key":
		if m.Key == nil {
			return nil, false
		}
		return string(m.Key), true
	case "topic":
		return m.Topic, true
	case "partition":
		return int64(m.Partition), true
	case "offset":
		return m.Offset, true
	case "timestamp":
		if m.Timestamp.IsZero() {
			return nil, false
		}
		return m.Timestamp, true
	}
	const prefix = "headers."
	if len(name) > len(prefix) && name[:len(prefix)] == prefix {
		v, ok := m.Headers[name[len(prefix):]]
		return v, ok
	}
	return nil, false
}

// KafkaPosition formats a Kafka record position for dead letters and logs.
func KafkaPosition(topic string, partition int, offset int64) string {
	return "kafka:" + topic + "/" + strconv.Itoa(partition) + "@" + strconv.FormatInt(offset, 10)
}
