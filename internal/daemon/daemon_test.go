package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/emulator/emulatortest"
	"github.com/pushd/pushd/internal/sample"
)

const testWorkspace = "0f6a3b4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"

// telemetrySchema is the quick start's schema (configs/quickstart.yaml).
const telemetrySchema = `
    schema:
      epoch_unit: milliseconds
      columns:
        - {name: DeviceId,    type: String,   from: device.id, required: true}
        - {name: Site,        type: String,   from: device.site}
        - {name: Firmware,    type: String,   from: device.firmware}
        - {name: Timestamp,   type: DateTime, from: ts, required: true}
        - {name: Seq,         type: Int64,    from: seq, required: true}
        - {name: Temperature, type: Double,   from: metrics.temperature_c}
        - {name: Humidity,    type: Double,   from: metrics.humidity_pct}
        - {name: Pressure,    type: Double,   from: metrics.pressure_hpa}
        - {name: Battery,     type: Double,   from: metrics.battery_v}
        - {name: Online,      type: Boolean,  from: status.online, default: false}
        - {name: Alarm,       type: String,   from: status.alarms.0, default: ""}
        - {name: Latitude,    type: Double,   from: location.lat}
        - {name: Longitude,   type: Double,   from: location.lon}
`

// testEmulator starts a TLS emulator, writes its CA to a file and returns
// both.
func testEmulator(t *testing.T, mutate func(*emulator.Config)) (*emulator.Server, string) {
	t.Helper()
	return emulatortest.StartTLS(t, mutate)
}

// powerbiSection points pushd at emu with the real MSAL client-secret flow.
func powerbiSection(emu *emulator.Server, ca string) string {
	return fmt.Sprintf(`
powerbi:
  api_url: %s
  authority_url: %s
  ca_file: %s
  auth:
    method: client_secret
    tenant_id: %s
    client_id: %s
    client_secret: %s
  retry:
    initial_backoff: 10ms
    max_backoff: 200ms
metrics:
  listen: 127.0.0.1:0
`, emu.URL(), emu.URL(), ca, emulator.DefaultTenant, emulator.DefaultClientID, emulator.DefaultClientSecret)
}

// createTelemetryDataset makes the quick start's table in emu; seqType lets
// a test make the emulator disagree with pushd's schema.
func createTelemetryDataset(t *testing.T, emu *emulator.Server, seqType string) string {
	t.Helper()
	cols := []emulator.Column{
		{Name: "DeviceId", DataType: "String"}, {Name: "Site", DataType: "String"}, {Name: "Firmware", DataType: "String"},
		{Name: "Timestamp", DataType: "DateTime"}, {Name: "Seq", DataType: seqType},
		{Name: "Temperature", DataType: "Double"}, {Name: "Humidity", DataType: "Double"}, {Name: "Pressure", DataType: "Double"},
		{Name: "Battery", DataType: "Double"}, {Name: "Online", DataType: "Boolean"}, {Name: "Alarm", DataType: "String"},
		{Name: "Latitude", DataType: "Double"}, {Name: "Longitude", DataType: "Double"},
	}
	id, err := emu.CreateDataset(testWorkspace, emulator.CreateDatasetRequest{
		Name: "IoT Telemetry", DefaultMode: "Push",
		Tables: []emulator.Table{{Name: "Telemetry", Columns: cols}},
	}, emulator.RetentionNone)
	if err != nil {
		t.Fatalf("creating dataset: %v", err)
	}
	return id
}

func loadConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(text), "test.yaml")
	if err != nil {
		t.Fatalf("config:\n%v\n%s", err, text)
	}
	return cfg
}

func stdinPipeline(extra string, dl string) string {
	return fmt.Sprintf(`
pipelines:
  - name: telemetry
    source:
      type: stdin
    target:
      workspace_id: %s
      dataset_name: IoT Telemetry
      table: Telemetry
%s
    dead_letter:
      path: %s
%s`, testWorkspace, telemetrySchema, dl, extra)
}

