package source

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// The Kafka source reads with kafka-go's ConsumerGroup (the group protocol,
// heartbeats, assignments, commits) and its Conn (fetches), not its Reader.
// The Reader's partition goroutines hand every record to FetchMessage over a
// channel: one channel operation, stats update, clock read and read
// deadline per record, and on a machine with two cores or more the reading
// goroutine and the fetching ones wake each other for every record (a CPU
// profile of pushd reading Kafka put a third of its time there). Here each
// assigned partition has a fetcher that decodes a fetch and hands its
// records to Read in runs of up to fetchRun: one channel operation and one
// read deadline per run. What the Reader did per partition — connecting to
// the leader, starting at the committed offset or the configured start,
// the retries and the errors it reports — is kept, following kafka-go
// v0.4.51's reader.go.

// fetchRun is the most records a fetcher hands to Read at once. A run is
// handed as soon as its fetch is read, full or not, so it adds no latency.
const fetchRun = 256

// Read backoffs and the per-run read timeout, kafka-go's Reader defaults.
const (
	fetchBackoffMin  = 100 * time.Millisecond
	fetchBackoffMax  = time.Second
	fetchReadTimeout = 10 * time.Second
	// fetchAttempts is how many times connecting to a partition fails
	// before the error is reported (Ready, the fetch error metric).
	fetchAttempts = 3
)

// recordRun is records of one partition, in offset order, fetched in the
// generation gen.
type recordRun struct {
	gen  uint64
	msgs []kafka.Message
}

// runQueue hands record runs from the fetchers to Read.
type runQueue struct {
	runs chan recordRun
	// free holds emptied runs for the fetchers to fill again.
	free chan []kafka.Message

	// Read's side, guarded by mu (Read is meant for one goroutine; the
	// lock keeps concurrent calls correct).
	mu  sync.Mutex
	cur recordRun
	pos int
}

func newRunQueue(capacity int) *runQueue {
	runs := max(capacity/fetchRun, 1)
	return &runQueue{runs: make(chan recordRun, runs), free: make(chan []kafka.Message, runs+4)}
}

// buffer returns an empty run to fill.
func (q *runQueue) buffer() []kafka.Message {
	select {
	case b := <-q.free:
		return b
	default:
		return make([]kafka.Message, 0, fetchRun)
	}
}

// recycle clears an emptied run (so that it holds no record) and keeps it
// for a fetcher.
func (q *runQueue) recycle(b []kafka.Message) {
	clear(b)
	select {
	case q.free <- b[:0]:
	default:
	}
}

// runGroup follows the consumer group's generations until ctx ends: each
// new generation becomes the one offsets are committed in, its assignment
// is published (Ready, Partitions, the quota share) and each assigned
// partition gets a fetcher, which the generation stops at its end.
func (k *Kafka) runGroup(ctx context.Context) {
	defer close(k.groupDone)
	for {
		gen, err := k.cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return
			}
			// The group logs the step that failed (groupState sees it) and
			// waits before joining again.
			k.log.Warn("kafka group generation failed, joining again", "err", err)
			continue
		}
		k.subscribe(gen)
	}
}

// subscribe starts reading the partitions of a new generation.
func (k *Kafka) subscribe(gen *kafka.Generation) {
	seq := k.genSeq.Add(1)
	parts := make([]assignedPartition, 0)
	for topic, as := range gen.Assignments {
		for _, a := range as {
			parts = append(parts, assignedPartition{
				topicPartition: topicPartition{topic: topic, partition: a.ID},
				start:          a.Offset, first: -1, end: -1,
			})
		}
	}
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].topic != parts[j].topic {
			return parts[i].topic < parts[j].topic
		}
		return parts[i].partition < parts[j].partition
	})
	k.state.assign(parts)
	k.setGeneration(gen)
	k.log.Debug("kafka generation started", "generation", gen.ID, "partitions", len(parts))
	for _, p := range parts {
		f := &fetcher{k: k, gen: seq, topic: p.topic, partition: p.partition}
		gen.Start(func(ctx context.Context) { f.run(ctx, p.start) })
	}
	// The generation is the one to commit in until it ends.
	gen.Start(func(ctx context.Context) {
		<-ctx.Done()
		k.endGeneration(gen)
	})
}

