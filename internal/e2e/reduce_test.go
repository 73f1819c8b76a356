package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushd/pushd/internal/emulator"
)

// The aggregating pipeline of the reduce tests: readings of devices folded
// into 10-second windows per device.
const (
	reduceWindow   = 10 * time.Second
	reduceDevices  = 1000
	reduceSpan     = 50 * time.Second
	aggregateTable = `
    schema:
      columns:
        - {name: DeviceId, type: String,   from: d,  required: true}
        - {name: Ts,       type: DateTime, from: ts, required: true}
        - {name: V,        type: Int64,    from: v,  required: true}
    reduce:
      mode: aggregate
      window: 10s
      time_column: Ts
      allowed_lateness: %s
      idle_timeout: %s
      group_by: [DeviceId]
      window_start: WindowStart
      aggregates:
        - {name: Readings, function: count}
        - {name: Total,    function: sum, column: V}
        - {name: MinV,     function: min, column: V}
        - {name: MaxV,     function: max, column: V}
        - {name: AvgV,     function: avg, column: V}
`
)

// aggregateEmulator starts a TLS emulator (with its real quotas unless
// mutate changes them) holding the aggregated table.
func aggregateEmulator(t *testing.T, mutate func(*emulator.Config)) (*emulator.Server, string, string) {
	t.Helper()
	return emulatorWithTable(t, mutate, []emulator.Column{
		{Name: "DeviceId", DataType: "String"}, {Name: "WindowStart", DataType: "DateTime"},
		{Name: "Readings", DataType: "Int64"}, {Name: "Total", DataType: "Int64"},
		{Name: "MinV", DataType: "Int64"}, {Name: "MaxV", DataType: "Int64"}, {Name: "AvgV", DataType: "Double"},
	})
}

// windowStats is what the test computes itself for one (window, device).
type windowStats struct {
	count, total, min, max int64
}

// readings makes n events of reduceDevices devices with event times spread
// evenly over reduceSpan from start, and computes their aggregates per
// "device@window start" independently of pushd.
func readings(n int, start time.Time) ([][]byte, map[string]*windowStats) {
	events := make([][]byte, n)
	want := map[string]*windowStats{}
	for i := range n {
		dev := fmt.Sprintf("dev-%04d", i%reduceDevices)
		at := start.Add(time.Duration(int64(reduceSpan) * int64(i) / int64(n)))
		v := int64((i*7919)%2000) - 1000
		events[i] = fmt.Appendf(nil, `{"d":%q,"ts":%q,"v":%d}`, dev, at.Format("2006-01-02T15:04:05.000Z07:00"), v)
		k := dev + "@" + at.Truncate(reduceWindow).Format("2006-01-02T15:04:05.000Z")
		w := want[k]
		if w == nil {
			w = &windowStats{min: v, max: v}
			want[k] = w
		}
		w.count++
		w.total += v
		w.min, w.max = min(w.min, v), max(w.max, v)
	}
	return events, want
}

// aggregateRow is one landed row.
type aggregateRow struct {
	DeviceId    string
	WindowStart string
	Readings    int64
	Total       int64
	MinV, MaxV  int64
	AvgV        float64
}

func (r aggregateRow) key() string { return r.DeviceId + "@" + r.WindowStart }

func aggregateRows(t *testing.T, emu *emulator.Server, id string) []aggregateRow {
	t.Helper()
	raw := emu.Rows(id, table)
	out := make([]aggregateRow, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatalf("row %s: %v", r, err)
		}
	}
	return out
}

// waitKeys waits until every key of want has rows whose Readings add up to
// at least its count, and returns the rows.
func waitKeys(t *testing.T, emu *emulator.Server, id string, want map[string]*windowStats, timeout time.Duration) []aggregateRow {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rows := aggregateRows(t, emu, id)
		counted := map[string]int64{}
		for _, r := range rows {
			counted[r.key()] += r.Readings
		}
		short := 0
		for k, w := range want {
			if counted[k] < w.count {
				short++
			}
		}
		if short == 0 {
			return rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d rows; %d of %d (window, device) keys lack readings", timeout, len(rows), short, len(want))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// procUsage reads a running process's CPU time (user + system) and peak RSS
// from /proc.
func procUsage(t *testing.T, pid int) (cpu time.Duration, peakRSS int64) {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	cpu = time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100 on Linux
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			peakRSS = kb * 1024
		}
	}
	return cpu, peakRSS
}

