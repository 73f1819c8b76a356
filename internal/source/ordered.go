package source

// OffsetOrdered is implemented by sources that commit each partition only
// below its lowest unacknowledged offset (Kafka). For them an event acked
// while an earlier event of its partition is still unacknowledged is not
// committed until that one is acknowledged too, so a stage that holds many
// events (package reduce) may keep just the earliest of each partition and
// ack the rest at once, without letting a commit pass any of them.
type OffsetOrdered interface {
	OffsetOrdered() bool
}

// Backlogger is implemented by sources that know how many events wait to be
// read (Kafka: produced but not yet fetched).
type Backlogger interface {
	Backlog() int64
}

var (
	_ OffsetOrdered = (*Kafka)(nil)
	_ Backlogger    = (*Kafka)(nil)
)

// OffsetOrdered reports true: see the OffsetOrdered interface.
func (k *Kafka) OffsetOrdered() bool { return true }

// Backlog returns the records produced but not yet fetched, over the
// partitions this member has fetched from, as of the last fetch response
// (or end-offset refresh).
func (k *Kafka) Backlog() int64 { return k.tracker.unread() }

// unread sums, over the partitions seen, the high watermark minus the next
// offset to fetch.
func (t *offsetTracker) unread() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for _, p := range t.parts {
		if p.highWatermark >= 0 && p.highest >= 0 {
			n += max(p.highWatermark-(p.highest+1), 0)
		}
	}
	return n
}
