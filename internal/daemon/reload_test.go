package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/logtest"
	"github.com/pushd/pushd/internal/source"
)

// twoHTTPPipelines is a config with pipelines a and b, each an HTTP source
// into its own table of one dataset; lingerB is b's batch.linger, limits
// both pipelines' limits (the dataset's).
func twoHTTPPipelines(t *testing.T, emu *emulator.Server, ca, dir, lingerB, limits string) string {
	t.Helper()
	return powerbiSection(emu, ca) + "pipelines:" +
		httpPipeline(dir, "a", "A", "127.0.0.1:0", "10ms", limits) + httpPipeline(dir, "b", "B", "127.0.0.1:0", lingerB, limits)
}

// httpPipeline is a pipeline named name reading HTTP on listen into table
// of the dataset Ingest.
func httpPipeline(dir, name, table, listen, linger, limits string) string {
	return httpPipelineTo(dir, "Ingest", name, table, listen, linger, limits)
}

// httpPipelineTo is httpPipeline into a table of dataset.
func httpPipelineTo(dir, dataset, name, table, listen, linger, limits string) string {
	return fmt.Sprintf(`
  - name: %s
    source:
      type: http
      http: {listen: "%s"}
    target: {workspace_id: %s, dataset_name: %s, table: %s}
    schema:
      columns:
        - {name: Seq, type: Int64, from: seq, required: true}
    batch: {max_rows: 100, linger: %s}
    limits: %s
    dead_letter: {path: %s}
`, name, listen, testWorkspace, dataset, table, linger, limits, filepath.Join(dir, name+".ndjson"))
}

// createIngest creates the dataset Ingest with an Int64 column Seq in each
// of tables.
func createIngest(t *testing.T, emu *emulator.Server, tables ...string) string {
	t.Helper()
	req := emulator.CreateDatasetRequest{Name: "Ingest", DefaultMode: "Push"}
	for _, name := range tables {
		req.Tables = append(req.Tables, emulator.Table{Name: name, Columns: []emulator.Column{{Name: "Seq", DataType: "Int64"}}})
	}
	id, err := emu.CreateDataset(testWorkspace, req, emulator.RetentionNone)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// startDaemon runs cfg until ctx ends; the channel gets the result.
func startDaemon(t *testing.T, ctx context.Context, cfg *config.Config, logs io.Writer) (*Daemon, <-chan Result) {
	t.Helper()
	ready := make(chan *Daemon, 1)
	done := make(chan Result, 1)
	go func() {
		res, err := Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewJSONHandler(logs, nil)), Ready: func(d *Daemon) { ready <- d }})
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		done <- res
	}()
	return <-ready, done
}

// seriesLabelled counts the series of reg whose label name is value.
func seriesLabelled(t *testing.T, reg *prometheus.Registry, name, value string) int {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == name && l.GetValue() == value {
					n++
				}
			}
		}
	}
	return n
}

// wantOnce fails unless table holds seq 1..n exactly once each.
func wantOnce(t *testing.T, emu *emulator.Server, id, table string, n int64) {
	t.Helper()
	counts := seqCounts(t, emu.Rows(id, table))
	for seq := int64(1); seq <= n; seq++ {
		if counts[seq] != 1 {
			t.Fatalf("table %s: seq %d landed %d times, want once", table, seq, counts[seq])
		}
	}
	if int64(len(counts)) != n {
		t.Fatalf("table %s: %d distinct seqs, want %d", table, len(counts), n)
	}
}