func reduceEventsFromEnv(t *testing.T, def int) int {
	v := os.Getenv("PUSHD_REDUCE_EVENTS")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < reduceDevices {
		t.Fatalf("PUSHD_REDUCE_EVENTS=%q: want a count of at least %d", v, reduceDevices)
	}
	return n
}

// TestReduceAggregateExactOverKafka: readings of 1,000 devices with event
// times over 50s, aggregated in 10s windows by device, against the
// emulator's real quotas: every (window, device) lands once with the count,
// sum, min, max and average the test computes itself, without a 429. Then a
// reading for the first window, long emitted, goes to the dead letter with
// reason late and its Kafka position.
//
// 100,000 events by default; the 1,000,000 with
//
//	PUSHD_REDUCE_EVENTS=1000000 go test ./internal/e2e -run TestReduceAggregateExactOverKafka -v
//
// which also logs pushd's events per CPU-second and peak RSS (from /proc).
func TestReduceAggregateExactOverKafka(t *testing.T) {
	t.Parallel()
	n := reduceEventsFromEnv(t, 100_000)
	c := newCluster(t)
	emu, ca, id := aggregateEmulator(t, nil)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	start := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	events, want := readings(n, start)
	produce(t, c, events, 1)
	events = nil
	cfg := s.writeConfig(t, "aggregate", pipelineOptions{
		source: reduceKafkaSource(c, "e2e-aggregate", time.Second),
		batch:  "{linger: 500ms}",
		// A short idle_timeout: a partition that a loaded machine stalls
		// for seconds still has records unread, so it is not idle.
		schema: fmt.Sprintf(aggregateTable, "10s", "5s"),
	})
	began := time.Now()
	p := startPushd(t, "aggregate", cfg)
	rows := waitKeys(t, emu, id, want, 5*time.Minute)
	landed := time.Since(began)
	cpu, rss := procUsage(t, p.cmd.Process.Pid)

	if len(rows) != len(want) {
		t.Errorf("%d rows for %d (window, device) keys: want one each", len(rows), len(want))
	}
	for _, r := range rows {
		w := want[r.key()]
		if w == nil {
			t.Errorf("row for a key that has no events: %+v", r)
			continue
		}
		avg := float64(w.total) / float64(w.count)
		if r.Readings != w.count || r.Total != w.total || r.MinV != w.min || r.MaxV != w.max || math.Abs(r.AvgV-avg) > 1e-9*math.Max(1, math.Abs(avg)) {
			t.Errorf("%s: got %+v, want count %d sum %d min %d max %d avg %v", r.key(), r, w.count, w.total, w.min, w.max, avg)
		}
	}
	if th := emu.Stats().Datasets[id].Throttled; th != 0 {
		t.Errorf("%d answers 429 (the reduction should keep far under the quota)", th)
	}
	t.Logf("%d events → %d rows in %d requests, all landed %v after start; pushd so far: %v CPU (%.0f events per CPU-second), peak RSS %.1f MB",
		n, len(rows), emu.Stats().Datasets[id].PostRows, landed.Round(time.Millisecond), cpu, float64(n)/cpu.Seconds(), float64(rss)/1e6)

	// A reading for the first window, emitted long ago, is late.
	produce(t, c, [][]byte{[]byte(`{"d":"dev-0001","ts":"2026-11-28T00:00:01.000Z","v":5}`)}, n+1)
	dl := filepath.Join(s.dir, "aggregate-dead-letter.ndjson")
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, _ := os.ReadFile(dl)
		if len(data) > 0 {
			var entry struct {
				Position string
				Reason   struct{ Kind, Rule, Message string }
				Row      json.RawMessage
			}
			if err := json.Unmarshal(bytes.TrimSpace(data), &entry); err != nil {
				t.Fatalf("dead letter %s: %v", data, err)
			}
			if entry.Reason.Kind != "late" || !strings.HasPrefix(entry.Position, "kafka:events/") || !strings.Contains(entry.Position, "@") ||
				!strings.Contains(entry.Reason.Message, "2026-11-28T00:00:00.000Z") || len(entry.Row) == 0 {
				t.Errorf("dead letter entry %s: want kind late, the Kafka position, the window and the row", data)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the late reading never reached the dead letter")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd exited %d after SIGTERM, want 0", code)
	}
	if got := aggregateRows(t, emu, id); len(got) != len(want) {
		t.Errorf("%d rows after the late event and shutdown, want still %d", len(got), len(want))
	}
}

