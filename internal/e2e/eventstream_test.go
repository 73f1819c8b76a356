package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/eventstream/eventstreamtest"
	"github.com/pushd/pushd/internal/schema"
)

// plainSchema is telemetrySchema without the Kafka metadata columns, so
// that the rows of an event are the same from every source.
var plainSchema = telemetrySchema[:strings.Index(telemetrySchema, "        - {name: Key,")]

// newEventstream starts the stand-in eventstream endpoint: kfake speaking
// only TLS and SASL PLAIN with the user $ConnectionString.
func newEventstream(t testing.TB) *eventstreamtest.Endpoint {
	t.Helper()
	e, err := eventstreamtest.Start(t.TempDir(), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// keyedGzip are the target settings the tests use: DeviceId as the message
// key, gzip, batches of up to 2,000 rows.
const keyedGzip = `          key_column: DeviceId
          compression: gzip
          batch: {max_rows: 2000, linger: 20ms}
`

// eventstreamTarget is the targets section (indented for a pipeline) of a
// fabric_eventstream target at e with keyedGzip, its connection string in a
// file in dir (connection_string_file), unless connString overrides it.
func eventstreamTarget(t testing.TB, e *eventstreamtest.Endpoint, dir, connString string) string {
	return eventstreamTargetWith(t, e, dir, connString, keyedGzip)
}

// eventstreamTargetWith is eventstreamTarget with other settings (YAML
// lines indented 10) than keyedGzip.
func eventstreamTargetWith(t testing.TB, e *eventstreamtest.Endpoint, dir, connString, settings string) string {
	t.Helper()
	if connString == "" {
		connString = e.ConnectionString
	}
	file := filepath.Join(dir, "fabric-connection-string")
	if err := os.WriteFile(file, []byte(connString+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`    targets:
      - type: fabric_eventstream
        name: fabric
        fabric_eventstream:
          bootstrap_server: %s
          auth:
            connection_string_file: %s
          tls: {enabled: true, ca_file: %s}
          retry: {initial_backoff: 20ms, max_backoff: 1s}
%s`, e.Addr, file, e.CAFile, settings)
}

// eventstreamOnlyConfig is a config whose one pipeline reads source and
// writes only to the eventstream (no Power BI section at all).
func eventstreamOnlyConfig(t testing.TB, dir, source, targets string, maxUnacked int) string {
	t.Helper()
	text := fmt.Sprintf(`metrics:
  listen: 127.0.0.1:0
log:
  format: json
shutdown_timeout: 10s
pipelines:
  - name: telemetry
    source:
%s%s    dead_letter:
      path: %s
    max_unacked_events: %d
%s`, source, plainSchema, filepath.Join(dir, "dead-letter.ndjson"), maxUnacked, targets)
	path := filepath.Join(dir, "fabric.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// expectedRows maps every event with the config's schema, as pushd does:
// the rows each message must equal.
func expectedRows(t testing.TB, cfgPath string, events [][]byte) map[int64]map[string]any {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	m, err := schema.New(cfg.Pipelines[0].Schema)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int64]map[string]any, len(events))
	for _, ev := range events {
		rows, err := m.Map(ev, nil, nil)
		if err != nil || len(rows) != 1 {
			t.Fatalf("mapping %s: %d rows, %v", ev, len(rows), err)
		}
		row := decodeRow(t, rows[0])
		out[int64(row["Seq"].(float64))] = row
	}
	return out
}

func decodeRow(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var row map[string]any
	if err := json.Unmarshal(b, &row); err != nil {
		t.Fatalf("message %s is not a JSON object: %v", b, err)
	}
	return row
}

// waitMessages waits until the endpoint holds at least n messages.
func waitMessages(t testing.TB, e *eventstreamtest.Endpoint, n int64, timeout time.Duration, p *proc) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := e.Count(context.Background())
		if err == nil && got >= n {
			return
		}
		if p != nil && p.exited() {
			t.Fatalf("pushd exited with %d of %d messages produced", got, n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d of %d messages (%v)", timeout, got, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkMessages reads every message and checks that each equals the mapped
// row of its event, keyed by its DeviceId, and that every event is there
// (at least once; exactly once when exact). It returns the messages per seq.
func checkMessages(t testing.TB, e *eventstreamtest.Endpoint, want map[int64]map[string]any, exact bool) map[int64]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := e.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := e.Messages(ctx, int(n))
	if err != nil {
		t.Fatal(err)
	}
	counts := make(map[int64]int, len(want))
	for _, m := range msgs {
		row := decodeRow(t, m.Value)
		seq, _ := row["Seq"].(float64)
		exp, ok := want[int64(seq)]
		if !ok {
			t.Fatalf("message %s is no event's row", m.Value)
		}
		if !reflect.DeepEqual(row, exp) {
			t.Fatalf("message %s\nwant the mapped row %v", m.Value, exp)
		}
		if string(m.Key) != exp["DeviceId"] {
			t.Fatalf("message key %q, want the DeviceId %v", m.Key, exp["DeviceId"])
		}
		counts[int64(seq)]++
	}
	for seq := range want {
		switch c := counts[seq]; {
		case c == 0:
			t.Fatalf("event seq %d has no message (%d messages for %d events)", seq, len(msgs), len(want))
		case c > 1 && exact:
			t.Fatalf("event seq %d has %d messages, want 1", seq, c)
		}
	}
	return counts
}

// TestEventstreamFromKafkaAndStdin: 100,000 events from Kafka, and 100,000
// from stdin, land in the eventstream (TLS, SASL PLAIN as
// $ConnectionString, connection string from a file) as 100,000 JSON
// messages each, every one equal to the mapped row of its event and keyed
// by its DeviceId column.
func TestEventstreamFromKafkaAndStdin(t *testing.T) {
	t.Parallel()
	const n = 100_000
	events := telemetry(t, n)
	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t)
		es := newEventstream(t)
		dir := t.TempDir()
		produce(t, c, events, 1)
		cfg := eventstreamOnlyConfig(t, dir, kafkaSource(c, "e2e-fabric", 200*time.Millisecond), eventstreamTarget(t, es, dir, ""), 5000)
		want := expectedRows(t, cfg, events)
		p := startPushd(t, "fabric-kafka", cfg)
		waitMessages(t, es, n, 3*time.Minute, p)
		if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("pushd exited %d after SIGTERM, want 0", code)
		}
		checkMessages(t, es, want, true)
		var committed int64
		for _, o := range committedOffsets(t, c, "e2e-fabric") {
			committed += o
		}
		if committed != n {
			t.Errorf("%d offsets committed, want all %d", committed, n)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		t.Parallel()
		es := newEventstream(t)
		dir := t.TempDir()
		cfg := eventstreamOnlyConfig(t, dir, "      type: stdin\n", eventstreamTarget(t, es, dir, ""), 5000)
		want := expectedRows(t, cfg, events)
		cmd := exec.Command(pushdBin, "run", "-c", cfg)
		cmd.Stdin = bytes.NewReader(append(bytes.Join(events, []byte("\n")), '\n'))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pushd run < events: %v\n%s", err, tailBytes(out))
		}
		checkMessages(t, es, want, true)
		if !bytes.Contains(out, []byte("pipeline telemetry: 100000 events read")) {
			t.Errorf("summary does not count the events:\n%s", tailBytes(out))
		}
	})
}

