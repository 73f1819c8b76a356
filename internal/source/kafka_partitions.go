package source

import (
	"context"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// PartitionState is one partition a source reads and how far behind its
// end the source is.
type PartitionState struct {
	Topic     string
	Partition int
	// Unread is how many records wait in it to be read: 0 when read up to
	// its end, -1 when the source does not know yet.
	Unread int64
}

// Partitioned is implemented by sources that read partitions (Kafka). A
// stage that orders events by event time across partitions (package
// reduce) asks it which partitions to wait for: one assigned but not read
// yet, or read behind its end, may still hold older events than any seen.
type Partitioned interface {
	// Partitions returns the partitions this member reads now, false
	// while it knows no assignment yet. A stage that will ask calls it
	// once at its start.
	Partitions() ([]PartitionState, bool)
}

var _ Partitioned = (*Kafka)(nil)

// assignedPartition is one partition of the member's assignment.
type assignedPartition struct {
	topicPartition
	// start is the offset reading starts at: the committed one, or
	// kafka-go's FirstOffset (-2) or LastOffset (-1) without a commit.
	start int64
	// first and end are the partition's first offset and high watermark
	// as the brokers last said, -1 until known.
	first, end int64
}

// assignment is the member's current assignment, from kafka-go's log of it
// (the Reader has no callback) and the brokers' offsets.
type assignment struct {
	mu    sync.Mutex
	known bool
	parts []assignedPartition
}

func (a *assignment) set(parts []assignedPartition, ok bool) {
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.known, a.parts = true, parts
}

// Partitions returns the assigned partitions with the records waiting in
// each: the high watermark (from the last fetch or the brokers) minus the
// next offset to read. The first call makes the source ask the brokers for
// the offsets of the current and every later assignment, so that it knows
// an empty partition from one not read yet (a source nobody asks does not).
func (k *Kafka) Partitions() ([]PartitionState, bool) {
	if !k.partsWanted.Load() && k.partsWanted.CompareAndSwap(false, true) {
		select {
		case k.wantEnds <- struct{}{}:
		default:
		}
	}
	a := k.state.parts
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.known {
		return nil, false
	}
	out := make([]PartitionState, len(a.parts))
	for i, p := range a.parts {
		out[i] = PartitionState{Topic: p.topic, Partition: p.partition, Unread: k.unread(p)}
	}
	return out, true
}

// unread is the records of p not read yet, -1 when not known.
func (k *Kafka) unread(p assignedPartition) int64 {
	highest, hw := k.tracker.position(p.topicPartition)
	hw = max(hw, p.end)
	if highest >= 0 && hw >= 0 {
		return max(hw-(highest+1), 0)
	}
	next := p.start
	switch p.start {
	case kafka.LastOffset:
		next = p.end
	case kafka.FirstOffset:
		next = p.first
	}
	if next < 0 || hw < 0 {
		return -1
	}
	return max(hw-next, 0)
}

// listEnds asks the brokers for the first and end offsets of the assigned
// partitions, so that Partitions knows an empty partition from one not read
// yet before any record of it arrives.
func (k *Kafka) listEnds(ctx context.Context) {
	a := k.state.parts
	a.mu.Lock()
	topics := make(map[string][]kafka.OffsetRequest)
	for _, p := range a.parts {
		topics[p.topic] = append(topics[p.topic], kafka.FirstOffsetOf(p.partition), kafka.LastOffsetOf(p.partition))
	}
	a.mu.Unlock()
	if len(topics) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := k.lagClient.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: topics})
	if err != nil {
		k.log.Warn("kafka offsets of the assigned partitions unavailable; a reduction waits idle_timeout for the partitions not read yet", "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.parts {
		p := &a.parts[i]
		for _, o := range resp.Topics[p.topic] {
			if o.Partition == p.partition && o.Error == nil {
				p.first, p.end = o.FirstOffset, o.LastOffset
			}
		}
	}
}

// position returns the highest offset read from a partition and its high
// watermark as last seen, each -1 when not known.
func (t *offsetTracker) position(key topicPartition) (highest, highWatermark int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.parts[key]
	if p == nil {
		return -1, -1
	}
	return p.highest, p.highWatermark
}