// TestReduceAggregateSIGKILL kills pushd while it aggregates, after some
// windows landed, and starts it again: every (window, device) appears, and
// the readings counted over all its rows are at least its events: no
// contribution is lost (a window may come twice, see the README).
func TestReduceAggregateSIGKILL(t *testing.T) {
	t.Parallel()
	const n = 100_000
	const group = "e2e-aggregate-kill"
	c := newCluster(t)
	emu, ca, id := aggregateEmulator(t, func(c *emulator.Config) {
		c.Faults.Latency = 300 * time.Millisecond // slow enough to kill mid-stream
	})
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	events, want := readings(n, time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC))
	produce(t, c, events, 1)
	cfg := s.writeConfig(t, "kill", pipelineOptions{
		source: reduceKafkaSource(c, group, 50*time.Millisecond),
		batch:  "{max_rows: 100, linger: 50ms}",
		// A short idle_timeout: a partition that a loaded machine stalls
		// for seconds still has records unread, so it is not idle.
		schema: fmt.Sprintf(aggregateTable, "10s", "5s"),
	})
	victim := startPushd(t, "killed", cfg)
	deadline := time.Now().Add(2 * time.Minute)
	for emu.RowCount(id, table) < reduceDevices/2 {
		if time.Now().After(deadline) || victim.exited() {
			t.Fatalf("%d rows landed after 2 minutes", emu.RowCount(id, table))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code, _ := victim.stop(t, syscall.SIGKILL); code != -1 {
		t.Fatalf("exit code after SIGKILL = %d, want -1", code)
	}
	landedAtKill := emu.RowCount(id, table)
	committed := committedOffsets(t, c, group)
	emu.SetFaults(emulator.Faults{})

	restarted := startPushd(t, "restarted", cfg)
	rows := waitKeys(t, emu, id, want, 3*time.Minute)
	if code, _ := restarted.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("restarted pushd exited %d after SIGTERM, want 0", code)
	}
	var readingsTotal int64
	perKey := map[string]int{}
	for _, r := range rows {
		readingsTotal += r.Readings
		perKey[r.key()]++
	}
	twice := 0
	for _, k := range perKey {
		if k > 1 {
			twice++
		}
	}
	t.Logf("SIGKILL after %d rows landed (committed %v): after the restart %d rows for %d keys (%d keys with more than one row), %d readings counted for %d events",
		landedAtKill, committed, len(rows), len(want), twice, readingsTotal, n)
	if readingsTotal < n {
		t.Fatalf("%d readings counted over all rows, fewer than the %d events", readingsTotal, n)
	}
}

