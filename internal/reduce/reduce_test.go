package reduce

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/schema"
)

var testCols = []schema.Column{
	{Name: "device", Type: "String"},
	{Name: "ts", Type: "DateTime"},
	{Name: "temp", Type: "Double"},
	{Name: "n", Type: "Int64"},
}

// base is 2026-01-01T00:00:00Z in Unix milliseconds.
var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

// mapRow maps an event with the real mapper, as the pipeline does.
func mapRow(t testing.TB, m *schema.Mapper, device string, ms int64, temp float64, n int64) json.RawMessage {
	t.Helper()
	ev := fmt.Sprintf(`{"device":%q,"ts":%q,"temp":%v,"n":%d}`, device, time.UnixMilli(ms).UTC().Format(time.RFC3339Nano), temp, n)
	rows, err := m.Map([]byte(ev), nil, nil)
	if err != nil || len(rows) != 1 {
		t.Fatalf("mapping %s: %v", ev, err)
	}
	return rows[0]
}

func newMapper(t testing.TB) *schema.Mapper {
	m, err := schema.New(schema.Config{Columns: testCols})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// holder counts holds and releases like a batcher.Tracker would.
type holder struct {
	id       int
	holds    int
	released int
	err      error
}

func (h *holder) Hold() { h.holds++ }
func (h *holder) Release(err error) {
	h.released++
	if err != nil {
		h.err = err
	}
}

func aggConfig() Config {
	c := DefaultConfig()
	c.Mode = ModeAggregate
	c.Window = 10 * time.Second
	c.TimeColumn = "ts"
	c.GroupBy = []string{"device"}
	c.WindowEnd = "window_end"
	c.Aggregates = []Aggregate{
		{Name: "events", Function: "count"},
		{Name: "temp_sum", Function: "sum", Column: "temp"},
		{Name: "temp_avg", Function: "avg", Column: "temp"},
		{Name: "temp_min", Function: "min", Column: "temp"},
		{Name: "temp_max", Function: "max", Column: "temp"},
		{Name: "n_sum", Function: "sum", Column: "n"},
		{Name: "n_first", Function: "first", Column: "n"},
		{Name: "n_last", Function: "last", Column: "n"},
		{Name: "ts_max", Function: "max", Column: "ts"},
	}
	return c
}

func newReducer(t testing.TB, c Config) *Reducer {
	t.Helper()
	r, err := New(c, testCols)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func decodeRows(t *testing.T, ems []Emission) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, e := range ems {
		for _, row := range e.Rows {
			var m map[string]any
			if err := json.Unmarshal(row, &m); err != nil {
				t.Fatalf("emitted row %s is not JSON: %v", row, err)
			}
			out = append(out, m)
		}
	}
	return out
}

func TestAggregateExact(t *testing.T) {
	m := newMapper(t)
	r := newReducer(t, aggConfig())
	type in struct {
		dev  string
		at   int64
		temp float64
		n    int64
	}
	events := []in{
		{"a", 1000, 20.5, 3}, {"b", 2000, 10, 1}, {"a", 9999, 22.5, 5}, {"a", 500, 19, 7},
		{"b", 12000, 11, 2}, {"a", 15000, 30, 1},
	}
	var ems []Emission
	h := &holder{}
	for _, e := range events {
		var err error
		ems, err = r.Add(mapRow(t, m, e.dev, base+e.at, e.temp, e.n), Ref{Holder: h}, 0, ems)
		if err != nil {
			t.Fatal(err)
		}
	}
	// The watermark (15s) closed the first window [0,10s) only.
	if len(ems) != 1 {
		t.Fatalf("got %d emissions before flush, want the first window alone", len(ems))
	}
	got := decodeRows(t, ems)
	want := []map[string]any{
		{"device": "a", "window_start": "2026-01-01T00:00:00.000Z", "window_end": "2026-01-01T00:00:10.000Z",
			"events": 3.0, "temp_sum": 62.0, "temp_avg": 62.0 / 3, "temp_min": 19.0, "temp_max": 22.5,
			"n_sum": 15.0, "n_first": 7.0, "n_last": 5.0, "ts_max": "2026-01-01T00:00:09.999Z"},
		{"device": "b", "window_start": "2026-01-01T00:00:00.000Z", "window_end": "2026-01-01T00:00:10.000Z",
			"events": 1.0, "temp_sum": 10.0, "temp_avg": 10.0, "temp_min": 10.0, "temp_max": 10.0,
			"n_sum": 1.0, "n_first": 1.0, "n_last": 1.0, "ts_max": "2026-01-01T00:00:02.000Z"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("first window:\n got  %v\n want %v", got, want)
	}
	if ems[0].Acks.Events() != 4 {
		t.Errorf("first window holds %d events, want 4", ems[0].Acks.Events())
	}
	ems = r.Flush(ems[:0])
	if got := decodeRows(t, ems); len(got) != 2 || got[0]["device"] != "b" || got[1]["device"] != "a" {
		t.Errorf("flush gave %v, want b then a of the second window", got)
	}
	st := r.Stats()
	if st.Events != 6 || st.Rows != 4 || st.OpenGroups != 0 {
		t.Errorf("stats %+v, want 6 events, 4 rows, no open group", st)
	}
}

func TestAggregateLateAndLateness(t *testing.T) {
	m := newMapper(t)
	c := aggConfig()
	c.AllowedLateness = 2 * time.Second
	r := newReducer(t, c)
	add := func(at int64) ([]Emission, error) {
		return r.Add(mapRow(t, m, "a", base+at, 1, 1), Ref{Holder: &holder{}}, 0, nil)
	}
	steps := []struct {
		name    string
		at      int64
		emitted int
		late    bool
	}{
		{"first window opens", 1000, 0, false},
		{"next window, within lateness", 11000, 0, false},
		{"late-ish but allowed", 9000, 0, false},
		{"watermark reaches 10s: first window emitted", 12000, 1, false},
		{"event for the emitted window is late", 9500, 0, true},
		{"second window still open", 19000, 0, false},
	}
	for _, s := range steps {
		ems, err := add(s.at)
		if s.late != errors.Is(err, ErrLate) {
			t.Fatalf("%s: err %v, want late %v", s.name, err, s.late)
		}
		var re *RowError
		if s.late && (!errors.As(err, &re) || re.Rule != "late" || !strings.Contains(re.Message, "2026-01-01T00:00:00.000Z")) {
			t.Errorf("%s: error %v should be a RowError with rule late naming the window", s.name, err)
		}
		if len(ems) != s.emitted {
			t.Fatalf("%s: %d emissions, want %d", s.name, len(ems), s.emitted)
		}
	}
	if st := r.Stats(); st.Late != 1 || st.Events != 5 {
		t.Errorf("stats %+v, want 1 late, 5 events", st)
	}
}

func TestAggregateIdleAndArrival(t *testing.T) {
	m := newMapper(t)
	c := aggConfig()
	c.IdleTimeout = 5 * time.Second
	r := newReducer(t, c)
	now := int64(1_000_000)
	if _, err := r.Add(mapRow(t, m, "a", base+1000, 1, 1), Ref{}, now, nil); err != nil {
		t.Fatal(err)
	}
	if ems := r.Tick(now+4000, nil); len(ems) != 0 {
		t.Fatalf("emitted before idle_timeout: %v", ems)
	}
	// Idle for 9s: event time taken to be 1s+9s = 10s, the window's end.
	if ems := r.Tick(now+9000, nil); len(ems) != 1 {
		t.Fatalf("idle stream: %d emissions, want 1", len(ems))
	}

	// Arrival time: windows close on the clock alone.
	c = aggConfig()
	c.TimeColumn = ""
	r = newReducer(t, c)
	if _, err := r.Add(mapRow(t, m, "a", 0, 1, 1), Ref{}, base+3000, nil); err != nil {
		t.Fatal(err)
	}
	if ems := r.Tick(base+9999, nil); len(ems) != 0 {
		t.Fatal("emitted before the window's end")
	}
	ems := r.Tick(base+10000, nil)
	if got := decodeRows(t, ems); len(got) != 1 || got[0]["window_start"] != "2026-01-01T00:00:00.000Z" {
		t.Fatalf("arrival window: %v", got)
	}
	// A clock stepping back does not make a row late.
	if _, err := r.Add(mapRow(t, m, "a", 0, 1, 1), Ref{}, base+5000, nil); err != nil {
		t.Fatalf("clock stepped back: %v", err)
	}
}

func TestAggregateMaxGroups(t *testing.T) {
	m := newMapper(t)
	c := aggConfig()
	c.MaxGroups = 3
	c.AllowedLateness = time.Minute // the watermark closes nothing here
	r := newReducer(t, c)
	var ems []Emission
	var err error
	for i, at := range []int64{1000, 1000, 11000, 11000} { // window 0: a,b; window 10s: a,b
		ems, err = r.Add(mapRow(t, m, fmt.Sprint("d", i%2), base+at, 1, 1), Ref{}, 0, ems)
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(ems) != 1 || !ems[0].Early || len(ems[0].Rows) != 2 || !strings.Contains(ems[0].Label, "00:00:00.000Z") {
		t.Fatalf("max_groups 3 with 4 groups: want the oldest window emitted early, got %+v", ems)
	}
	if st := r.Stats(); st.Early != 1 || st.OpenGroups != 2 {
		t.Errorf("stats %+v, want 1 early emission and 2 open groups", st)
	}
}

func TestAcksOrderedHoldsOnePerPartition(t *testing.T) {
	m := newMapper(t)
	r := newReducer(t, aggConfig())
	holders := make([]*holder, 0, 1000)
	for i := range 1000 {
		h := &holder{id: i}
		holders = append(holders, h)
		ref := Ref{Holder: h, Ordered: true, Topic: "t", Partition: i % 2, Offset: int64(100 + i/2)}
		if _, err := r.Add(mapRow(t, m, fmt.Sprint("d", i%10), base+int64(i), 1, 1), ref, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A rebalance refetches partition 0 from an earlier offset.
	refetch := &holder{}
	if _, err := r.Add(mapRow(t, m, "d0", base+5, 1, 1), Ref{Holder: refetch, Ordered: true, Topic: "t", Partition: 0, Offset: 50}, 0, nil); err != nil {
		t.Fatal(err)
	}
	ems := r.Flush(nil)
	a := ems[0].Acks
	if a.Events() != 1001 || a.Holds() != 3 {
		t.Fatalf("ack record: %d events, %d holds; want 1001 events and 3 holds (one per partition plus the refetched offset)", a.Events(), a.Holds())
	}
	if rg := a.Ranges(); len(rg) != 2 || rg[0] != (PartitionRange{"t", 0, 50, 599}) || rg[1] != (PartitionRange{"t", 1, 100, 599}) {
		t.Errorf("ranges %+v", rg)
	}
	held := []*holder{holders[0], holders[1], refetch}
	for i, h := range holders[2:] {
		if h.holds != 0 {
			t.Fatalf("event %d was held although an earlier offset of its partition is", i+2)
		}
	}
	boom := errors.New("not sent")
	a.Done(boom)
	a.Done(nil) // a second call changes nothing
	for _, h := range held {
		if h.holds != 1 || h.released != 1 || h.err != boom {
			t.Errorf("held event %+v: want held and released once with the error", h)
		}
	}
}

func TestAcksUnorderedHoldEachEvent(t *testing.T) {
	m := newMapper(t)
	r := newReducer(t, aggConfig())
	var hs []*holder
	for i := range 5 {
		h := &holder{}
		hs = append(hs, h)
		row := mapRow(t, m, "a", base+int64(i), 1, 1)
		// Two rows of the same event hold it once.
		for range 2 {
			if _, err := r.Add(row, Ref{Holder: h}, 0, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	ems := r.Flush(nil)
	if ems[0].Acks.Holds() != 5 {
		t.Fatalf("%d holds, want one per event", ems[0].Acks.Holds())
	}
	ems[0].Acks.Done(nil)
	for _, h := range hs {
		if h.holds != 1 || h.released != 1 || h.err != nil {
			t.Errorf("event %+v: want held and released once", h)
		}
	}
}

func TestLatest(t *testing.T) {
	m := newMapper(t)
	c := DefaultConfig()
	c.Mode, c.Key, c.TimeColumn, c.Interval = ModeLatest, []string{"device"}, "ts", time.Second
	r := newReducer(t, c)
	add := func(dev string, at, n, now int64) {
		t.Helper()
		if _, err := r.Add(mapRow(t, m, dev, base+at, 1, n), Ref{Holder: &holder{}}, now, nil); err != nil {
			t.Fatal(err)
		}
	}
	add("a", 100, 1, 10)
	add("a", 300, 2, 20)
	add("b", 50, 3, 30)
	add("a", 200, 4, 40) // older than a's newest: dropped
	add("b", 50, 5, 50)  // same time: the later arrival wins
	if ems := r.Tick(1000, nil); len(ems) != 0 {
		t.Fatal("emitted before the interval")
	}
	ems := r.Tick(1010, nil)
	got := decodeRows(t, ems)
	if len(got) != 2 || got[0]["n"] != 2.0 || got[1]["n"] != 5.0 || ems[0].Acks.Events() != 5 {
		t.Fatalf("first interval: %v (events %d), want a=2, b=5 over 5 events", got, ems[0].Acks.Events())
	}
	add("a", 250, 6, 2000) // older than what was emitted for a: dropped
	add("b", 60, 7, 2001)
	got = decodeRows(t, r.Flush(nil))
	if len(got) != 1 || got[0]["n"] != 7.0 {
		t.Fatalf("second interval: %v, want b=7 only", got)
	}
}

func TestSampleShare(t *testing.T) {
	m := newMapper(t)
	for _, tc := range []struct {
		name string
		key  []string
	}{{"overall", nil}, {"per key", []string{"device"}}} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Mode, c.OneIn, c.Key = ModeSample, 10, tc.key
			r := newReducer(t, c)
			var ems []Emission
			var err error
			for i := range 10_000 {
				ems, err = r.Add(mapRow(t, m, fmt.Sprint("d", i%7), base, 1, int64(i)), Ref{}, int64(i), ems)
				if err != nil {
					t.Fatal(err)
				}
				ems = r.Tick(int64(i), ems)
			}
			ems = r.Flush(ems)
			var rows, events int64
			for _, e := range ems {
				rows += int64(len(e.Rows))
				events += e.Acks.Events()
			}
			if events != 10_000 || math.Abs(float64(rows)-1000) > 7 {
				t.Errorf("kept %d rows of %d events, want 1,000 (one in 10)", rows, events)
			}
		})
	}
}

func TestBadRows(t *testing.T) {
	m := newMapper(t)
	r := newReducer(t, aggConfig())
	noTime, err := m.Map([]byte(`{"device":"a","temp":1,"n":1}`), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var re *RowError
	if _, err := r.Add(noTime[0], Ref{}, 0, nil); !errors.As(err, &re) || re.Rule != "time" || !strings.Contains(re.Message, "ts") {
		t.Errorf("row without event time: %v", err)
	}
	if _, err := r.Add(json.RawMessage(`{"other":1}`), Ref{}, 0, nil); !errors.As(err, &re) || re.Rule != "shape" {
		t.Errorf("row of another shape: %v", err)
	}
	if r.Stats().Events != 0 {
		t.Error("bad rows were counted as folded")
	}
}

func TestTimeRoundTrip(t *testing.T) {
	for _, ms := range []int64{0, base, base + 86_399_999, -1, 253_402_300_799_999, -62_135_596_800_000} {
		b := appendMillis(nil, ms)
		got, ok := parseMillis(b)
		if !ok || got != ms {
			t.Errorf("%d -> %s -> %d %v", ms, b, got, ok)
		}
		if want := `"` + time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z") + `"`; string(b) != want {
			t.Errorf("%d formatted %s, want %s", ms, b, want)
		}
	}
	for _, bad := range []string{`"2026-13-01T00:00:00.000Z"`, `"2026-01-01 00:00:00.000Z"`, `null`, `"2026-01-01T00:00:00Z"`} {
		if _, ok := parseMillis([]byte(bad)); ok {
			t.Errorf("parsed %s", bad)
		}
	}
}

func TestSplitEscapes(t *testing.T) {
	cols := []schema.Column{{Name: `we"ird`, Type: "String"}, {Name: "x", Type: "Int64"}}
	m, err := schema.New(schema.Config{Columns: cols})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := m.Map([]byte(`{"we\"ird":"a\\\",}b","x":-12}`), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := newLayout(cols)
	vals := make([][]byte, 2)
	if err := l.split(rows[0], vals); err != nil {
		t.Fatalf("split %s: %v", rows[0], err)
	}
	if string(vals[0]) != `"a\\\",}b"` || string(vals[1]) != "-12" {
		t.Errorf("split %s into %q", rows[0], vals)
	}
}

// TestAggregateWatermarkPerPartition: a partition read ahead of another
// does not make the other's rows late; once the slow one is idle for
// idle_timeout it no longer holds the windows back.
func TestAggregateWatermarkPerPartition(t *testing.T) {
	m := newMapper(t)
	c := aggConfig()
	c.IdleTimeout = 5 * time.Second
	r := newReducer(t, c)
	add := func(part int, at, now int64) []Emission {
		t.Helper()
		ems, err := r.Add(mapRow(t, m, "a", base+at, 1, 1), Ref{Holder: &holder{}, Ordered: true, Topic: "t", Partition: part, Offset: at}, now, nil)
		if err != nil {
			t.Fatalf("partition %d at %dms: %v", part, at, err)
		}
		return ems
	}
	add(0, 1000, 0)
	add(1, 2000, 0)
	if ems := add(0, 30_000, 10); len(ems) != 0 {
		t.Fatalf("partition 0 ahead emitted %d windows while partition 1 is at 2s", len(ems))
	}
	add(1, 9000, 20) // not late: partition 1 has not passed 10s
	if ems := add(1, 12_000, 30); len(ems) != 1 || ems[0].Acks.Events() != 3 {
		t.Fatalf("partition 1 passing 10s: %+v, want window 0 with its 3 events", ems)
	}
	// Partition 1 goes quiet; partition 0 goes on.
	add(0, 31_000, 3000)
	if ems := r.Tick(6000, nil); len(ems) != 1 || !strings.Contains(ems[0].Label, "00:00:10.000Z") {
		t.Fatalf("partition 1 idle: %+v, want window 10s emitted by partition 0's clock", ems)
	}
}

// TestAggregateWatermarkWaitsForUnreadPartitions: the source's partitions
// hold the watermark until they are read, however long that takes: one
// that has given no row yet, and one whose records wait unread for longer
// than idle_timeout (a consumer that fetches it late, not an idle one).
// Before the source names its partitions the watermark does not move at
// all. This is the case of a Kafka consumer reading partition 1 to its end
// before partitions 0 and 2 give their first records, which made 40% of a
// test's readings late.
func TestAggregateWatermarkWaitsForUnreadPartitions(t *testing.T) {
	m := newMapper(t)
	c := aggConfig()
	c.IdleTimeout = 5 * time.Second
	r := newReducer(t, c)
	r.AwaitPartitions()
	var ems []Emission
	add := func(part int, at, now int64) {
		t.Helper()
		var err error
		ems, err = r.Add(mapRow(t, m, "a", base+at, 1, 1), Ref{Holder: &holder{}, Ordered: true, Topic: "t", Partition: part, Offset: at}, now, ems)
		if err != nil {
			t.Fatalf("partition %d at %dms: %v", part, at, err)
		}
	}
	// Partition 1 races ahead before the source has named its partitions.
	for at := int64(0); at < 50_000; at += 1000 {
		add(1, at, 0)
	}
	if len(ems) != 0 {
		t.Fatalf("partition 1 alone emitted %d windows before the source named its partitions", len(ems))
	}
	r.Partitions([]Partition{{"t", 0, 500}, {"t", 1, 0}, {"t", 2, -1}}, 0)
	if ems = r.Tick(1000, ems); len(ems) != 0 {
		t.Fatalf("emitted %d windows while partitions 0 and 2 have given nothing", len(ems))
	}
	// Partition 2 (unread unknown) gives its rows; partition 0 is still
	// unread after many idle timeouts: its rows are not late.
	add(2, 1000, 2000)
	add(2, 25_000, 59_000)
	r.Partitions([]Partition{{"t", 0, 500}, {"t", 1, 0}, {"t", 2, 0}}, 60_000)
	if ems = r.Tick(60_000, ems); len(ems) != 0 {
		t.Fatalf("emitted %d windows while partition 0 has 500 records unread", len(ems))
	}
	add(0, 500, 61_000)
	add(0, 30_000, 61_000)
	r.Partitions([]Partition{{"t", 0, 0}, {"t", 1, 0}, {"t", 2, 0}}, 61_000)
	add(2, 30_000, 61_000)
	ems = r.Tick(61_000, ems)
	// All at 30s at least: the windows ending by 30s go out, with the 30
	// rows of partition 1 before 30s, 2 of partition 2 and 1 of 0.
	var events int64
	for _, e := range ems {
		events += e.Acks.Events()
	}
	if len(ems) != 3 || events != 33 {
		t.Fatalf("all partitions at 30s: %d windows with %d events emitted, want the 3 ending by 30s with 33", len(ems), events)
	}
	// Caught up and quiet for idle_timeout: the last windows go out.
	if ems = r.Tick(61_000+5000, nil); len(ems) != 2 {
		t.Fatalf("all partitions caught up and idle: %d windows emitted, want the 2 left", len(ems))
	}
	if s := r.Stats(); s.Late != 0 || s.Events != 55 {
		t.Fatalf("stats %+v, want 55 events and none late", s)
	}
}