// post sends events seq first..first+n-1 and wants 200 (landed).
func post(t *testing.T, addr string, first, n int) {
	t.Helper()
	var body bytes.Buffer
	for i := range n {
		fmt.Fprintf(&body, "{\"seq\":%d}\n", first+i)
	}
	resp, err := http.Post("http://"+addr+"/v1/events", "application/x-ndjson", &body)
	if err != nil {
		t.Fatalf("posting to %s: %v", addr, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("posting to %s: %s", addr, resp.Status)
	}
}

// TestReloadRestartsOnlyTheChangedPipeline: changing b's linger drains and
// restarts b alone; a keeps its listener and its counters; the events
// posted before and after land exactly once; the run's result holds a
// once and b twice (before and after); the dataset's limiter, shared by a
// and b, is kept. A powerbi change and a change of the dataset's limits
// are refused and change nothing.
func TestReloadRestartsOnlyTheChangedPipeline(t *testing.T) {
	emu, ca := testEmulator(t, nil)
	id := createIngest(t, emu, "A", "B")
	dir := t.TempDir()
	var logs logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, done := startDaemon(t, ctx, loadConfig(t, twoHTTPPipelines(t, emu, ca, dir, "10ms", "{}")), &logs)
	addrA, addrB := d.HTTPSourceAddr("a"), d.HTTPSourceAddr("b")
	post(t, addrA, 1, 50)
	post(t, addrB, 1, 50)

	// A powerbi change: refused, nothing restarts.
	changedPB := loadConfig(t, strings.Replace(twoHTTPPipelines(t, emu, ca, dir, "10ms", "{}"), "max_backoff: 200ms", "max_backoff: 300ms", 1))
	if err := d.Reload(ctx, changedPB); err == nil || !strings.Contains(err.Error(), "restart is needed to change powerbi") {
		t.Fatalf("Reload with a powerbi change = %v, want refused", err)
	}
	if d.HTTPSourceAddr("b") != addrB {
		t.Fatal("a refused reload restarted b")
	}
	// The dataset's limits: its limiter holds the quota windows, refused.
	changedLimits := loadConfig(t, twoHTTPPipelines(t, emu, ca, dir, "30ms", "{requests_per_minute: 60}"))
	if err := d.Reload(ctx, changedLimits); err == nil || !strings.Contains(err.Error(), "restart is needed to change pipelines[0].limits (a), pipelines[1].limits (b)") {
		t.Fatalf("Reload with changed limits = %v, want refused", err)
	}
	if d.HTTPSourceAddr("b") != addrB {
		t.Fatal("a refused reload restarted b")
	}

	// The requests a and b made count in the dataset's window: the
	// pipeline the reload builds shares the limiter rather than getting a
	// new one that would allow the quota a second time.
	used := d.client.QuotaUse()
	if len(used) != 1 || used[0].Requests <= 0 {
		t.Fatalf("quota use before the reload = %+v, want one dataset with requests", used)
	}
	before := d.list()
	if err := d.Reload(ctx, loadConfig(t, twoHTTPPipelines(t, emu, ca, dir, "30ms", "{}"))); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	after := d.list()
	if after[0] != before[0] || d.HTTPSourceAddr("a") != addrA {
		t.Fatal("a was restarted by a reload that changed only b")
	}
	if after[1] == before[1] {
		t.Fatal("b was not restarted")
	}
	if now := d.client.QuotaUse(); len(now) != 1 || now[0].Requests < used[0].Requests {
		t.Fatalf("quota use after the reload = %+v, want at least %+v (the same limiter)", now, used)
	}
	if got := after[0].p.Stats().EventsRead; got != 50 {
		t.Fatalf("a's counter after the reload = %d, want 50 (kept)", got)
	}
	post(t, addrA, 51, 50)
	post(t, d.HTTPSourceAddr("b"), 51, 50)
	lines := logLines(t, logs.String(), "config reloaded")
	if len(lines) != 1 || lines[0]["changed"] != "[b]" || lines[0]["unchanged"] != "[a]" || lines[0]["added"] != "[]" || lines[0]["removed"] != "[]" {
		t.Fatalf("reload summary lines = %v", lines)
	}

	cancel()
	res := <-done
	wantOnce(t, emu, id, "A", 100)
	wantOnce(t, emu, id, "B", 100)
	var names []string
	for _, p := range res.Pipelines {
		names = append(names, fmt.Sprintf("%s:%d", p.Name, p.Summary.EventsRead))
	}
	// b's first run ends first (drained by the reload).
	if got := strings.Join(names, " "); got != "a:100 b:50 b:50" {
		t.Fatalf("result pipelines = %s, want a:100 b:50 b:50", got)
	}
}

// TestReloadRefusesAChangedStdinPipeline: its input is consumed, so it
// cannot restart; a removed-and-added pipeline and other changes are not
// applied either.
func TestReloadRefusesAChangedStdinPipeline(t *testing.T) {
	emu, ca := testEmulator(t, nil)
	createTelemetryDataset(t, emu, "Int64")
	dl := filepath.Join(t.TempDir(), "dl.ndjson")
	cfg := loadConfig(t, powerbiSection(emu, ca)+stdinPipeline("    batch: {linger: 10ms}", dl))
	r, w := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *Daemon, 1)
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Options{Config: cfg, Stdin: r, Ready: func(d *Daemon) { ready <- d }})
		done <- err
	}()
	d := <-ready
	before := d.list()
	err := d.Reload(ctx, loadConfig(t, powerbiSection(emu, ca)+stdinPipeline("    batch: {linger: 20ms}", dl)))
	if err == nil || !strings.Contains(err.Error(), "pipeline telemetry reads stdin and cannot be restarted") {
		t.Fatalf("Reload = %v, want refused", err)
	}
	if after := d.list(); after[0] != before[0] {
		t.Fatal("the stdin pipeline was replaced")
	}
	// The same file again: nothing to do, accepted.
	if err := d.Reload(ctx, loadConfig(t, powerbiSection(emu, ca)+stdinPipeline("    batch: {linger: 10ms}", dl))); err != nil {
		t.Fatalf("Reload of the same config: %v", err)
	}
	_ = w.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestReloadKeepsAPipelineThatCannotStart: b's new config listens on an
