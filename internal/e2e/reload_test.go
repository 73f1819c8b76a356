package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logLines returns the JSON log lines of p whose message is msg.
func (p *proc) logLines(t testing.TB, msg string) []map[string]any {
	t.Helper()
	f, err := os.Open(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg {
			out = append(out, line)
		}
	}
	return out
}

// hangup sends SIGHUP and waits until the log holds want lines with msg.
func (p *proc) hangup(t testing.TB, msg string, want int) []map[string]any {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if lines := p.logLines(t, msg); len(lines) >= want {
			return lines
		}
		if p.exited() {
			t.Fatalf("pushd %s exited after SIGHUP: %v", p.name, p.waitErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d %q log lines 60s after SIGHUP", want, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKafkaReloadUnderLoadLosesAndDuplicatesNothing is issue 12.5 on a
// real process: an invalid file and a powerbi change are refused and the
// pipeline goes on; then, while events are produced continuously, a
// SIGHUP applies a changed batch.linger (the pipeline drains, commits,
// leaves the group, and a new one joins): every event lands exactly once.
func TestKafkaReloadUnderLoadLosesAndDuplicatesNothing(t *testing.T) {
	t.Parallel()
	const (
		n     = 20_000
		group = "e2e-reload"
	)
	c := newCluster(t)
	emu, ca, id := testEmulator(t, nil)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	events := telemetry(t, n)
	// Commits at an interval longer than the test: what the drained
	// source commits as it closes is all that tells the new one where
	// to start.
	opts := pipelineOptions{source: kafkaSource(c, group, time.Minute), batch: "{max_rows: 500, linger: 50ms}"}
	// Progress lines twice a second (in every version of the file: log
	// cannot change on a reload).
	config := func(o pipelineOptions) string {
		return strings.Replace(s.config("reload", o), "  level: info\n", "  level: info\n  progress_interval: 500ms\n", 1)
	}
	cfg := filepath.Join(s.dir, "reload.yaml")
	good := config(opts)
	writeFile(t, cfg, good)
	produce(t, c, events[:n/4], 1)
	p := startPushd(t, "reload", cfg)
	p.waitReady(t)

	// An invalid file: the validate messages (file:line: key: message),
	// one error line each; nothing changes.
	bad := strings.Replace(good, "linger: 50ms", "linger: soon", 1)
	bad = strings.Replace(bad, "max_wait: 100ms", "max_wait: -1s", 1)
	writeFile(t, cfg, bad)
	refused := p.hangup(t, "config reload refused: invalid config", 2)
	var problems []string
	for _, l := range refused {
		problems = append(problems, l["problem"].(string))
	}
	joined := strings.Join(problems, "\n")
	for _, want := range []string{cfg + ":", "batch.linger", "max_wait"} {
		if !strings.Contains(joined, want) {
			t.Errorf("invalid-config lines lack %q:\n%s", want, joined)
		}
	}
	// Exactly what pushd validate prints for the same file.
	validate, err := exec.Command(pushdBin, "validate", "-c", cfg).CombinedOutput()
	if want := strings.TrimSpace(string(validate)); err == nil || joined != want {
		t.Errorf("reload refused with\n%s\nwant what pushd validate prints (err %v):\n%s", joined, err, want)
	}
	// A powerbi change needs a restart: refused as a whole.
	writeFile(t, cfg, strings.Replace(good, "max_backoff: 1s", "max_backoff: 2s", 1))
	restart := p.hangup(t, "config reload refused: a restart is needed to change these keys", 1)
	if restart[0]["keys"] != "powerbi" {
		t.Errorf("restart-needed line names keys %v, want powerbi", restart[0]["keys"])
	}
	if got := p.logLines(t, "config reloaded"); len(got) != 0 {
		t.Fatalf("a refused reload logged %v", got)
	}

	// Produce the rest continuously while the valid change is applied.
	var wg sync.WaitGroup
	wg.Go(func() {
		const chunk = 500
		for first := n / 4; first < n; first += chunk {
			produce(t, c, events[first:first+chunk], first+1)
			time.Sleep(20 * time.Millisecond)
		}
	})
	waitLandedAtLeast(t, emu, id, n/4+1000)
	opts.batch = "{max_rows: 500, linger: 80ms}"
	writeFile(t, cfg, config(opts))
	reloaded := p.hangup(t, "config reloaded", 1)
	if reloaded[0]["changed"] != "[telemetry]" || reloaded[0]["unchanged"] != "[]" {
		t.Errorf("reload summary = %v, want telemetry changed", reloaded[0])
	}
	wg.Wait()
	waitLanded(t, emu, id, n, 3*time.Minute)
	if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd exited %d after SIGTERM, want 0", code)
	}
	counts := seqCounts(t, emu, id)
	if dups, strays := duplicates(counts, n); dups != 0 || strays != 0 || len(counts) != n {
		t.Fatalf("%d distinct events, %d duplicates, %d strays; want %d exactly once", len(counts), dups, strays, n)
	}
	out, err := os.ReadFile(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	// The progress lines count the restarted pipeline from its restart.
	progress := p.logLines(t, "progress")
	if len(progress) == 0 {
		t.Fatal("no progress lines")
	}
	for _, l := range progress {
		if rate, _ := l["events_per_second"].(float64); rate < 0 {
			t.Errorf("progress line with a negative rate: %v", l)
		}
	}
	// The exit summary holds the pipeline before and after the reload.
	if got := strings.Count(string(out), "pipeline telemetry:"); got != 2 {
		t.Fatalf("exit summary has %d telemetry lines, want 2 (before and after the reload):\n%s", got, out)
	}
}

func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitLandedAtLeast waits until the table holds at least n rows.
func waitLandedAtLeast(t testing.TB, emu interface{ RowCount(string, string) int }, datasetID string, n int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for emu.RowCount(datasetID, table) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d rows after 90s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKafkaReloadAddsAnEventstreamTarget: a migration step applied by
// SIGHUP. A Kafka pipeline writing to Power BI gets a Fabric eventstream
// target on reload: the pipeline drains and commits, the new one (with
// both targets) rejoins the group where the old one stopped, so Power BI
// holds every event once and the eventstream exactly those read after the
// reload, once each.
func TestKafkaReloadAddsAnEventstreamTarget(t *testing.T) {
	t.Parallel()
	const n = 10_000
	c := newCluster(t)
	es := newEventstream(t)
	emu, ca, id := testEmulator(t, noQuotas)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	events := telemetry(t, n)
	// Commits only as a source closes (the interval is longer than the
	// test), so the drain's commit alone says where the new source starts.
	opts := pipelineOptions{
		source: kafkaSource(c, "e2e-reload-fanout", time.Minute),
		batch:  "{max_rows: 2000, linger: 50ms}", limits: raisedLimits, schema: plainSchema,
	}
	cfg := filepath.Join(s.dir, "fanout.yaml")
	writeFile(t, cfg, s.config("fanout", opts))
	produce(t, c, events[:n/2], 1)
	p := startPushd(t, "fanout", cfg)
	waitLanded(t, emu, id, n/2, 2*time.Minute)

	writeFile(t, cfg, s.config("fanout", opts)+eventstreamTarget(t, es, s.dir, ""))
	reloaded := p.hangup(t, "config reloaded", 1)
	if reloaded[0]["changed"] != "[telemetry]" {
		t.Fatalf("reload summary = %v, want telemetry changed", reloaded[0])
	}
	produce(t, c, events[n/2:], n/2+1)
	waitLanded(t, emu, id, n, 2*time.Minute)
	waitMessages(t, es, n/2, 2*time.Minute, p)
	if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd exited %d after SIGTERM, want 0", code)
	}
	counts := seqCounts(t, emu, id)
	if dups, strays := duplicates(counts, n); dups != 0 || strays != 0 || len(counts) != n {
		t.Fatalf("power bi: %d distinct events, %d duplicates, %d strays; want %d exactly once", len(counts), dups, strays, n)
	}
	// Every event after the reload has exactly one message, and no other
	// event has any (checkMessages fails on a row it does not expect).
	checkMessages(t, es, expectedRows(t, cfg, events[n/2:]), true)
}
