package reduce

// Holder is an event's hold on its acknowledgement: while held, the event is
// not acked. The pipeline passes the event's batcher.Tracker.
type Holder interface {
	// Hold delays the event's ack until a matching Release.
	Hold()
	// Release ends one Hold; err is the outcome of the rows that carried it.
	Release(err error)
}

// Ref is the event a row came from, as far as acknowledging it goes.
type Ref struct {
	// Holder delays the event's ack.
	Holder Holder
	// Ordered says the source commits each partition only below its lowest
	// unacknowledged offset (Kafka). Then a window needs to hold only the
	// earliest event of each partition it holds: the others may be acked at
	// once, because the held one keeps the commit below them all.
	Ordered bool
	// Topic, Partition and Offset place an ordered event.
	Topic     string
	Partition int
	Offset    int64
}

// Acks is the ack record of the rows of one emission: the events folded
// into them, held compactly. For an ordered source it keeps, per partition,
// the offset range and the hold of its earliest event; for any other source
// the hold of each event (such sources keep their events until acked
// anyway, and bound them with max_unacked_events).
//
// When the emission's rows are settled, the pipeline calls Done with their
// outcome, which releases every hold: the events are acked, and for Kafka
// the commit moves past them.
type Acks struct {
	events  int64
	holders []Holder
	last    Holder // the newest hold of an unordered event, to hold it once
	parts   []partRange
	cached  int // index in parts of the last partition seen
	done    bool
}

// partRange is what Acks keeps of one partition.
type partRange struct {
	topic       string
	partition   int
	first, last int64 // lowest and highest offsets folded
	held        int64 // offset of the lowest held event
}

// PartitionRange describes the events of one partition in an Acks.
type PartitionRange struct {
	Topic       string
	Partition   int
	First, Last int64
}

func newAcks() *Acks { return &Acks{cached: -1} }

// add records an event folded into the emission's rows.
func (a *Acks) add(r Ref) {
	a.events++
	if !r.Ordered {
		if r.Holder != nil && r.Holder != a.last {
			r.Holder.Hold()
			a.holders = append(a.holders, r.Holder)
			a.last = r.Holder
		}
		return
	}
	i := a.cached
	if i < 0 || a.parts[i].partition != r.Partition || a.parts[i].topic != r.Topic {
		i = a.find(r.Topic, r.Partition)
		if i < 0 {
			a.parts = append(a.parts, partRange{topic: r.Topic, partition: r.Partition, first: r.Offset, last: r.Offset, held: r.Offset})
			a.cached = len(a.parts) - 1
			a.hold(r.Holder)
			return
		}
		a.cached = i
	}
	p := &a.parts[i]
	if r.Offset < p.held {
		// An offset below the held one (the partition was fetched again
		// after a rebalance): hold it too, so the commit stays below it.
		p.held = r.Offset
		a.hold(r.Holder)
	}
	p.first = min(p.first, r.Offset)
	p.last = max(p.last, r.Offset)
}

func (a *Acks) hold(h Holder) {
	if h != nil {
		h.Hold()
		a.holders = append(a.holders, h)
	}
}

func (a *Acks) find(topic string, partition int) int {
	for i := range a.parts {
		if a.parts[i].partition == partition && a.parts[i].topic == topic {
			return i
		}
	}
	return -1
}

// Events returns the number of events (rows, for array events) folded.
func (a *Acks) Events() int64 { return a.events }

// Holds returns the number of holds kept: for an ordered source about one
// per partition, whatever the number of events.
func (a *Acks) Holds() int { return len(a.holders) }

// Ranges returns the offset ranges of the ordered events, per partition.
func (a *Acks) Ranges() []PartitionRange {
	out := make([]PartitionRange, len(a.parts))
	for i, p := range a.parts {
		out[i] = PartitionRange{Topic: p.topic, Partition: p.partition, First: p.first, Last: p.last}
	}
	return out
}

// Done releases every hold with err: nil once the emission's rows were
// accepted (or dead-lettered), else the error their events are acked with.
// Calls after the first do nothing.
func (a *Acks) Done(err error) {
	if a.done {
		return
	}
	a.done = true
	for _, h := range a.holders {
		h.Release(err)
	}
	a.holders = nil
}