// address already taken, so b runs again with its previous config (and
// nothing is lost); an added pipeline that cannot listen is not started.
// Reload reports both; a goes on untouched.
func TestReloadKeepsAPipelineThatCannotStart(t *testing.T) {
	emu, ca := testEmulator(t, nil)
	id := createIngest(t, emu, "A", "B", "C")
	var taken [2]net.Listener
	for i := range taken {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		taken[i] = l
	}
	dir := t.TempDir()
	var logs logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, done := startDaemon(t, ctx, loadConfig(t, twoHTTPPipelines(t, emu, ca, dir, "10ms", "{}")), &logs)
	addrA := d.HTTPSourceAddr("a")
	post(t, addrA, 1, 50)
	post(t, d.HTTPSourceAddr("b"), 1, 50)
	before := d.list()

	next := powerbiSection(emu, ca) + "pipelines:" + httpPipeline(dir, "a", "A", "127.0.0.1:0", "10ms", "{}") +
		httpPipeline(dir, "b", "B", taken[0].Addr().String(), "30ms", "{}") +
		httpPipeline(dir, "c", "C", taken[1].Addr().String(), "10ms", "{}")
	err := d.Reload(ctx, loadConfig(t, next))
	if err == nil || !strings.Contains(err.Error(), "pipelines[1] (b)") || !strings.Contains(err.Error(), "pipelines[2] (c)") {
		t.Fatalf("Reload = %v, want the errors of b and c", err)
	}
	after := d.list()
	if len(after) != 2 {
		t.Fatalf("%d pipelines after the reload, want a and b", len(after))
	}
	if after[0] != before[0] || after[1] == before[1] {
		t.Fatalf("after the reload a kept = %v, b restarted = %v; want both", after[0] == before[0], after[1] != before[1])
	}
	if got := after[1].cfg.Batch.Linger; got != before[1].cfg.Batch.Linger {
		t.Fatalf("b runs with linger %s, want its previous %s", got, before[1].cfg.Batch.Linger)
	}
	post(t, addrA, 51, 50)
	post(t, d.HTTPSourceAddr("b"), 51, 50)
	if l := logLines(t, logs.String(), "config reload: pipeline not changed, its previous config runs again"); len(l) != 1 || l[0]["pipeline"] != "b" {
		t.Fatalf("previous-config lines = %v, want one for b", l)
	}
	if l := logLines(t, logs.String(), "config reload: pipeline not started"); len(l) != 1 || l[0]["pipeline"] != "c" {
		t.Fatalf("not-started lines = %v, want one for c", l)
	}
	cancel()
	<-done
	wantOnce(t, emu, id, "A", 100)
	wantOnce(t, emu, id, "B", 100)
}

