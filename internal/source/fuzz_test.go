package source

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/framing"
	"github.com/segmentio/kafka-go"
)

// The fuzz target for Kafka records. (HTTP ingest bodies and stdin lines
// are fuzzed in internal/framing, where their framing lives.)
//
//	go test -run '^$' -fuzz FuzzKafkaRecord -fuzztime 10s ./internal/source/

// FuzzKafkaRecord decodes Kafka records as the source hands them to the
// pipeline (Kafka.event, on kafka-go's Message): the value with a leading
// BOM stripped and the rule every source follows applied, the error naming
// the record; the key, headers (the last of a repeated name wins),
// partition and offset readable through the metadata paths (@key,
// @headers.NAME ...); and the ack: the first one frees the in-flight slot
// and moves the offset to commit past the record (or not, when it failed),
// a second one changes nothing. Never a panic.
func FuzzKafkaRecord(f *testing.F) {
	f.Add([]byte(`{"device":{"id":"dev-1"},"seq":1}`), []byte("dev-1"), "trace", []byte("abc"), "trace", []byte("def"), int32(2), int64(42), uint8(0))
	f.Add([]byte("\xef\xbb\xbf{\"a\":1}"), []byte(nil), "", []byte(nil), "", []byte(nil), int32(0), int64(0), uint8(1))
	f.Add([]byte(`[]`), []byte("\xff"), "h\xff", []byte("\xfe"), "g", []byte{}, int32(-1), int64(-1), uint8(2))
	f.Add([]byte(" [ \n ] "), []byte{}, "x", []byte{}, "", []byte(nil), int32(7), int64(1<<62), uint8(0))
	f.Add([]byte(`{"s":"\xc3"}`), []byte("k"), "a", []byte("1"), "b", []byte("2"), int32(1), int64(9), uint8(1))
	f.Add([]byte(`this is not json`), []byte{}, "x", []byte{}, "", []byte(nil), int32(7), int64(1<<62), uint8(2))
	f.Fuzz(func(t *testing.T, value, key []byte, h1 string, v1 []byte, h2 string, v2 []byte, partition int32, offset int64, outcome uint8) {
		if offset < 0 {
			offset = -(offset + 1) // a record's offset is never negative
		}
		if offset == math.MaxInt64 {
			offset-- // nor the last int64: the offset to commit is one past it
		}
		msg := kafka.Message{Topic: "events", Partition: int(partition), Offset: offset, HighWaterMark: offset + 1, Key: key, Value: value}
		headers := map[string]string{}
		for _, h := range []kafka.Header{{Key: h1, Value: v1}, {Key: h2, Value: v2}} {
			if h.Key != "" {
				msg.Headers = append(msg.Headers, h)
				headers[h.Key] = string(h.Value)
			}
		}
		k := &Kafka{tracker: newOffsetTracker(), log: slog.New(slog.DiscardHandler), sem: make(chan struct{}, 1)}
		k.sem <- struct{}{} // as Read takes it
		ev, ack, err := k.event(&msg)
		if err != nil {
			t.Fatal(err)
		}
		if want := framing.StripBOM(value); !bytes.Equal(ev.Data, want) {
			t.Fatalf("event data %q, want %q", ev.Data, want)
		}
		if bad := framing.Check(ev.Data); (bad == nil) != (ev.Err == nil) || !errors.Is(ev.Err, bad) {
			t.Fatalf("event %q marked %v, the rule says %v", ev.Data, ev.Err, bad)
		}
		where := KafkaPosition("events", int(partition), offset)
		if ev.Where() != where || (ev.Err != nil && !strings.HasPrefix(ev.Err.Error(), where+": ")) {
			t.Fatalf("event at %s (error %v), want %s", ev.Where(), ev.Err, where)
		}
		checkKafkaMeta(t, ev.Meta, msg, headers)
		failed := outcome%3 == 2
		ackErr := []error{nil, fmt.Errorf("bad row: %w", ErrDeadLettered), errors.New("not delivered")}[outcome%3]
		ack(ackErr)
		if len(k.sem) != 0 {
			t.Fatalf("the ack did not free the in-flight slot")
		}
		ack(nil) // a second ack changes nothing (and does not block on sem)
		next := offset + 1
		if failed {
			next = offset
		}
		if points := k.tracker.toCommit(); len(points) != 1 || points[0].next != next {
			t.Fatalf("after ack(%v) of offset %d: to commit %+v, want next %d", ackErr, offset, points, next)
		}
	})
}

// checkKafkaMeta holds the event's metadata against the record.
func checkKafkaMeta(t *testing.T, meta *Metadata, msg kafka.Message, headers map[string]string) {
	t.Helper()
	k, ok := meta.MetaValue("key")
	if (msg.Key != nil) != ok || (ok && k != string(msg.Key)) {
		t.Fatalf("@key = %v, %v; record key %q", k, ok, msg.Key)
	}
	if v, ok := meta.MetaValue("topic"); !ok || v != msg.Topic {
		t.Fatalf("@topic = %v, %v; want %s", v, ok, msg.Topic)
	}
	if v, ok := meta.MetaValue("partition"); !ok || v != int64(msg.Partition) {
		t.Fatalf("@partition = %v, %v; want %d", v, ok, msg.Partition)
	}
	if v, ok := meta.MetaValue("offset"); !ok || v != msg.Offset {
		t.Fatalf("@offset = %v, %v; want %d", v, ok, msg.Offset)
	}
	for name, want := range headers {
		if v, ok := meta.MetaValue("headers." + name); !ok || v != want {
			t.Fatalf("@headers.%s = %v, %v; want %q", name, v, ok, want)
		}
	}
	if len(meta.Headers) != len(headers) {
		t.Fatalf("headers %v, want %v", meta.Headers, headers)
	}
	if _, ok := meta.MetaValue("headers." + "absent\x00"); ok {
		t.Fatalf("an absent header answers")
	}
}