// TestReduceAggregateFresh produces readings in real time, 20,000 a second
// for 20 seconds (event time = now), into an aggregating pipeline against
// the real quotas: the rows of each window land within window +
// allowed_lateness + linger + 5s after the window ends, the group commits
// everything (lag back to 0), and no request is refused with 429.
func TestReduceAggregateFresh(t *testing.T) {
	t.Parallel()
	const (
		rate     = 20_000
		duration = 20 * time.Second
		devices  = 100
		group    = "e2e-aggregate-fresh"
		lateness = 2 * time.Second
		linger   = time.Second
	)
	c := newCluster(t)
	emu, ca, id := aggregateEmulator(t, nil)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	cfg := s.writeConfig(t, "fresh", pipelineOptions{
		source: reduceKafkaSource(c, group, time.Second),
		batch:  "{linger: 1s}",
		schema: fmt.Sprintf(aggregateTable, lateness, "5s"),
	})
	p := startPushd(t, "fresh", cfg)
	p.waitReady(t)

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()

	// Watch the table: when did each window have all its devices?
	type seen struct{ complete time.Time }
	windows := map[string]*seen{}
	var watchMu sync.Mutex
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(100 * time.Millisecond):
			}
			per := map[string]int{}
			for _, r := range aggregateRows(t, emu, id) {
				per[r.WindowStart]++
			}
			watchMu.Lock()
			for w, n := range per {
				if n >= devices && windows[w] == nil {
					windows[w] = &seen{complete: time.Now()}
				}
			}
			watchMu.Unlock()
		}
	}()

	start := time.Now()
	produced := 0
	var produceErr atomic.Value
	for time.Since(start) < duration {
		due := int(time.Since(start).Seconds() * rate)
		for ; produced < due; produced++ {
			v := fmt.Appendf(nil, `{"d":"dev-%03d","ts":%q,"v":%d}`, produced%devices, time.Now().UTC().Format(time.RFC3339Nano), produced%100)
			cl.Produce(ctx, &kgo.Record{Value: v}, func(_ *kgo.Record, err error) {
				if err != nil {
					produceErr.Store(err)
				}
			})
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err, _ := produceErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	t.Logf("produced %d events in %v (%.0f a second)", produced, end.Sub(start).Round(time.Millisecond), float64(produced)/end.Sub(start).Seconds())

	// Every window that began before the end lands, the last one by the
	// idle timeout.
	lastWindow := end.UTC().Truncate(reduceWindow)
	bound := reduceWindow + lateness + linger + 5*time.Second
	deadline := time.Now().Add(bound + reduceWindow + 10*time.Second)
	for {
		watchMu.Lock()
		done := windows[lastWindow.Format("2006-01-02T15:04:05.000Z")] != nil
		watchMu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stopWatch)
	<-watched
	for w := start.UTC().Truncate(reduceWindow); !w.After(lastWindow); w = w.Add(reduceWindow) {
		key := w.Format("2006-01-02T15:04:05.000Z")
		s := windows[key]
		if s == nil {
			t.Errorf("window %s never had all %d devices", key, devices)
			continue
		}
		after := s.complete.Sub(w.Add(reduceWindow))
		t.Logf("window %s landed %v after its end (bound %v)", key, after.Round(10*time.Millisecond), bound)
		if after > bound {
			t.Errorf("window %s landed %v after its end, over window + allowed_lateness + linger + 5s = %v", key, after, bound)
		}
	}

	// The lag returns to 0: everything produced is committed.
	deadline = time.Now().Add(30 * time.Second)
	for {
		var committed int64
		for _, o := range committedOffsets(t, c, group) {
			committed += o
		}
		if committed == int64(produced) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed %d of %d offsets 30s after the last window landed", committed, produced)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if th := emu.Stats().Datasets[id].Throttled; th != 0 {
		t.Errorf("%d answers 429", th)
	}
	var total int64
	for _, r := range aggregateRows(t, emu, id) {
		total += r.Readings
	}
	if total != int64(produced) {
		dl, _ := os.ReadFile(filepath.Join(s.dir, "fresh-dead-letter.ndjson"))
		t.Errorf("rows count %d readings, want the %d produced; %d dead letters, first: %.600s", total, produced, bytes.Count(dl, []byte("\n")), dl)
	}
	// The metrics say the same, and the data is fresh.
	// The metrics are updated once a second, by a loop that a loaded
	// machine may hold up a while.
	m := waitMetric(t, p, `pushd_reduce_events_total{pipeline="telemetry"}`, float64(produced), 30*time.Second)
	fresh, ok := m[`pushd_pipeline_freshness_seconds{pipeline="telemetry"}`]
	if !ok || fresh > (bound+reduceWindow+30*time.Second).Seconds() {
		t.Errorf("pushd_pipeline_freshness_seconds = %v (reported %v), want the age of the last window's newest reading", fresh, ok)
	}
	if got := m[`pushd_reduce_events_total{pipeline="telemetry"}`]; got != float64(produced) {
		t.Errorf("pushd_reduce_events_total = %v, want %d", got, produced)
	}
	if got, want := m[`pushd_reduce_rows_total{pipeline="telemetry"}`], float64(len(aggregateRows(t, emu, id))); got != want {
		t.Errorf("pushd_reduce_rows_total = %v, want the %v rows that landed", got, want)
	}
	if got := m[`pushd_reduce_active{mode="aggregate",pipeline="telemetry"}`]; got != 1 {
		t.Errorf("pushd_reduce_active = %v, want 1", got)
	}
	t.Logf("freshness at the end: %.1fs", fresh)
	if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd exited %d after SIGTERM", code)
	}
}

// waitMetric scrapes p until the sample name has the value want, or timeout
// passes, and returns the last scrape.
func waitMetric(t *testing.T, p *proc, name string, want float64, timeout time.Duration) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := p.metrics(t)
		if m[name] == want || time.Now().After(deadline) {
			return m
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// reduceKafkaSource is kafkaSource with max_wait 1s: kafka-go gives a fetch
// max_wait to be answered, and on a loaded machine kfake (in this process,
// under -race) can take longer than 100ms, so the fetch of every partition
// times out again and again and the reading stalls (seen at load 25 on 2
// cores). An aggregation rightly waits for partitions with records unread,
// so a stalled reader stalls its windows.
func reduceKafkaSource(c *kfake.Cluster, group string, commitInterval time.Duration) string {
	return strings.Replace(kafkaSource(c, group, commitInterval), "max_wait: 100ms", "max_wait: 1s", 1)
}