// TestReloadAddsAndRemovesPipelines, with the embedded emulator: b is
// removed (drained, its address closed), c is added (its dataset created
// in the emulator first), a goes on; the summary line names each. A new
// table in an existing dataset is refused and changes nothing.
func TestReloadAddsAndRemovesPipelines(t *testing.T) {
	dir := t.TempDir()
	config := func(pipelines ...string) string {
		text := "emulator: {embedded: true}\nmetrics: {enabled: false}\npipelines:"
		for _, p := range pipelines {
			text += p + "    provision: {create: true}\n"
		}
		return text
	}
	a := httpPipeline(dir, "a", "A", "127.0.0.1:0", "10ms", "{}")
	var logs logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, done := startDaemon(t, ctx, loadConfig(t, config(a, httpPipeline(dir, "b", "B", "127.0.0.1:0", "10ms", "{}"))), &logs)
	addrA, addrB := d.HTTPSourceAddr("a"), d.HTTPSourceAddr("b")
	post(t, addrA, 1, 50)
	post(t, addrB, 1, 50)
	waitFor(t, "b's rows to land", func() bool { return d.list()[1].p.Stats().RowsAccepted == 50 })
	if n := seriesLabelled(t, d.reg, "pipeline", "b"); n == 0 {
		t.Fatal("no series labelled pipeline=b before its removal")
	}

	// A table the dataset has not: Power BI cannot add one to a push
	// dataset, so the reload is refused before anything stops.
	newTable := config(a, httpPipeline(dir, "c", "C", "127.0.0.1:0", "10ms", "{}"))
	if err := d.Reload(ctx, loadConfig(t, newTable)); err == nil || !strings.Contains(err.Error(), `has no table "C"`) {
		t.Fatalf("Reload adding a table to a dataset = %v, want refused", err)
	}
	if d.HTTPSourceAddr("b") != addrB {
		t.Fatal("a refused reload removed b")
	}
	if err := d.Reload(ctx, loadConfig(t, config(a, httpPipelineTo(dir, "Extra", "c", "C", "127.0.0.1:0", "10ms", "{}")))); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if d.HTTPSourceAddr("b") != "" {
		t.Fatal("b is still listed after its removal")
	}
	if conn, err := net.Dial("tcp", addrB); err == nil {
		conn.Close()
		t.Fatalf("b's address %s still accepts connections after its removal", addrB)
	}
	// A removed pipeline's series go (its gauges would report their last
	// values until exit); the others' stay.
	if n := seriesLabelled(t, d.reg, "pipeline", "b"); n != 0 {
		t.Fatalf("%d series labelled pipeline=b after its removal, want none", n)
	}
	if n := seriesLabelled(t, d.reg, "pipeline", "a"); n == 0 {
		t.Fatal("the series of a, which was kept, went with b's")
	}
	post(t, addrA, 51, 50)
	post(t, d.HTTPSourceAddr("c"), 1, 50)
	lines := logLines(t, logs.String(), "config reloaded")
	if len(lines) != 1 || lines[0]["changed"] != "[]" || lines[0]["added"] != "[c]" || lines[0]["removed"] != "[b]" || lines[0]["unchanged"] != "[a]" {
		t.Fatalf("reload summary lines = %v", lines)
	}

	cancel()
	res := <-done
	landed := map[string]int{}
	for _, l := range res.Landed {
		landed[l.Table] = l.Rows
		wantOnce(t, d.Emulator(), l.DatasetID, l.Table, int64(l.Rows))
	}
	if landed["A"] != 100 || landed["B"] != 50 || landed["C"] != 50 {
		t.Fatalf("landed %v, want A 100, B 50, C 50", landed)
	}
}

