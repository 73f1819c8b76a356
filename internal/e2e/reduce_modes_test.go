package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
)

// modeTable is a schema whose rows a latest or sample reduction passes on
// unchanged (%s is the reduce section).
const modeTable = `
    schema:
      columns:
        - {name: DeviceId, type: String,   from: d,   required: true}
        - {name: Ts,       type: DateTime, from: ts,  required: true}
        - {name: Seq,      type: Int64,    from: seq, required: true}
    reduce:
%s`

// modeRow is one landed row of modeTable.
type modeRow struct {
	DeviceId string
	Ts       string
	Seq      int64
}

// modeEmulator starts a TLS emulator with its real quotas holding the
// table of modeTable.
func modeEmulator(t *testing.T) (*emulator.Server, string, string) {
	t.Helper()
	return emulatorWithTable(t, nil, []emulator.Column{
		{Name: "DeviceId", DataType: "String"}, {Name: "Ts", DataType: "DateTime"}, {Name: "Seq", DataType: "Int64"},
	})
}

func modeRows(t *testing.T, emu *emulator.Server, id string) []modeRow {
	t.Helper()
	raw := emu.Rows(id, table)
	out := make([]modeRow, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatalf("row %s: %v", r, err)
		}
	}
	return out
}

// measureSize returns full with PUSHD_MEASURE set, else small.
func measureSize(full, small int) int {
	if os.Getenv("PUSHD_MEASURE") != "" {
		return full
	}
	return small
}

// TestReduceLatestOverKafka: events of 10,000 keys, each key's event times
// shuffled against their order in Kafka, through latest (newest by event
// time) to the emulator with its real quotas, in two intervals (each ended
// by a shutdown, which emits what is held): each interval gives exactly
// one row per key, the key's newest event of that interval by event time.
// 100,000 events by default; the 500,000 with PUSHD_MEASURE=1.
func TestReduceLatestOverKafka(t *testing.T) {
	t.Parallel()
	const keys = 10_000
	n := measureSize(500_000, 100_000)
	perKey := n / 2 / keys // events of a key in one interval
	c := newCluster(t)
	emu, ca, id := modeEmulator(t)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	cfg := s.writeConfig(t, "latest", pipelineOptions{
		source: reduceKafkaSource(c, "e2e-latest", 200*time.Millisecond),
		batch:  "{linger: 500ms}",
		schema: fmt.Sprintf(modeTable, "      mode: latest\n      key: [DeviceId]\n      time_column: Ts\n      interval: 1h\n"),
	})
	start := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	newest := map[string]int64{} // "interval/device" → seq of its newest event
	seq := 0
	var landed []modeRow
	for interval := range 2 {
		events := make([][]byte, 0, n/2)
		for j := range perKey {
			for k := range keys {
				// j ↦ (3j + k) mod perKey is a permutation (3 and perKey
				// coprime): the newest event of a key is at a varying place.
				slot := (3*j + k) % perKey
				at := start.Add(time.Duration(interval*perKey+slot) * time.Second)
				dev := fmt.Sprintf("dev-%05d", k)
				events = append(events, fmt.Appendf(nil, `{"d":%q,"ts":%q,"seq":%d}`, dev, at.Format(time.RFC3339), seq))
				if slot == perKey-1 {
					newest[fmt.Sprint(interval, "/", dev)] = int64(seq)
				}
				seq++
			}
		}
		produce(t, c, events, interval*n/2+1)
		p := startPushd(t, fmt.Sprint("latest-", interval), cfg)
		p.waitReady(t)
		m := waitMetric(t, p, `pushd_reduce_events_total{pipeline="telemetry"}`, float64(n/2), 3*time.Minute)
		if got := m[`pushd_reduce_events_total{pipeline="telemetry"}`]; got != float64(n/2) {
			t.Fatalf("interval %d: pushd_reduce_events_total = %v, want %d", interval, got, n/2)
		}
		if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("interval %d: pushd exited %d after SIGTERM, want 0", interval, code)
		}
		rows := modeRows(t, emu, id)
		got := rows[len(landed):]
		landed = rows
		if len(got) != keys {
			t.Fatalf("interval %d: %d rows landed, want one per key (%d)", interval, len(got), keys)
		}
		seen := map[string]bool{}
		for _, r := range got {
			k := fmt.Sprint(interval, "/", r.DeviceId)
			if seen[k] {
				t.Fatalf("interval %d: key %s has two rows", interval, r.DeviceId)
			}
			seen[k] = true
			if want, ok := newest[k]; !ok || r.Seq != want {
				t.Fatalf("interval %d: key %s landed seq %d (ts %s), want its newest by event time, seq %d", interval, r.DeviceId, r.Seq, r.Ts, want)
			}
		}
	}
	total := int64(0)
	for _, o := range committedOffsets(t, c, "e2e-latest") {
		total += o
	}
	if total != int64(n) {
		t.Errorf("committed %d offsets, want all %d", total, n)
	}
	if th := emu.Stats().Datasets[id].Throttled; th != 0 {
		t.Errorf("%d answers 429", th)
	}
	t.Logf("%d events of %d keys → %d rows in %d requests", n, keys, len(landed), emu.Stats().Datasets[id].PostRows)
}

