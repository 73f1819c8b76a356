package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/emulator/emulatortest"
	"github.com/pushd/pushd/internal/sample"
)

// pushdBin is the pushd binary TestMain builds for the whole package.
var pushdBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if bin := os.Getenv("PUSHD_E2E_BIN"); bin != "" {
		// A binary built elsewhere, to compare two versions.
		pushdBin = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "pushd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(gomod)) == 0 {
		fmt.Fprintf(os.Stderr, "e2e: finding the module root with go env GOMOD: %v\n", err)
		return 1
	}
	pushdBin = filepath.Join(dir, "pushd")
	// Built without the race detector even under `go test -race`: the child
	// is what is measured and killed, the test process is what races.
	build := exec.Command("go", "build", "-race=false", "-o", pushdBin, "./cmd/pushd")
	build.Dir = filepath.Dir(string(bytes.TrimSpace(gomod)))
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building pushd: %v\n", err)
		return 1
	}
	return m.Run()
}

const (
	topic     = "events"
	workspace = "0f6a3b4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
	table     = "Telemetry"
)

// newCluster starts an in-process Kafka cluster on loopback with the topic
// "events" in 3 partitions, accepting the short session timeouts the tests
// use.
func newCluster(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(3, topic),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// telemetry returns n sample events (seq 1..n), one NDJSON line each. The
// same n gives the same events, and a shorter run is a prefix of a longer.
func telemetry(t testing.TB, n int) [][]byte {
	t.Helper()
	var buf bytes.Buffer
	if err := sample.Write(&buf, n, 50, 7, time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n"))
}

// produce writes events round-robin over the partitions, the key of each
// being its seq (firstSeq for events[0]).
func produce(t testing.TB, c *kfake.Cluster, events [][]byte, firstSeq int) {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.MaxBufferedRecords(len(events)+1),
	)
	if err != nil {
		t.Fatalf("kgo client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var firstErr error
	for i, ev := range events {
		key := strconv.AppendInt(nil, int64(firstSeq+i), 10)
		cl.Produce(ctx, &kgo.Record{Key: key, Value: ev}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("flushing %d records: %v", len(events), err)
	}
	if firstErr != nil {
		t.Fatalf("producing: %v", firstErr)
	}
}

// committedOffsets returns the group's committed offset per partition.
func committedOffsets(t testing.TB, c *kfake.Cluster, group string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatalf("kgo client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	out := map[int32]int64{}
	if errors.Is(err, kerr.GroupIDNotFound) {
		// kfake knows a group only once a member joined it; until then
		// it has committed nothing (a broker answers no offsets).
		return out
	}
	if err != nil {
		t.Fatalf("fetching the committed offsets of %s: %v", group, err)
	}
	for p, r := range resp[topic] {
		out[p] = r.At
	}
	return out
}

// testEmulator starts a TLS emulator with a push dataset holding the
// telemetry table (retention None, so nothing is trimmed), and writes its CA
// to a file. It returns the emulator, the CA file and the dataset id.
func testEmulator(t testing.TB, mutate func(*emulator.Config)) (*emulator.Server, string, string) {
	t.Helper()
	cols := []emulator.Column{
		{Name: "DeviceId", DataType: "String"}, {Name: "Site", DataType: "String"}, {Name: "Firmware", DataType: "String"},
		{Name: "Timestamp", DataType: "DateTime"}, {Name: "Seq", DataType: "Int64"},
		{Name: "Temperature", DataType: "Double"}, {Name: "Humidity", DataType: "Double"}, {Name: "Pressure", DataType: "Double"},
		{Name: "Battery", DataType: "Double"}, {Name: "Online", DataType: "Boolean"}, {Name: "Alarm", DataType: "String"},
		{Name: "Latitude", DataType: "Double"}, {Name: "Longitude", DataType: "Double"}, {Name: "Key", DataType: "String"},
		{Name: "Partition", DataType: "Int64"}, {Name: "Offset", DataType: "Int64"},
	}
	return emulatorWithTable(t, mutate, cols)
}

// emulatorWithTable starts a TLS emulator (its config changed by mutate
// when not nil), writes its CA to a file and creates the push dataset
// "IoT Telemetry" holding the test table with cols. It returns the
// emulator, the CA file and the dataset id.
func emulatorWithTable(t testing.TB, mutate func(*emulator.Config), cols []emulator.Column) (*emulator.Server, string, string) {
	t.Helper()
	emu, ca := emulatortest.StartTLS(t, mutate)
	id, err := emu.CreateDataset(workspace, emulator.CreateDatasetRequest{
		Name: "IoT Telemetry", DefaultMode: "Push",
		Tables: []emulator.Table{{Name: table, Columns: cols}},
	}, emulator.RetentionNone)
	if err != nil {
		t.Fatalf("creating the dataset: %v", err)
	}
	return emu, ca, id
}

// telemetrySchema maps the sample events; Key, Partition and Offset are the
// Kafka record's (absent with other sources).
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
        - {name: Key,         type: String,   from: "@key"}
        - {name: Partition,   type: Int64,    from: "@partition"}
        - {name: Offset,      type: Int64,    from: "@offset"}
`

// setup is what a pushd config needs besides the pipeline's own settings.
type setup struct {
	emu *emulator.Server
	ca  string
	dir string // where the config and the dead letter go
}

// pipelineOptions are the settings the tests vary.
type pipelineOptions struct {
	// source is the YAML of the source section's body (indented 6).
	source string
	// batch, limits: YAML flow maps; empty keeps pushd's defaults.
	batch, limits string
	// schema replaces telemetrySchema when set.
	schema string
	// maxUnacked is max_unacked_events (0: default).
	maxUnacked int
	// shutdownTimeout is shutdown_timeout (0: 10s).
	shutdownTimeout time.Duration
}

// kafkaSource is a Kafka source section with the timings the tests need:
// commits every commitInterval; a group session long enough (10s) that a
// loaded CI machine delaying heartbeats never makes the group rebalance
// mid-test (a rebalance legitimately redelivers what was acked but not yet
// committed, which the exactly-once assertions would count).
func kafkaSource(c *kfake.Cluster, group string, commitInterval time.Duration) string {
	return fmt.Sprintf(`      type: kafka
      kafka:
        brokers: [%s]
        topics: [%s]
        group_id: %s
        commit_interval: %s
        max_wait: 100ms
        session_timeout: 10s
        rebalance_timeout: 5s
`, strings.Join(c.ListenAddrs(), ", "), topic, group, commitInterval)
}

// config returns the text of a pushd config pointing at s.emu with the
// real MSAL client-secret flow, JSON logs and the ops endpoint on a free
// port (its address is logged).
func (s setup) config(name string, o pipelineOptions) string {
	shutdown := o.shutdownTimeout
	if shutdown == 0 {
		shutdown = 10 * time.Second
	}
	schema := o.schema
	if schema == "" {
		schema = telemetrySchema
	}
	var extra strings.Builder
	if o.batch != "" {
		fmt.Fprintf(&extra, "    batch: %s\n", o.batch)
	}
	if o.limits != "" {
		fmt.Fprintf(&extra, "    limits: %s\n", o.limits)
	}
	if o.maxUnacked > 0 {
		fmt.Fprintf(&extra, "    max_unacked_events: %d\n", o.maxUnacked)
	}
	return fmt.Sprintf(`
powerbi:
  api_url: %[1]s
  authority_url: %[1]s
  ca_file: %[2]s
  auth:
    method: client_secret
    tenant_id: %[3]s
    client_id: %[4]s
    client_secret: %[5]s
  retry:
    initial_backoff: 20ms
    max_backoff: 1s
metrics:
  listen: 127.0.0.1:0
log:
  format: json
  level: info
shutdown_timeout: %[6]s
pipelines:
  - name: telemetry
    source:
%[7]s    target:
      workspace_id: %[8]s
      dataset_name: IoT Telemetry
      table: %[9]s
%[10]s    dead_letter:
      path: %[11]s
%[12]s`, s.emu.URL(), s.ca, emulator.DefaultTenant, emulator.DefaultClientID, emulator.DefaultClientSecret,
		shutdown, o.source, workspace, table, schema, filepath.Join(s.dir, name+"-dead-letter.ndjson"), extra.String())
}

// writeConfig writes the config to a new file in s.dir.
func (s setup) writeConfig(t testing.TB, name string, o pipelineOptions) string {
	t.Helper()
	path := filepath.Join(s.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(s.config(name, o)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// proc is one pushd child process.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string // stderr: JSON logs
	outPath string // stdout: the exit summary
	started time.Time
	done    chan struct{}
	waitErr error
	ops     string
}

// startPushd runs `pushd run -c cfgPath`. The process is killed at the end
// of the test if still running; the tail of its logs is shown when the test
// failed, or always with PUSHD_E2E_LOGS=1.
func startPushd(t testing.TB, name, cfgPath string) *proc {
	t.Helper()
	dir := filepath.Dir(cfgPath)
	p := &proc{
		name:    name,
		logPath: filepath.Join(dir, name+".stderr.log"),
		outPath: filepath.Join(dir, name+".stdout.log"),
		done:    make(chan struct{}),
	}
	stderr, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := os.Create(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(pushdBin, "run", "-c", cfgPath)
	p.cmd.Stdout, p.cmd.Stderr = stdout, stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting pushd %s: %v", name, err)
	}
	p.started = time.Now()
	go func() {
		p.waitErr = p.cmd.Wait()
		stdout.Close()
		stderr.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() || os.Getenv("PUSHD_E2E_LOGS") != "" {
			p.dump(t)
		}
	})
	return p
}

// dump logs the tail of the process's output.
func (p *proc) dump(t testing.TB) {
	for _, path := range []string{p.outPath, p.logPath} {
		data, _ := os.ReadFile(path)
		if len(data) > 20000 {
			data = append([]byte("…"), data[len(data)-20000:]...)
		}
		t.Logf("pushd %s %s:\n%s", p.name, filepath.Base(path), data)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// opsAddr returns the address of the metrics and health endpoint, read from
// the process's log.
func (p *proc) opsAddr(t testing.TB) string {
	t.Helper()
	if p.ops != "" {
		return p.ops
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if f, err := os.Open(p.logPath); err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				var line struct{ Msg, Addr string }
				if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "metrics and health endpoint listening" {
					p.ops = line.Addr
				}
			}
			f.Close()
			if p.ops != "" {
				return p.ops
			}
		}
		if p.exited() {
			t.Fatalf("pushd %s exited before serving its ops endpoint: %v", p.name, p.waitErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pushd %s: no ops endpoint logged", p.name)
	return ""
}

// waitReady waits until /readyz answers 200: a token, the dataset and the
// Kafka group membership are all fine.
func (p *proc) waitReady(t testing.TB) {
	t.Helper()
	url := "http://" + p.opsAddr(t) + "/readyz"
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		if p.exited() {
			t.Fatalf("pushd %s exited before it was ready: %v", p.name, p.waitErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pushd %s not ready after 30s: %s", p.name, last)
}

// metrics scrapes /metrics and returns every sample as "name{labels}" →
// value.
func (p *proc) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.opsAddr(t) + "/metrics")
	if err != nil {
		t.Fatalf("scraping pushd %s: %v", p.name, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// sum adds the samples of the metric name (every label set).
func sum(samples map[string]float64, name string) float64 {
	var total float64
	for k, v := range samples {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

// stop sends sig and waits for the exit; it returns the exit code and how
// long the process took to exit after the signal.
func (p *proc) stop(t testing.TB, sig syscall.Signal) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil && !p.exited() {
		t.Fatalf("signalling pushd %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		t.Fatalf("pushd %s still running 90s after %v", p.name, sig)
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(start)
}

// seqCounts returns how many rows hold each Seq value.
func seqCounts(t testing.TB, emu *emulator.Server, datasetID string) map[int64]int {
	t.Helper()
	rows := emu.Rows(datasetID, table)
	counts := make(map[int64]int, len(rows))
	for _, r := range rows {
		counts[rowSeq(t, r)]++
	}
	return counts
}

// rowSeq reads the Seq column of a row without a full decode.
func rowSeq(t testing.TB, row []byte) int64 {
	i := bytes.Index(row, []byte(`"Seq":`))
	if i >= 0 {
		rest := row[i+len(`"Seq":`):]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if n, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil {
			return n
		}
	}
	t.Fatalf("row without a Seq: %s", row)
	return 0
}

// waitLanded waits until every seq in [1, n] holds at least one row, and
// returns the counts.
func waitLanded(t testing.TB, emu *emulator.Server, datasetID string, n int, timeout time.Duration) map[int64]int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if emu.RowCount(datasetID, table) >= n {
			counts := seqCounts(t, emu, datasetID)
			if missing := missingSeqs(counts, n); len(missing) == 0 {
				return counts
			}
		}
		if time.Now().After(deadline) {
			counts := seqCounts(t, emu, datasetID)
			t.Fatalf("after %v: %d rows, %d of %d events missing (first: %v)", timeout, emu.RowCount(datasetID, table), len(missingSeqs(counts, n)), n, first(missingSeqs(counts, n), 10))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func missingSeqs(counts map[int64]int, n int) []int64 {
	var missing []int64
	for seq := int64(1); seq <= int64(n); seq++ {
		if counts[seq] == 0 {
			missing = append(missing, seq)
		}
	}
	return missing
}

// duplicates counts the rows beyond the first of each seq, and the seqs
// outside [1, n].
func duplicates(counts map[int64]int, n int) (dups, strays int) {
	for seq, c := range counts {
		if seq < 1 || seq > int64(n) {
			strays += c
			continue
		}
		dups += c - 1
	}
	return dups, strays
}

// landedRow is the part of a row that says where its event came from.
type landedRow struct {
	Seq       int64
	Key       string
	Partition int32
	Offset    int64
}

// landedRows decodes every row's origin.
func landedRows(t testing.TB, emu *emulator.Server, datasetID string) []landedRow {
	t.Helper()
	rows := emu.Rows(datasetID, table)
	out := make([]landedRow, len(rows))
	for i, r := range rows {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatalf("row %s: %v", r, err)
		}
	}
	return out
}

func first[T any](s []T, n int) []T { return s[:min(n, len(s))] }
