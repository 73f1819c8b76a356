package reduce

import "encoding/json"

// sampler keeps one row in oneIn, overall or per key: the first of every
// oneIn rows (of the key). Kept rows are collected for an interval and
// emitted together; the rows sampled out are acked with them.
type sampler struct {
	oneIn     uint64
	perKey    bool
	interval  int64
	maxGroups int

	n        uint64            // rows seen, overall
	counts   map[string]uint64 // rows seen per key
	rows     []json.RawMessage
	acks     *Acks
	genStart int64
	newest   int64
}

func newSampler(cfg Config) *sampler {
	return &sampler{
		oneIn:     uint64(cfg.OneIn),
		perKey:    len(cfg.Key) > 0,
		interval:  cfg.interval().Milliseconds(),
		maxGroups: cfg.MaxGroups,
		counts:    make(map[string]uint64),
		acks:      newAcks(),
	}
}

func (s *sampler) groups() int { return len(s.counts) }

func (s *sampler) add(r *Reducer, vals [][]byte, ref Ref, now int64, out []Emission) ([]Emission, error) {
	t, err := r.eventTime(vals, now)
	if err != nil {
		return out, err
	}
	if s.genStart == 0 {
		s.genStart = now
	}
	var c uint64
	if s.perKey {
		key := r.key()
		c = s.counts[string(key)]
		if c == 0 && len(s.counts) >= s.maxGroups {
			clear(s.counts) // bounded memory: start counting afresh
		}
		s.counts[string(key)] = c + 1
	} else {
		c = s.n
		s.n++
	}
	s.acks.add(ref)
	if c%s.oneIn == 0 {
		s.rows = append(s.rows, r.row)
		s.newest = max(s.newest, t)
		if len(s.rows) >= s.maxGroups {
			out = s.emit(out)
			out[len(out)-1].Early = true
			r.stats.Early++
		}
	}
	return out, nil
}

func (s *sampler) tick(_ *Reducer, now int64, out []Emission) []Emission {
	if s.genStart != 0 && now-s.genStart >= s.interval {
		return s.emit(out)
	}
	return out
}

func (s *sampler) flushOldest(_ *Reducer, out []Emission) []Emission { return s.flush(nil, out) }

func (s *sampler) flush(_ *Reducer, out []Emission) []Emission {
	if s.genStart == 0 {
		return out
	}
	return s.emit(out)
}

func (s *sampler) emit(out []Emission) []Emission {
	em := Emission{Rows: s.rows, Acks: s.acks, EventTime: s.newest, Label: label("interval from", s.genStart)}
	s.rows = nil
	s.acks = newAcks()
	s.genStart = 0
	return append(out, em)
}