// TestReduceSampleOverKafka: events of 1,000 devices through sample (one in
// 20 per device) to the emulator with its real quotas: the rows that land
// are distinct events, their share is 1/20 within 1%, and every offset is
// committed. 100,000 events by default; the 1,000,000 with
// PUSHD_MEASURE=1.
func TestReduceSampleOverKafka(t *testing.T) {
	t.Parallel()
	const (
		devices = 1000
		oneIn   = 20
	)
	n := measureSize(1_000_000, 100_000)
	c := newCluster(t)
	emu, ca, id := modeEmulator(t)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	start := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	events := make([][]byte, n)
	for i := range n {
		at := start.Add(time.Duration(i) * time.Millisecond)
		events[i] = fmt.Appendf(nil, `{"d":"dev-%04d","ts":%q,"seq":%d}`, i%devices, at.Format(time.RFC3339Nano), i)
	}
	produce(t, c, events, 1)
	events = nil
	cfg := s.writeConfig(t, "sample", pipelineOptions{
		source: reduceKafkaSource(c, "e2e-sample", 200*time.Millisecond),
		batch:  "{linger: 500ms}",
		schema: fmt.Sprintf(modeTable, fmt.Sprintf("      mode: sample\n      key: [DeviceId]\n      one_in: %d\n", oneIn)),
	})
	p := startPushd(t, "sample", cfg)
	p.waitReady(t)
	want := float64(n) / oneIn
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var committed int64
		for _, o := range committedOffsets(t, c, "e2e-sample") {
			committed += o
		}
		if committed == int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed %d of %d offsets after 5 minutes", committed, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd exited %d after SIGTERM, want 0", code)
	}
	rows := modeRows(t, emu, id)
	seen := map[int64]bool{}
	for _, r := range rows {
		if seen[r.Seq] || r.DeviceId != fmt.Sprintf("dev-%04d", r.Seq%devices) {
			t.Fatalf("row %+v: a duplicate or not an event that was produced", r)
		}
		seen[r.Seq] = true
	}
	share := float64(len(rows)) / want
	t.Logf("%d events → %d rows (%.4f of the expected 1 in %d) in %d requests", n, len(rows), share, oneIn, emu.Stats().Datasets[id].PostRows)
	if share < 0.99 || share > 1.01 {
		t.Errorf("%d rows for %d events sampled one in %d: want %.0f within 1%%", len(rows), n, oneIn, want)
	}
	if th := emu.Stats().Datasets[id].Throttled; th != 0 {
		t.Errorf("%d answers 429", th)
	}
}

