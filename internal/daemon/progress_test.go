package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/logtest"
)

// logLines returns the JSON log records with message msg.
func logLines(t *testing.T, text, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// recordedStatus keeps every status text set.
type recordedStatus struct {
	mu    sync.Mutex
	texts []string
}

func (r *recordedStatus) Set(text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.texts = append(r.texts, text)
}

func (r *recordedStatus) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.texts...)
}

// slowRun feeds the sample events to a daemon in two halves, the second
// only once cond(log) holds, so a run lasts as long as a test needs.
func slowRun(t *testing.T, interval, extra string, status StatusLine, cond func(log string) bool) (string, Result) {
	t.Helper()
	emu, ca := testEmulator(t, nil)
	createTelemetryDataset(t, emu, "Int64")
	cfg := loadConfig(t, powerbiSection(emu, ca)+"log: {progress_interval: "+interval+"}\n"+stdinPipeline(extra, filepath.Join(t.TempDir(), "dl.ndjson")))
	var logs logtest.Buffer
	pr, pw := io.Pipe()
	events := sampleEvents(t, 400)
	half := bytes.Index(events[len(events)/2:], []byte("\n")) + len(events)/2 + 1
	go func() {
		_, _ = pw.Write(events[:half])
		deadline := time.Now().Add(20 * time.Second)
		for !cond(logs.String()) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		_, _ = pw.Write(events[half:])
		_ = pw.Close()
	}()
	res, err := Run(context.Background(), Options{Config: cfg, Stdin: pr, StatusLine: status,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return logs.String(), res
}

// TestProgressAndMilestones: info lines mark the milestones a user waits
// for, and a progress line per pipeline comes every log.progress_interval
// with the counts so far.
func TestProgressAndMilestones(t *testing.T) {
	text, res := slowRun(t, "300ms", "    batch: {linger: 20ms}", nil, func(log string) bool {
		return strings.Count(log, `"msg":"progress"`) >= 2
	})
	if got := res.Pipelines[0].Summary.RowsAccepted; got != 400 {
		t.Fatalf("%d rows accepted, want 400", got)
	}
	for _, msg := range []string{"token obtained", "dataset resolved", "first batch accepted"} {
		if n := len(logLines(t, text, msg)); n != 1 {
			t.Errorf("%d %q lines, want 1:\n%s", n, msg, text)
		}
	}
	if rec := logLines(t, text, "dataset resolved"); len(rec) == 1 && (rec[0]["name"] != "IoT Telemetry" || rec[0]["table"] != "Telemetry") {
		t.Errorf("dataset resolved: %v", rec[0])
	}
	progress := logLines(t, text, "progress")
	if len(progress) < 2 {
		t.Fatalf("%d progress lines, want at least 2:\n%s", len(progress), text)
	}
	p := progress[len(progress)-1]
	for _, key := range []string{"pipeline", "events_read", "rows_accepted", "events_per_second", "events_waiting", "dead_lettered", "quota_used"} {
		if _, ok := p[key]; !ok {
			t.Errorf("progress line lacks %s: %v", key, p)
		}
	}
	if p["pipeline"] != "telemetry" || p["events_read"].(float64) < 200 || p["rows_accepted"].(float64) < 1 {
		t.Errorf("progress line = %v, want the first half read and accepted", p)
	}
}

// TestProgressOff: progress_interval 0 logs no progress line (milestones
// still come).
func TestProgressOff(t *testing.T) {
	// The run lasts past two would-be intervals of 300ms after its first batch.
	var since time.Time
	text, _ := slowRun(t, "0s", "    batch: {linger: 20ms}", nil, func(log string) bool {
		if since.IsZero() && strings.Contains(log, "first batch accepted") {
			since = time.Now()
		}
		return !since.IsZero() && time.Since(since) > 700*time.Millisecond
	})
	if n := len(logLines(t, text, "progress")); n != 0 {
		t.Errorf("%d progress lines with progress_interval 0", n)
	}
	if n := len(logLines(t, text, "first batch accepted")); n != 1 {
		t.Errorf("%d first-batch lines with progress off, want 1", n)
	}
}

// TestStatusLineInsteadOfProgress: with a status line (a terminal), the
// live status replaces the progress log lines.
func TestStatusLineInsteadOfProgress(t *testing.T) {
	status := &recordedStatus{}
	text, _ := slowRun(t, "300ms", "    batch: {linger: 20ms}", status, func(string) bool { return len(status.all()) >= 2 })
	texts := status.all()
	if len(texts) < 2 {
		t.Fatalf("%d status texts, want at least 2", len(texts))
	}
	if last := texts[len(texts)-1]; !strings.HasPrefix(last, "telemetry: ") || !strings.Contains(last, "rows accepted") || !strings.Contains(last, "waiting") {
		t.Errorf("status = %q", last)
	}
	if n := len(logLines(t, text, "progress")); n != 0 {
		t.Errorf("%d progress log lines beside the status line", n)
	}
}