// setGeneration makes gen the generation commits are sent in.
func (k *Kafka) setGeneration(gen *kafka.Generation) {
	k.genMu.Lock()
	defer k.genMu.Unlock()
	k.gen = gen
	close(k.genReady)
}

// endGeneration forgets gen: commits wait for the next one.
func (k *Kafka) endGeneration(gen *kafka.Generation) {
	k.genMu.Lock()
	defer k.genMu.Unlock()
	if k.gen == gen {
		k.gen = nil
		k.genReady = make(chan struct{})
	}
}

// generation returns the current generation, waiting for one while the
// group rebalances, until ctx ends.
func (k *Kafka) generation(ctx context.Context) (*kafka.Generation, error) {
	for {
		k.genMu.Lock()
		gen, ready := k.gen, k.genReady
		k.genMu.Unlock()
		if gen != nil {
			return gen, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// nextRecord returns the next fetched record, waiting for a run while none
// is in hand. Records of a run fetched in an earlier generation are
// dropped, as kafka-go's Reader drops them: the partition may be another
// member's now, and what was not handed out is fetched again from the
// committed offset.
func (k *Kafka) nextRecord(ctx context.Context) (*kafka.Message, error) {
	q := k.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if q.pos < len(q.cur.msgs) && q.cur.gen == k.genSeq.Load() {
			m := &q.cur.msgs[q.pos]
			q.pos++
			return m, nil
		}
		if q.cur.msgs != nil {
			q.recycle(q.cur.msgs)
			q.cur, q.pos = recordRun{}, 0
		}
		select {
		case run := <-q.runs:
			q.cur, q.pos = run, 0
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-k.closing:
			return nil, io.EOF
		}
	}
}

// fetcher reads one partition for one generation.
type fetcher struct {
	k         *Kafka
	gen       uint64
	topic     string
	partition int
}

// run reads the partition from offset (an offset, or kafka-go's
// FirstOffset or LastOffset) until ctx (the generation's) ends. It returns
// only then: the generation ends when any of its functions returns.
func (f *fetcher) run(ctx context.Context, offset int64) {
	k := f.k
	for attempt := 0; ; attempt++ {
		if attempt > 0 && !sleepCtx(ctx, backoffFor(attempt)) {
			return
		}
		conn, start, err := f.connect(ctx, offset)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if attempt >= fetchAttempts && !errors.Is(err, kafka.OffsetOutOfRange) {
				k.fetchFailed(err)
			} else {
				k.log.Warn("kafka partition not readable yet, retrying", "topic", f.topic, "partition", f.partition, "err", err)
			}
			continue
		}
		attempt = 0
		offset = f.read(ctx, conn, start)
		conn.Close()
		if ctx.Err() != nil {
			return
		}
	}
}

// connect dials the partition's leader and positions the connection at
// offset (FirstOffset and LastOffset resolved, an offset below the first
// one raised to it); it returns the offset reading starts at.
func (f *fetcher) connect(ctx context.Context, offset int64) (*kafka.Conn, int64, error) {
	var errs []error
	for _, broker := range f.k.brokers {
		conn, err := f.k.dialer.DialLeader(ctx, "tcp", broker, f.topic, f.partition)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		first, last, err := conn.ReadOffsets()
		if err != nil {
			conn.Close()
			return nil, 0, err
		}
		switch {
		case offset == kafka.FirstOffset:
			offset = first
		case offset == kafka.LastOffset:
			offset = last
		case offset < first:
			offset = first
		}
		start, err := conn.Seek(offset, kafka.SeekAbsolute)
		if err != nil {
			conn.Close()
			return nil, 0, err
		}
		_ = conn.SetDeadline(time.Time{})
		return conn, start, nil
	}
	return nil, 0, errors.Join(errs...)
}

// read fetches from conn until ctx ends or the connection must be made
// again; it returns the next offset to read.
func (f *fetcher) read(ctx context.Context, conn *kafka.Conn, offset int64) int64 {
	k := f.k
	for errs := 0; ; errs++ {
		if ctx.Err() != nil || (errs > 0 && !sleepCtx(ctx, backoffFor(errs))) {
			return offset
		}
		var err error
		offset, err = f.fetch(ctx, conn, offset)
		switch {
		case err == nil, errors.Is(err, io.EOF), errors.Is(err, kafka.RequestTimedOut):
			errs = -1 // the end of a fetch, or a broker's timeout: fetch again now
		case ctx.Err() != nil, errors.Is(err, io.ErrNoProgress):
			return offset
		case errors.Is(err, kafka.UnknownTopicOrPartition), errors.Is(err, kafka.NotLeaderForPartition):
			k.log.Warn("kafka partition moved, connecting to its leader again", "topic", f.topic, "partition", f.partition, "offset", offset, "err", err)
			return offset
		case errors.Is(err, kafka.OffsetOutOfRange):
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			first, last, oerr := conn.ReadOffsets()
			_ = conn.SetDeadline(time.Time{})
			switch {
			case oerr != nil:
				return offset
			case offset < first:
				k.log.Warn("kafka offset no longer in the partition, skipping to its first", "topic", f.topic, "partition", f.partition, "offset", offset, "first", first)
				offset, errs = first, -1
			case offset < last:
				errs = -1
			}
		default:
			var kerr kafka.Error
			if !errors.As(err, &kerr) {
				k.log.Warn("kafka fetch failed, connecting again", "topic", f.topic, "partition", f.partition, "offset", offset, "err", err)
				return offset
			}
			k.fetchFailed(err)
		}
	}
}

// fetch reads one fetch response from offset and hands its records to Read
// in runs; it returns the next offset to read and the error that ended the
// response (io.EOF at its normal end).
func (f *fetcher) fetch(ctx context.Context, conn *kafka.Conn, offset int64) (int64, error) {
	k, q := f.k, f.k.queue
	_ = conn.SetReadDeadline(time.Now().Add(k.maxWait))
	batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: k.minBytes, MaxBytes: k.maxBytes})
	// The partition's end as the broker says now, not when Read gets to
	// these records (the backlog, lag and reduce's Partitions would lag
	// by what waits in the queue).
	if hw := batch.HighWaterMark(); hw > 0 {
		k.tracker.observeHighWatermark(f.topic, f.partition, hw)
	}
	run := q.buffer()
	var err error
	for {
		if len(run) == 0 {
			// A deadline per run: the previous one may have waited long
			// for Read (the unacked bound).
			_ = conn.SetReadDeadline(time.Now().Add(fetchReadTimeout))
		}
		var msg kafka.Message
		if msg, err = batch.ReadMessage(); err != nil {
			break
		}
		offset = msg.Offset + 1
		run = append(run, msg)
		if len(run) == fetchRun {
			if !f.send(ctx, run) {
				batch.Close()
				return offset, ctx.Err()
			}
			run = q.buffer()
		}
	}
	batch.Close()
	_ = conn.SetReadDeadline(time.Time{})
	if len(run) > 0 {
		if !f.send(ctx, run) {
			return offset, ctx.Err()
		}
	} else {
		q.recycle(run)
	}
	return offset, err
}

// send hands a run to Read; false when the generation ended first.
func (f *fetcher) send(ctx context.Context, run []kafka.Message) bool {
	select {
	case f.k.queue.runs <- recordRun{gen: f.gen, msgs: run}:
		return true
	case <-ctx.Done():
		return false
	}
}

// fetchFailed reports an error reading a partition: logged, counted, and
// given by Ready until the next assignment.
func (k *Kafka) fetchFailed(err error) {
	k.state.failed(err.Error())
	k.log.Warn("kafka fetch failed, retrying", "err", err)
	if m := k.metrics; m != nil {
		m.fetchErrors.WithLabelValues(k.group).Inc()
	}
}

// backoffFor is kafka-go's read backoff: quadratic from 100ms, at most 1s.
func backoffFor(attempt int) time.Duration {
	return min(time.Duration(attempt*attempt)*fetchBackoffMin, fetchBackoffMax)
}

// sleepCtx waits d, false when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
