package source

import (
	"sort"
	"sync"
)

// offsetTracker decides which Kafka offsets are safe to commit when events
// are acknowledged out of order.
//
// For every partition it keeps the fetched offsets that are not acknowledged
// yet in a min-heap. Everything this process fetched below the smallest of
// them is acknowledged, and a consumer fetches each partition in offset order
// from the group's committed offset, so the offset to commit (Kafka's "next
// offset to read") is:
//
//   - the smallest unacknowledged offset, when some are unacknowledged;
//   - otherwise the highest fetched offset + 1;
//   - but never above the smallest offset acknowledged with an error: that
//     event was not delivered, so it must come again after a restart.
//
// The first fetched offset of a partition is committable before any ack: a
// new group that starts at "latest" must resume there after a crash rather
// than skip what it fetched.
//
// Gaps in the offsets (compacted records, transaction markers, records
// removed by retention) need no care: a gap is not an event.
//
// A rebalance can make the consumer fetch offsets it has fetched before (it
// restarts a partition at the group's committed offset, which lags what this
// process has acknowledged). Each fetch is tracked on its own, so a repeated
// offset holds the commit back until its second copy is acknowledged too, and
// a commit never goes below what this process already committed.
//
// Memory is proportional to the unacknowledged events, which the Kafka source
// bounds (MaxUnacked).
type offsetTracker struct {
	mu    sync.Mutex
	parts map[topicPartition]*partitionOffsets
}

type topicPartition struct {
	topic     string
	partition int
}

// partitionOffsets is the bookkeeping of one partition. Its fields are
// guarded by the tracker's mutex.
type partitionOffsets struct {
	key topicPartition
	// pending holds the unacknowledged fetches, a min-heap on offset.
	pending []*pendingOffset
	// highest is the highest offset fetched, -1 before the first fetch.
	highest int64
	// failed is the lowest offset acknowledged with an error, -1 if none.
	failed int64
	// committed is the next offset to read that was last committed, -1 if
	// this process has not committed the partition yet.
	committed int64
	// highWatermark is the partition's high watermark as last seen in a
	// fetch response: the offset the next produced record will get.
	highWatermark int64
	// acked counts the fetches acknowledged (with or without error).
	acked uint64
}

// pendingOffset is one fetched, unacknowledged record.
type pendingOffset struct {
	part   *partitionOffsets
	offset int64
	// index is the position in part.pending; -1 once acknowledged.
	index int
}

// commitPoint is an offset ready to commit: next is the next offset the
// group should read from the partition (all before it were acknowledged).
type commitPoint struct {
	topicPartition
	next int64
}

func newOffsetTracker() *offsetTracker {
	return &offsetTracker{parts: make(map[topicPartition]*partitionOffsets)}
}

// fetched records a fetched record and returns the token to acknowledge it
// with. highWatermark is the partition's high watermark from the fetch.
func (t *offsetTracker) fetched(topic string, partition int, offset, highWatermark int64) *pendingOffset {
	e := &pendingOffset{}
	t.fetchedInto(e, topic, partition, offset, highWatermark)
	return e
}

// fetchedInto is fetched with the caller's pendingOffset (which the caller
// allocates together with other per-record state).
func (t *offsetTracker) fetchedInto(e *pendingOffset, topic string, partition int, offset, highWatermark int64) {
	key := topicPartition{topic: topic, partition: partition}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.parts[key]
	if p == nil {
		p = &partitionOffsets{key: key, highest: -1, failed: -1, committed: -1, highWatermark: -1}
		t.parts[key] = p
	}
	if offset > p.highest {
		p.highest = offset
	}
	if highWatermark > p.highWatermark {
		p.highWatermark = highWatermark
	}
	*e = pendingOffset{part: p, offset: offset, index: len(p.pending)}
	p.pending = append(p.pending, e)
	p.up(e.index)
}

