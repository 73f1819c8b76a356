package reduce

import "encoding/json"

// latest keeps the newest row per key and emits them every interval.
//
// Newest is by event time (ties: the later arrival wins) or by arrival. A
// row older than the row last emitted for its key is dropped; it is still
// acked with the current interval's rows, which supersede it.
type latest struct {
	interval  int64
	eventTime bool
	maxGroups int

	entries  map[string]*latestEntry
	order    []*latestEntry
	emitted  map[string]int64 // event time of the row last emitted per key
	acks     *Acks
	genStart int64 // arrival time of the interval's first row; 0 before it
	newest   int64
	seq      int64
}

type latestEntry struct {
	key string
	row json.RawMessage
	t   int64
}

func newLatest(cfg Config) *latest {
	return &latest{
		interval:  cfg.interval().Milliseconds(),
		eventTime: cfg.TimeColumn != "",
		maxGroups: cfg.MaxGroups,
		entries:   make(map[string]*latestEntry),
		emitted:   make(map[string]int64),
		acks:      newAcks(),
	}
}

func (l *latest) groups() int { return len(l.entries) }

func (l *latest) add(r *Reducer, vals [][]byte, ref Ref, now int64, out []Emission) ([]Emission, error) {
	t, err := r.eventTime(vals, now)
	if err != nil {
		return out, err
	}
	l.newest = max(l.newest, t)
	if !l.eventTime {
		l.seq++
		t = l.seq // arrival order
	}
	if l.genStart == 0 {
		l.genStart = now
	}
	key := r.key()
	row := r.row
	if e := l.entries[string(key)]; e != nil {
		if t >= e.t {
			e.row, e.t = row, t
		}
	} else if last, ok := l.emitted[string(key)]; !ok || t >= last {
		e = &latestEntry{key: string(key), row: row, t: t}
		l.entries[e.key] = e
		l.order = append(l.order, e)
	}
	l.acks.add(ref)
	if len(l.entries) > l.maxGroups {
		out = l.emit(out)
		out[len(out)-1].Early = true
		r.stats.Early++
	}
	return out, nil
}

func (l *latest) tick(_ *Reducer, now int64, out []Emission) []Emission {
	if l.genStart != 0 && now-l.genStart >= l.interval {
		return l.emit(out)
	}
	return out
}

func (l *latest) flushOldest(_ *Reducer, out []Emission) []Emission { return l.flush(nil, out) }

func (l *latest) flush(_ *Reducer, out []Emission) []Emission {
	if l.genStart == 0 {
		return out
	}
	return l.emit(out)
}

// emit gives out the interval's rows and starts the next interval.
func (l *latest) emit(out []Emission) []Emission {
	rows := make([]json.RawMessage, len(l.order))
	if l.eventTime && len(l.emitted)+len(l.order) > l.maxGroups {
		clear(l.emitted) // bounded memory: forget, rather than grow
	}
	for i, e := range l.order {
		rows[i] = e.row
		if l.eventTime {
			l.emitted[e.key] = e.t
		}
	}
	em := Emission{Rows: rows, Acks: l.acks, EventTime: l.newest, Label: label("interval from", l.genStart)}
	clear(l.entries)
	clear(l.order)
	l.order = l.order[:0]
	l.acks = newAcks()
	l.genStart = 0
	return append(out, em)
}