func tailBytes(b []byte) []byte { return b[max(0, len(b)-3000):] }

// TestEventstreamWrongConnectionStringRefusedAtStart: pushd does not start
// with a connection string the endpoint refuses, says which key to fix, and
// never prints the key.
func TestEventstreamWrongConnectionStringRefusedAtStart(t *testing.T) {
	t.Parallel()
	es := newEventstream(t)
	dir := t.TempDir()
	wrong := strings.Replace(es.ConnectionString, "SharedAccessKey=", "SharedAccessKey=0ld", 1)
	cfg := eventstreamOnlyConfig(t, dir, "      type: stdin\n", eventstreamTarget(t, es, dir, wrong), 100)
	cmd := exec.Command(pushdBin, "run", "-c", cfg)
	cmd.Stdin = strings.NewReader(string(telemetry(t, 1)[0]) + "\n")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	code := -1
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if err == nil || code <= 0 {
		t.Fatalf("pushd run with a wrong connection string: %v, want a non-zero exit\n%s", err, out)
	}
	for _, want := range []string{"pipelines[0] (telemetry).targets[0]", "authentication failed: check auth.connection_string"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	key := wrong[strings.Index(wrong, "SharedAccessKey=")+len("SharedAccessKey="):]
	key = key[:strings.Index(key, ";")]
	if bytes.Contains(out, []byte(key)) {
		t.Errorf("output shows the key:\n%s", out)
	}
	if n, _ := es.Count(context.Background()); n != 0 {
		t.Errorf("%d messages produced with a refused connection string", n)
	}
	t.Logf("refused at start in %v with exit code %d", time.Since(start).Round(time.Millisecond), code)
}

// TestFanOutToPowerBIAndEventstream: every event lands exactly once in the
// Power BI table and once in the eventstream.
func TestFanOutToPowerBIAndEventstream(t *testing.T) {
	t.Parallel()
	const n = 20_000
	c := newCluster(t)
	es := newEventstream(t)
	emu, ca, id := testEmulator(t, noQuotas)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	events := telemetry(t, n)
	produce(t, c, events, 1)
	text := s.config("fanout", pipelineOptions{
		source: kafkaSource(c, "e2e-fanout", 100*time.Millisecond),
		batch:  "{max_rows: 2000, linger: 50ms}", limits: raisedLimits, schema: plainSchema,
	}) + eventstreamTarget(t, es, s.dir, "")
	cfg := filepath.Join(s.dir, "fanout.yaml")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	want := expectedRows(t, cfg, events)
	p := startPushd(t, "fanout", cfg)
	waitLanded(t, emu, id, n, 2*time.Minute)
	waitMessages(t, es, n, 2*time.Minute, p)
	// The broker holds a batch before its produce call returns to pushd,
	// which counts it only then: wait for the count.
	accepted := `pushd_eventstream_messages_total{result="accepted",target="telemetry/fabric"}`
	m := waitMetric(t, p, accepted, n, 30*time.Second)
	if got := sum(m, accepted); got != n {
		t.Errorf("pushd_eventstream_messages_total accepted = %v, want %d", got, n)
	}
	if got := sum(m, "pushd_pipeline_events_read_total"); got != n {
		t.Errorf("pushd_pipeline_events_read_total = %v, want %d", got, n)
	}
	if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd exited %d after SIGTERM, want 0", code)
	}
	checkMessages(t, es, want, true)
	counts := seqCounts(t, emu, id)
	if dups, strays := duplicates(counts, n); dups != 0 || strays != 0 || len(missingSeqs(counts, n)) != 0 {
		t.Fatalf("power bi: %d duplicates, %d strays, %d missing", dups, strays, len(missingSeqs(counts, n)))
	}
	for i, row := range emu.Rows(id, table) {
		got := decodeRow(t, row)
		if exp := want[int64(got["Seq"].(float64))]; !reflect.DeepEqual(got, exp) {
			t.Fatalf("power bi row %d %s differs from the eventstream's %v", i, row, exp)
		}
	}
}