// ack records the acknowledgement of e; failed says the event was not
// delivered. It reports false when e was acknowledged before (the second
// call changes nothing).
func (t *offsetTracker) ack(e *pendingOffset, failed bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.index < 0 {
		return false
	}
	p := e.part
	p.remove(e.index)
	e.index = -1
	p.acked++
	if failed && (p.failed < 0 || e.offset < p.failed) {
		p.failed = e.offset
	}
	return true
}

// next reports the next offset to read that is safe to commit for p, and
// whether there is one.
func (p *partitionOffsets) next() (int64, bool) {
	if p.highest < 0 {
		return 0, false
	}
	next := p.highest + 1
	if len(p.pending) > 0 {
		next = p.pending[0].offset
	}
	if p.failed >= 0 && p.failed < next {
		next = p.failed
	}
	return next, true
}

// toCommit returns, in a stable order, the partitions whose safe offset is
// above what was committed.
func (t *offsetTracker) toCommit() []commitPoint {
	t.mu.Lock()
	defer t.mu.Unlock()
	var points []commitPoint
	for key, p := range t.parts {
		next, ok := p.next()
		if !ok || next <= p.committed {
			continue
		}
		points = append(points, commitPoint{topicPartition: key, next: next})
	}
	sort.Slice(points, func(i, j int) bool {
		if points[i].topic != points[j].topic {
			return points[i].topic < points[j].topic
		}
		return points[i].partition < points[j].partition
	})
	return points
}

// committed records that points were committed to the group.
func (t *offsetTracker) committed(points []commitPoint) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range points {
		if p := t.parts[c.topicPartition]; p != nil && c.next > p.committed {
			p.committed = c.next
		}
	}
}

// observeHighWatermark raises a partition's high watermark to hw, as learnt
// outside a fetch (from a ListOffsets request). Unknown partitions are left
// alone.
func (t *offsetTracker) observeHighWatermark(topic string, partition int, hw int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.parts[topicPartition{topic: topic, partition: partition}]; p != nil && hw > p.highWatermark {
		p.highWatermark = hw
	}
}

// partitionState is a snapshot of one partition, for metrics and tests.
type partitionState struct {
	topicPartition
	unacked       int
	committed     int64
	highWatermark int64
	safeNext      int64
}

// snapshot returns the state of every partition seen, in a stable order.
func (t *offsetTracker) snapshot() []partitionState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]partitionState, 0, len(t.parts))
	for key, p := range t.parts {
		next, ok := p.next()
		if !ok {
			next = -1
		}
		out = append(out, partitionState{
			topicPartition: key,
			unacked:        len(p.pending),
			committed:      p.committed,
			highWatermark:  p.highWatermark,
			safeNext:       next,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].topic != out[j].topic {
			return out[i].topic < out[j].topic
		}
		return out[i].partition < out[j].partition
	})
	return out
}

// The heap below is container/heap written out for *pendingOffset, to keep
// interface calls off the per-event path.

func (p *partitionOffsets) less(i, j int) bool {
	return p.pending[i].offset < p.pending[j].offset
}

func (p *partitionOffsets) swap(i, j int) {
	p.pending[i], p.pending[j] = p.pending[j], p.pending[i]
	p.pending[i].index = i
	p.pending[j].index = j
}

func (p *partitionOffsets) up(j int) {
	for {
		i := (j - 1) / 2 // parent
		if i == j || !p.less(j, i) {
			break
		}
		p.swap(i, j)
		j = i
	}
}

func (p *partitionOffsets) down(i0, n int) bool {
	i := i0
	for {
		j1 := 2*i + 1
		if j1 >= n || j1 < 0 {
			break
		}
		j := j1 // left child
		if j2 := j1 + 1; j2 < n && p.less(j2, j1) {
			j = j2
		}
		if !p.less(j, i) {
			break
		}
		p.swap(i, j)
		i = j
	}
	return i > i0
}

func (p *partitionOffsets) remove(i int) {
	n := len(p.pending) - 1
	if n != i {
		p.swap(i, n)
		if !p.down(i, n) {
			p.up(i)
		}
	}
	p.pending[n] = nil
	p.pending = p.pending[:n]
}
