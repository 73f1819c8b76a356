package source

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// run makes a run of records of partition 0 at offsets from..to-1.
func testRun(gen uint64, from, to int64) recordRun {
	r := recordRun{gen: gen}
	for o := from; o < to; o++ {
		r.msgs = append(r.msgs, kafka.Message{Topic: testTopic, Offset: o, Value: fmt.Appendf(nil, `{"o":%d}`, o)})
	}
	return r
}

// TestKafkaReadTakesRunsAndDropsEndedGenerations: Read hands out the records
// of each run in order; once a new generation started, what is left of a
// run of the ended one (in hand or queued) is dropped, as kafka-go's Reader
// drops it (it is fetched again from the committed offset), and the runs
// given back for reuse hold no record.
func TestKafkaReadTakesRunsAndDropsEndedGenerations(t *testing.T) {
	k := &Kafka{queue: newRunQueue(4 * fetchRun), closing: make(chan struct{})}
	k.genSeq.Store(1)
	ctx := context.Background()
	next := func() int64 {
		t.Helper()
		m, err := k.nextRecord(ctx)
		if err != nil {
			t.Fatalf("nextRecord: %v", err)
		}
		return m.Offset
	}
	k.queue.runs <- testRun(1, 0, 3)
	k.queue.runs <- testRun(1, 3, 5)
	for want := int64(0); want < 4; want++ {
		if got := next(); got != want {
			t.Fatalf("record at offset %d, want %d", got, want)
		}
	}
	// A rebalance: the rest of the generation 1 run in hand (offset 4) and
	// the queued one (offsets 5, 6) are not handed out.
	k.genSeq.Store(2)
	k.queue.runs <- testRun(1, 5, 7)
	k.queue.runs <- testRun(2, 4, 6)
	for want := int64(4); want < 6; want++ {
		if got := next(); got != want {
			t.Fatalf("after the new generation: record at offset %d, want %d (of generation 2)", got, want)
		}
	}
	if len(k.queue.free) == 0 {
		t.Fatal("no emptied run was given back for reuse")
	}
	for range len(k.queue.free) {
		b := <-k.queue.free
		if len(b) != 0 {
			t.Fatalf("a run given back holds %d records", len(b))
		}
		for _, m := range b[:cap(b)] {
			if m.Value != nil || m.Offset != 0 {
				t.Fatalf("a run given back still refers to a record: %+v", m)
			}
		}
	}

	// Nothing queued: Read waits until ctx ends, or the source closes.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := k.nextRecord(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("nextRecord with nothing queued = %v, want the context's deadline", err)
	}
	close(k.closing)
	if _, err := k.nextRecord(ctx); err == nil {
		t.Fatal("nextRecord after Close = nil error")
	}
}

// TestKafkaBacklogCountsWhatWaitsInTheQueue: the backlog (which decides
// when: overloaded) takes each partition's end from the fetch that read it,
// not from the records Read has handed out: records fetched and waiting in
// the queue, or produced since, count although Read is not called.
func TestKafkaBacklogCountsWhatWaitsInTheQueue(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	produce(t, c, 0, 10)
	k := newTestKafka(t, testKafkaConfig(c, "g-backlog"), testKafkaOptions(t))
	readN(t, k, 1) // one partition seen; not acked
	produce(t, c, 10, 100)
	deadline := time.Now().Add(15 * time.Second)
	for {
		// 330 records, one handed out; the partitions not read yet
		// count once Read sees them, so at least the 109 of the one read.
		if b := k.Backlog(); b >= 109 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("Backlog = %d with 109 records or more of the partition read waiting, want at least that", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