// TestReduceWhenOverloadedOverKafka: sample with when: overloaded, against
// a quota scaled to 100 rows a second and max_lag 20s. Below the quota
// every event lands unchanged and nothing is reduced; a burst far above it
// starts the reduction, and the freshness pushd reports stays under
// max_lag; once the input falls back, the reduction stops and events land
// unchanged again.
func TestReduceWhenOverloadedOverKafka(t *testing.T) {
	t.Parallel()
	const maxLag = 20 * time.Second
	c := newCluster(t)
	emu, ca, id := modeEmulator(t)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	cfg := s.writeConfig(t, "overloaded", pipelineOptions{
		source:     reduceKafkaSource(c, "e2e-overloaded", 200*time.Millisecond),
		batch:      "{max_rows: 100, linger: 500ms}",
		limits:     "{rows_per_hour: 200, rows_window: 2s}", // 100 rows a second
		maxUnacked: 300,
		schema:     fmt.Sprintf(modeTable, fmt.Sprintf("      mode: sample\n      one_in: 50\n      when: overloaded\n      max_lag: %s\n", maxLag)),
	})
	p := startPushd(t, "overloaded", cfg)
	p.waitReady(t)
	const active = `pushd_reduce_active{mode="sample",pipeline="telemetry"}`
	seq := 0
	// send produces n events a second for d, with the current time as
	// their event time, and returns their seqs [from, to).
	send := func(rate int, d time.Duration) (from, to int) {
		from = seq
		start := time.Now()
		for time.Since(start) < d {
			due := from + int(time.Since(start).Seconds()*float64(rate))
			var events [][]byte
			for ; seq < due; seq++ {
				events = append(events, fmt.Appendf(nil, `{"d":"dev-%04d","ts":%q,"seq":%d}`, seq%100, time.Now().UTC().Format(time.RFC3339Nano), seq))
			}
			if len(events) > 0 {
				produce(t, c, events, from+1)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return from, seq
	}
	// unchanged checks that every event of [from, to) landed once, as
	// produced.
	unchanged := func(phase string, from, to int) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			counts := map[int64]int{}
			for _, r := range modeRows(t, emu, id) {
				if r.Seq >= int64(from) && r.Seq < int64(to) {
					counts[r.Seq]++
					if r.DeviceId != fmt.Sprintf("dev-%04d", r.Seq%100) {
						t.Fatalf("%s: row %+v changed", phase, r)
					}
				}
			}
			complete := len(counts) == to-from
			for s, n := range counts {
				if n != 1 {
					t.Fatalf("%s: seq %d landed %d times", phase, s, n)
				}
			}
			if complete {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of the %d events landed after a minute", phase, len(counts), to-from)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// Below the quota: every event lands unchanged.
	from, to := send(25, 4*time.Second)
	unchanged("below the quota", from, to)
	if m := p.metrics(t); m[active] != 0 {
		t.Fatalf("%s = %v below the quota, want 0", active, m[active])
	}

	// Far above: the reduction starts and the rows stay fresh.
	burstFrom, _ := send(2000, 3*time.Second)
	if m := waitMetric(t, p, active, 1, 30*time.Second); m[active] != 1 {
		t.Fatalf("%s = %v after a burst 20 times the quota, want 1", active, m[active])
	}
	_, burstTo := send(2000, 3*time.Second) // the reduced rows catch up meanwhile
	m := p.metrics(t)
	fresh := m[`pushd_pipeline_freshness_seconds{pipeline="telemetry"}`]
	t.Logf("reducing: freshness %.1fs (max_lag %v)", fresh, maxLag)
	if fresh <= 0 || fresh >= maxLag.Seconds() {
		t.Errorf("pushd_pipeline_freshness_seconds = %v while reducing, want under max_lag %v", fresh, maxLag)
	}
	landedBurst := 0
	for _, r := range modeRows(t, emu, id) {
		if r.Seq >= int64(burstFrom) && r.Seq < int64(burstTo) {
			landedBurst++
		}
	}
	if landedBurst >= burstTo-burstFrom {
		t.Errorf("%d rows for the %d events of the burst: want fewer (reduced)", landedBurst, burstTo-burstFrom)
	}

	// The input falls: the reduction stops, and events land unchanged.
	deadline := time.Now().Add(90 * time.Second)
	for p.metrics(t)[active] != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s still 1 90s after the input fell below the quota", active)
		}
		send(10, time.Second)
	}
	from, to = send(10, 3*time.Second)
	unchanged("after the input fell", from, to)
	if th := emu.Stats().Datasets[id].Throttled; th != 0 {
		t.Errorf("%d answers 429", th)
	}
	if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd exited %d after SIGTERM, want 0", code)
	}
}