// TestFanOutThrottledPowerBIThenSIGKILL: while the emulator throttles the
// dataset (429 for every POST rows; 15s here, scaled down from a minute:
// the behaviour does not depend on the length), the eventstream keeps
// taking rows up to max_unacked_events and nothing is committed, since no
// event has landed in both targets. Then pushd is killed with SIGKILL
// mid-stream and restarted: every event is in both targets, none lost.
func TestFanOutThrottledPowerBIThenSIGKILL(t *testing.T) {
	t.Parallel()
	const (
		n          = 20_000
		maxUnacked = 3_000
		group      = "e2e-fanout-kill"
		throttle   = 15 * time.Second
	)
	c := newCluster(t)
	es := newEventstream(t)
	emu, ca, id := testEmulator(t, noQuotas)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	events := telemetry(t, n)
	produce(t, c, events, 1)
	text := s.config("throttled", pipelineOptions{
		source: kafkaSource(c, group, 50*time.Millisecond),
		batch:  "{max_rows: 500, linger: 50ms}", schema: plainSchema,
		limits:     "{requests_per_minute: 1000000, rows_per_hour: 1000000000, large_table_rows: -1, max_in_flight: 2}",
		maxUnacked: maxUnacked,
	}) + eventstreamTarget(t, es, s.dir, "")
	cfg := filepath.Join(s.dir, "throttled.yaml")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	want := expectedRows(t, cfg, events)
	// The latency (200ms a request, 2 in flight) keeps the stream slow
	// enough after the throttle to kill it mid-way.
	emu.SetFaults(emulator.Faults{ThrottleFor: throttle, ThrottleRetryAfter: time.Second, Latency: 200 * time.Millisecond})
	throttledUntil := time.Now().Add(throttle)

	victim := startPushd(t, "throttled", cfg)
	// The eventstream side flows up to the unacked bound, then waits.
	waitMessages(t, es, maxUnacked, throttle-3*time.Second, victim)
	// Checked 4s before the throttle ends: a loaded machine may stall the
	// test between here and the last count.
	time.Sleep(time.Until(throttledUntil.Add(-4 * time.Second)))
	produced, err := es.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	landed := emu.RowCount(id, table)
	var committed int64
	for _, o := range committedOffsets(t, c, group) {
		committed += o
	}
	t.Logf("near the end of a %v throttle: %d messages in the eventstream (bound %d), %d rows in power bi, %d offsets committed",
		throttle, produced, maxUnacked, landed, committed)
	if produced < maxUnacked || produced > maxUnacked {
		t.Errorf("the eventstream holds %d messages during the throttle, want the unacked bound %d", produced, maxUnacked)
	}
	if landed != 0 || committed != 0 {
		t.Fatalf("during the throttle: %d rows in power bi, %d offsets committed; want none", landed, committed)
	}

	// After the throttle: kill it mid-stream, restart, and find everything.
	waitMidStream(t, emu, id, 6_000, n)
	if code, _ := victim.stop(t, syscall.SIGKILL); code != -1 {
		t.Fatalf("exit code after SIGKILL = %d, want -1", code)
	}
	restarted := startPushd(t, "restarted", cfg)
	waitLanded(t, emu, id, n, 2*time.Minute)
	waitMessages(t, es, n, 2*time.Minute, restarted)
	if code, _ := restarted.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("restarted pushd exited %d after SIGTERM, want 0", code)
	}
	esCounts := checkMessages(t, es, want, false)
	pbCounts := seqCounts(t, emu, id)
	if missing := missingSeqs(pbCounts, n); len(missing) > 0 {
		t.Fatalf("%d events never landed in power bi (first %v)", len(missing), first(missing, 10))
	}
	pbDups, _ := duplicates(pbCounts, n)
	esDups, _ := duplicates(esCounts, n)
	t.Logf("after SIGKILL and restart: every event in both targets; redelivered %d rows to power bi and %d messages to the eventstream (bound: max_unacked_events + a batch each)", pbDups, esDups)
	if pbDups > maxUnacked+500 || esDups > maxUnacked+2000 {
		t.Errorf("duplicates beyond the unacked bound: %d in power bi, %d in the eventstream", pbDups, esDups)
	}
}