func sampleEvents(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := sample.Write(&buf, n, 50, 7, time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// seqCounts returns how many rows hold each Seq value.
func seqCounts(t *testing.T, rows []json.RawMessage) map[int64]int {
	t.Helper()
	counts := map[int64]int{}
	for _, r := range rows {
		var row struct{ Seq int64 }
		if err := json.Unmarshal(r, &row); err != nil {
			t.Fatalf("row %s: %v", r, err)
		}
		counts[row.Seq]++
	}
	return counts
}

func TestStdinEventsLandOnceWithTheRightValues(t *testing.T) {
	emu, ca := testEmulator(t, nil)
	id := createTelemetryDataset(t, emu, "Int64")
	dl := filepath.Join(t.TempDir(), "dl.ndjson")
	cfg := loadConfig(t, powerbiSection(emu, ca)+stdinPipeline("    batch: {linger: 50ms}", dl))

	const n = 50000
	events := sampleEvents(t, n)
	res, err := Run(context.Background(), Options{Config: cfg, Stdin: bytes.NewReader(events)})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := res.Pipelines[0].Summary
	if s.EventsRead != n || s.RowsAccepted != n || s.EventsFailed != 0 || s.RowsDeadLettered+s.EventsDeadLettered != 0 {
		t.Fatalf("summary = %+v, want %d events read and accepted", s, n)
	}
	rows := emu.Rows(id, "Telemetry")
	counts := seqCounts(t, rows)
	if len(rows) != n || len(counts) != n {
		t.Fatalf("emulator holds %d rows with %d distinct seq, want %d once each", len(rows), len(counts), n)
	}
	for seq, c := range counts {
		if c != 1 || seq < 1 || seq > n {
			t.Fatalf("seq %d landed %d times", seq, c)
		}
	}

	// Every column of every row holds the value and type the event gave.
	bySeq := map[int64]map[string]any{}
	for _, r := range rows {
		var m map[string]any
		if err := json.Unmarshal(r, &m); err != nil {
			t.Fatal(err)
		}
		bySeq[int64(m["Seq"].(float64))] = m
	}
	sc := bufio.NewScanner(bytes.NewReader(events))
	for sc.Scan() {
		var ev struct {
			Device struct{ ID, Site, Firmware string }
			TS     string
			Seq    int64
			M      struct {
				T float64 `json:"temperature_c"`
				H float64 `json:"humidity_pct"`
				P float64 `json:"pressure_hpa"`
				B string  `json:"battery_v"`
			} `json:"metrics"`
			Status struct {
				Online bool
				Alarms []string
			}
			Location struct{ Lat, Lon float64 }
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		row := bySeq[ev.Seq]
		ts, _ := time.Parse(time.RFC3339Nano, ev.TS)
		gotTS, err := time.Parse(time.RFC3339Nano, row["Timestamp"].(string))
		if err != nil || !gotTS.Equal(ts) {
			t.Fatalf("seq %d: Timestamp %v, want %v", ev.Seq, row["Timestamp"], ev.TS)
		}
		alarm := ""
		if len(ev.Status.Alarms) > 0 {
			alarm = ev.Status.Alarms[0]
		}
		want := map[string]any{
			"DeviceId": ev.Device.ID, "Site": ev.Device.Site, "Firmware": ev.Device.Firmware,
			"Temperature": ev.M.T, "Humidity": ev.M.H, "Pressure": ev.M.P, "Online": ev.Status.Online,
			"Alarm": alarm, "Latitude": ev.Location.Lat, "Longitude": ev.Location.Lon,
		}
		for k, v := range want {
			if row[k] != v {
				t.Fatalf("seq %d: %s = %#v, want %#v (row %v)", ev.Seq, k, row[k], v, row)
			}
		}
		if b, ok := row["Battery"].(float64); !ok || fmt.Sprintf("%.2f", b) != ev.M.B {
			t.Fatalf("seq %d: Battery = %#v, want the number %s", ev.Seq, row["Battery"], ev.M.B)
		}
	}
}

func TestFaultsAndABadRow(t *testing.T) {
	emu, ca := testEmulator(t, func(c *emulator.Config) {
		c.Faults = emulator.Faults{ErrorRate: 0.2, CutRate: 0.1}
		c.Seed = 3
		c.Limits.RequestsPerWindow = 0 // the test is about faults, not pacing
	})
	// The emulator's Timestamp column is a DateTime while pushd maps it as a
	// String, so one event whose ts is no date passes pushd and is refused
	// by Power BI: a batch with one bad row.
	id := createTelemetryDataset(t, emu, "Int64")
	dl := filepath.Join(t.TempDir(), "dl.ndjson")
	text := powerbiSection(emu, ca) + stdinPipeline(`
    batch: {max_rows: 50, linger: 50ms}
    limits: {requests_per_minute: 60000}`, dl)
	text = strings.Replace(text, "{name: Timestamp,   type: DateTime, from: ts, required: true}", "{name: Timestamp, type: String, from: ts, required: true}", 1)
	cfg := loadConfig(t, text)

	const n = 5000
	events := sampleEvents(t, n)
	line := bytes.Split(events, []byte("\n"))[1233] // seq 1234
	bad := append([]byte(nil), line...)
	i := bytes.Index(bad, []byte(`"ts":"`)) + len(`"ts":"`)
	copy(bad[i:], "notadate")
	events = bytes.Replace(events, line, bad, 1)
	res, err := Run(context.Background(), Options{Config: cfg, Stdin: bytes.NewReader(events)})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	stats := emu.Stats()
	// About 100 requests (and their retries) roll the dice: with rates of
	// 0.2 and 0.1, a run without an error or a cut is a chance of about
	// 1 in 40,000, whatever order concurrent requests take.
	if stats.InjectedErrors == 0 || stats.ConnectionsCut == 0 {
		t.Fatalf("no faults were injected (%d errors, %d cuts): the test proves nothing", stats.InjectedErrors, stats.ConnectionsCut)
	}
	s := res.Pipelines[0].Summary
	if s.RowsDeadLettered != 1 || s.EventsFailed != 0 {
		t.Fatalf("summary = %+v, want exactly one dead-lettered row", s)
	}
	// A cut connection after the rows were stored means a retry duplicates
	// them (at least once): every event lands, some maybe twice.
	counts := seqCounts(t, emu.Rows(id, "Telemetry"))
	for seq := int64(1); seq <= n; seq++ {
		if seq == 1234 {
			if counts[seq] != 0 {
				t.Errorf("bad row landed")
			}
			continue
		}
		if counts[seq] < 1 {
			t.Fatalf("seq %d did not land", seq)
		}
	}

	data, err := os.ReadFile(dl)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) != 1 {
		t.Fatalf("dead letter has %d lines, want 1:\n%s", len(lines), data)
	}
	for _, want := range []string{`"pipeline":"telemetry"`, `"stdin:1234"`, `400`, `notadate`} {
		if !bytes.Contains(lines[0], []byte(want)) {
			t.Errorf("dead letter line lacks %s: %s", want, lines[0])
		}
	}
}

// TestScaledDownQuotasAreUsedWithoutA429: a standing backlog against a
// scaled-down request quota draws no 429, never puts more than the quota in
// a window, and uses most of it. A request holds its place from its send
// until a window after its answer (see pushapi's window), so each window
// loses a round trip, and on a loaded machine under -race a round trip
// includes waiting for a core: the window is 4s (5 requests a second), not
// shorter, so that cost stays a few per cent.
func TestScaledDownQuotasAreUsedWithoutA429(t *testing.T) {
	const (
		quota  = 20
		window = 4 * time.Second
	)
	emu, ca := testEmulator(t, func(c *emulator.Config) {
		c.Limits.RequestsPerWindow = quota
		c.Limits.RequestWindow = window
	})
	id := createTelemetryDataset(t, emu, "Int64")
	dl := filepath.Join(t.TempDir(), "dl.ndjson")
	cfg := loadConfig(t, powerbiSection(emu, ca)+stdinPipeline(`
    batch: {max_rows: 100, linger: 1m}
    limits: {requests_per_minute: 20, request_window: 4s}`, dl))

	// 35 requests of 100 rows (the linger never ends a batch; the end of
	// the input sends the last): seven seconds of the quota's rate.
	const n = 3500
	res, err := Run(context.Background(), Options{Config: cfg, Stdin: bytes.NewReader(sampleEvents(t, n))})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := res.Pipelines[0].Summary.RowsAccepted; got != n {
		t.Fatalf("%d rows accepted, want %d", got, n)
	}
	ds := emu.Stats().Datasets[id]
	if ds.Throttled != 0 {
		t.Fatalf("emulator answered %d requests 429", ds.Throttled)
	}
	posts := ds.Posts
	if len(posts) != 35 {
		t.Fatalf("%d POST rows requests, want 35", len(posts))
	}
	// The rate achieved between the first and the last request, against
	// the quota's rate: a sender that keeps under every window can use at
	// most the quota per window in the long run.
	span := posts[len(posts)-1].Arrived.Sub(posts[0].Arrived)
	achieved := float64(len(posts)-1) / span.Seconds()
	allowed := float64(quota) / window.Seconds()
	use := achieved / allowed
	t.Logf("%d requests over %v: %.2f/s of the %.2f/s allowed (%.1f%%)", len(posts), span, achieved, allowed, use*100)
	if use < 0.9 {
		t.Errorf("%d requests over %v: %.2f/s of the %.2f/s allowed (%.0f%%), want at least 90%%", len(posts), span, achieved, allowed, use*100)
	}
	// And no window ever held more than the quota.
	for i := range posts {
		j := i
		for j < len(posts) && posts[j].Arrived.Sub(posts[i].Arrived) < window {
			j++
		}
		if j-i > quota {
			t.Fatalf("%d requests within %v from request %d", j-i, window, i)
		}
	}
}

func TestThrottlingWindowIsHonoured(t *testing.T) {
	emu, ca := testEmulator(t, func(c *emulator.Config) {
		c.Faults = emulator.Faults{ThrottleFor: 3 * time.Second, ThrottleRetryAfter: time.Second}
	})
	id := createTelemetryDataset(t, emu, "Int64")
	dl := filepath.Join(t.TempDir(), "dl.ndjson")
	// One request in flight, so that every request after a 429 was sent
	// after the client saw it.
	cfg := loadConfig(t, powerbiSection(emu, ca)+stdinPipeline(`
    batch: {max_rows: 200, linger: 20ms}
    limits: {max_in_flight: 1}`, dl))

	const n = 2000
	res, err := Run(context.Background(), Options{Config: cfg, Stdin: bytes.NewReader(sampleEvents(t, n))})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := res.Pipelines[0].Summary.RowsAccepted; got != n {
		t.Fatalf("%d rows accepted, want %d", got, n)
	}
	if c := seqCounts(t, emu.Rows(id, "Telemetry")); len(c) != n {
		t.Fatalf("%d distinct events landed, want %d", len(c), n)
	}
	posts := emu.Stats().Datasets[id].Posts
	throttled := 0
	for i, p := range posts {
		if p.Status != 429 {
			continue
		}
		throttled++
		if i+1 < len(posts) {
			next := posts[i+1].Arrived
			if earliest := p.Arrived.Add(time.Duration(p.RetryAfter) * time.Second); next.Before(earliest) {
				t.Errorf("request %d arrived %v after a 429 whose Retry-After was %ds", i+1, next.Sub(p.Arrived), p.RetryAfter)
			}
		}
	}
	if throttled == 0 {
		t.Fatal("no request was throttled: the test proves nothing")
	}
	if res.Throttled != int64(throttled) {
		t.Errorf("summary counts %d throttled answers, the emulator sent %d", res.Throttled, throttled)
	}
}