// TestReloadCutShortBySignal: a signal while the reload drains b (its
// rows held by a throttled dataset) stops pushd: b is not started again,
// no summary line claims a reload, and b's event still lands.
func TestReloadCutShortBySignal(t *testing.T) {
	emu, ca := testEmulator(t, nil)
	id := createIngest(t, emu, "A", "B")
	dir := t.TempDir()
	var logs logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, done := startDaemon(t, ctx, loadConfig(t, twoHTTPPipelines(t, emu, ca, dir, "10ms", "{}")), &logs)
	// The signal must come while the reload drains b, that is before the
	// throttle ends: 6s leaves room for a loaded machine.
	emu.SetFaults(emulator.Faults{ThrottleFor: 6 * time.Second})
	posted := make(chan struct{})
	go func() {
		defer close(posted)
		resp, err := http.Post("http://"+d.HTTPSourceAddr("b")+"/v1/events", "application/x-ndjson", strings.NewReader(`{"seq":1}`+"\n"))
		if err == nil {
			resp.Body.Close()
		}
	}()
	b := d.list()[1]
	waitFor(t, "b to read the event", func() bool { return b.p.Stats().EventsRead == 1 })
	reloaded := make(chan error, 1)
	go func() { reloaded <- d.Reload(ctx, loadConfig(t, twoHTTPPipelines(t, emu, ca, dir, "30ms", "{}"))) }()
	waitFor(t, "the reload to drain b", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.reloading
	})
	cancel()
	if err := <-reloaded; err == nil || !strings.Contains(err.Error(), "pushd is stopping") {
		t.Fatalf("Reload = %v, want cut short", err)
	}
	res := <-done
	<-posted
	var names []string
	for _, p := range res.Pipelines {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, " "); got != "a b" {
		t.Fatalf("pipelines run: %s, want a b (b not started again)", got)
	}
	if l := logLines(t, logs.String(), "config reloaded"); len(l) != 0 {
		t.Fatalf("a reload cut short logged %v", l)
	}
	if l := logLines(t, logs.String(), "config reload cut short: pushd is stopping; the drained pipelines are not started again"); len(l) != 1 {
		t.Fatalf("cut-short lines = %v, want one", l)
	}
	wantOnce(t, emu, id, "B", 1)
}

// waitFor polls cond until it holds (what names it, for the failure).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDatasetLimitsDifferUnderTwoNames: a names the dataset by name, b by
// id, with other limits (which validate cannot see): pushd refuses to start
// rather than let the second pipeline replace the dataset's limiter.
func TestDatasetLimitsDifferUnderTwoNames(t *testing.T) {
	emu, ca := testEmulator(t, nil)
	id := createIngest(t, emu, "A", "B")
	dir := t.TempDir()
	b := strings.Replace(httpPipeline(dir, "b", "B", "127.0.0.1:0", "10ms", "{requests_per_minute: 60}"),
		"dataset_name: Ingest", "dataset_id: "+id, 1)
	cfg := loadConfig(t, powerbiSection(emu, ca)+"pipelines:"+httpPipeline(dir, "a", "A", "127.0.0.1:0", "10ms", "{}")+b)
	// Were it to start, it would run until this context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Run(ctx, Options{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "pipelines[1] (b).limits: differ from those dataset "+id+" already runs with") {
		t.Fatalf("Run = %v, want b's limits refused", err)
	}
}

// TestReloadNoticesAFileChangedInPlace: a Kafka pipeline whose TLS
// certificate file was rewritten under the same path (a rotation) counts
// as changed, so a reload restarts it with the new certificate; with the
// same content it stays unchanged.
func TestReloadNoticesAFileChangedInPlace(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "client.pem")
	if err := os.WriteFile(cert, []byte("certificate 1"), 0o600); err != nil {
		t.Fatal(err)
	}
	pc := config.Pipeline{Name: "k"}
	pc.Source.Type = source.TypeKafka
	pc.Source.Kafka.TLS = source.TLSConfig{Enabled: true, CertFile: cert, KeyFile: filepath.Join(dir, "missing.key")}
	current := []*running{{cfg: pc, files: filesDigest(pc)}}
	if plan := planReload(current, []config.Pipeline{pc}); len(plan.kind["unchanged"]) != 1 {
		t.Fatalf("same files: plan %v, want k unchanged", plan.kind)
	}
	if err := os.WriteFile(cert, []byte("certificate 2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if plan := planReload(current, []config.Pipeline{pc}); len(plan.kind["changed"]) != 1 || !plan.changed["k"] {
		t.Fatalf("rotated certificate: plan %v, want k changed", plan.kind)
	}
}