// TestMeasureKafkaToEventstream measures Kafka → pushd binary →
// fabric_eventstream (the kfake stand-in, TLS and SASL PLAIN): 200,000
// sample events wait in 3 partitions; pushd runs under /usr/bin/time -v
// until the endpoint holds them all, then gets SIGTERM. It reports events
// per CPU-second of the pushd process and its peak RSS, as
// TestMeasureKafkaThroughput does for Power BI. Opt-in:
//
//	PUSHD_MEASURE=1 go test ./internal/e2e -run TestMeasureKafkaToEventstream -v
//
// PUSHD_MEASURE_EVENTS=N changes the count of events. The target has its
// defaults (no key, no compression, batches of 1,000 rows);
// PUSHD_MEASURE_KEYED=1 measures DeviceId keys and gzip instead.
// PUSHD_MEASURE_CPUPROFILE=FILE runs the pipeline in-process under the CPU
// profiler, as for TestMeasureKafkaThroughput (the profile then includes
// the in-process brokers: look at pushd's packages and kafka-go).
func TestMeasureKafkaToEventstream(t *testing.T) {
	if os.Getenv("PUSHD_MEASURE") == "" {
		t.Skip("a measurement, not a check: set PUSHD_MEASURE=1 to run it")
	}
	n := 200_000
	if v := os.Getenv("PUSHD_MEASURE_EVENTS"); v != "" {
		if _, err := fmt.Sscan(v, &n); err != nil || n < 1 {
			t.Fatalf("PUSHD_MEASURE_EVENTS=%q: want a count of events", v)
		}
	}
	c := newCluster(t)
	es := newEventstream(t)
	dir := t.TempDir()
	produce(t, c, telemetry(t, n), 1)
	settings := ""
	if os.Getenv("PUSHD_MEASURE_KEYED") != "" {
		settings = keyedGzip
	}
	cfg := eventstreamOnlyConfig(t, dir, kafkaSource(c, "e2e-measure-fabric", time.Second), eventstreamTargetWith(t, es, dir, "", settings), 5000)
	if path := os.Getenv("PUSHD_MEASURE_CPUPROFILE"); path != "" {
		text, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		profileInProcess(t, string(text), path, func() int64 {
			got, _ := es.Count(context.Background())
			return got
		}, n)
		return
	}
	r := runUnderTime(t, cfg, dir, n, func() int64 {
		got, _ := es.Count(context.Background())
		return got
	})
	delivered, user, sys, rss := r.delivered, r.user, r.sys, r.rssBytes
	t.Logf("%d events produced to the eventstream %v after start; pushd used %.2fs user + %.2fs sys: %.0f events per CPU-second (Power BI path target %d); peak RSS %.1f MB (target < %d MB)",
		n, delivered.Round(time.Millisecond), user, sys, float64(n)/(user+sys), targetEventsPerCPUSecond, rss/1e6, targetPeakRSSBytes/1_000_000)
}
