package reduce

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// canonicalRow writes a row of testCols as the mapper does.
func canonicalRow(device string, ms int64, n int64) json.RawMessage {
	return fmt.Appendf(nil, `{"device":%q,"ts":%s,"temp":1.5,"n":%d}`, device, appendMillis(nil, ms), n)
}

// TestLatestAtScale: 500,000 events over 10,000 keys, with event times out
// of order, emitted every 50,000 events: each interval gives one row per
// key it saw, the newest by event time, unless older than what was already
// emitted for the key.
func TestLatestAtScale(t *testing.T) {
	const n, keys, interval = 500_000 / scale, 10_000 / scale, 50_000 / scale
	c := latestConfig()
	c.TimeColumn, c.Interval = "ts", time.Second
	r := newReducer(t, c)
	rng := rand.New(rand.NewPCG(1, 2))
	type ev struct{ t, seq int64 }
	emitted := map[string]ev{}
	pending := map[string]ev{}
	var rows, events int64
	check := func(ems []Emission) {
		for _, e := range ems {
			events += e.Acks.Events()
			seen := map[string]bool{}
			for _, row := range e.Rows {
				var m struct {
					Device string
					N      int64
				}
				if err := json.Unmarshal(row, &m); err != nil {
					t.Fatal(err)
				}
				if seen[m.Device] {
					t.Fatalf("two rows for %s in one interval", m.Device)
				}
				seen[m.Device] = true
				if want := pending[m.Device]; want.seq != m.N {
					t.Fatalf("%s: emitted event %d, want %d (the newest)", m.Device, m.N, want.seq)
				}
				emitted[m.Device] = pending[m.Device]
				rows++
			}
			if len(seen) != len(pending) {
				t.Fatalf("interval emitted %d keys, want %d", len(seen), len(pending))
			}
			clear(pending)
		}
	}
	for i := range int64(n) {
		dev := fmt.Sprint("k", rng.IntN(keys))
		at := base + i*10 + rng.Int64N(200_000) - 100_000 // out of order by up to ±100s
		ems, err := r.Add(canonicalRow(dev, at, i), Ref{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		check(ems)
		if p, ok := pending[dev]; ok {
			if at >= p.t {
				pending[dev] = ev{at, i}
			}
		} else if e, ok := emitted[dev]; !ok || at >= e.t {
			pending[dev] = ev{at, i}
		}
		if (i+1)%interval == 0 {
			check(r.Tick(1_000_000+i, nil))
		}
	}
	check(r.Flush(nil))
	if events != n || rows < keys {
		t.Errorf("%d events acked over %d rows", events, rows)
	}
	t.Logf("%d events over %d keys in 10 intervals: %d rows", n, keys, rows)
}

// TestSampleAtScale: one in 10 of 1,000,000 events, per key over 1,000
// keys and overall, keeps 10% within 1%.
func TestSampleAtScale(t *testing.T) {
	const n = 1_000_000 / scale
	for _, key := range [][]string{nil, {"device"}} {
		c := DefaultConfig()
		c.Mode, c.OneIn, c.Key = ModeSample, 10, key
		r := newReducer(t, c)
		rng := rand.New(rand.NewPCG(3, 4))
		rows := make([]json.RawMessage, 1000/scale)
		for k := range rows {
			rows[k] = canonicalRow(fmt.Sprint("k", k), base, int64(k))
		}
		var kept, events int64
		count := func(ems []Emission) {
			for _, e := range ems {
				kept += int64(len(e.Rows))
				events += e.Acks.Events()
			}
		}
		for i := range int64(n) {
			ems, err := r.Add(rows[rng.IntN(len(rows))], Ref{}, i/1000, nil)
			if err != nil {
				t.Fatal(err)
			}
			count(ems)
			if i%1000 == 0 {
				count(r.Tick(i/1000, nil))
			}
		}
		count(r.Flush(nil))
		share := float64(kept) / n
		if events != n || math.Abs(share-0.1) > 0.001 {
			t.Errorf("key %v: kept %d of %d (%.4f), want 10%% within 1%% of the events", key, kept, events, share)
		}
	}
}
