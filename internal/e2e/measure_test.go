package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/daemon"
	"github.com/pushd/pushd/internal/emulator"
)

// Throughput targets of issue 4, for the report.
const (
	targetEventsPerCPUSecond = 250_000
	targetPeakRSSBytes       = 40_000_000
)

// TestMeasureKafkaThroughput measures Kafka → pushd binary → emulator with
// every quota off: 200,000 sample events (~330 bytes each) wait in 3
// partitions; pushd runs under /usr/bin/time -v until the emulator has
// accepted them all, then gets SIGTERM. It reports events per CPU-second of
// the pushd process (user + sys, start-up and drain included) and its peak
// RSS. Opt-in, as it measures rather than checks:
//
//	PUSHD_MEASURE=1 go test ./internal/e2e -run TestMeasureKafkaThroughput -v
//
// PUSHD_MEASURE_EVENTS=N changes the count of events (200,000).
// PUSHD_MEASURE_CPUPROFILE=FILE runs the same pipeline in-process
// (daemon.Run) under the CPU profiler instead, to see where the time goes
// (the profile then includes the in-process broker and emulator), and
// PUSHD_MEASURE_HEAPPROFILE=FILE adds a heap profile taken half way.
// PUSHD_MEASURE_MAX_UNACKED=N sets max_unacked_events (default: pushd's).
func TestMeasureKafkaThroughput(t *testing.T) {
	if os.Getenv("PUSHD_MEASURE") == "" {
		t.Skip("a measurement, not a check: set PUSHD_MEASURE=1 to run it")
	}
	var err error
	n := 200_000
	if v := os.Getenv("PUSHD_MEASURE_EVENTS"); v != "" {
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("PUSHD_MEASURE_EVENTS=%q: want a count of events", v)
		}
	}
	c := newCluster(t)
	emu, ca, id := testEmulator(t, func(c *emulator.Config) {
		c.Limits = emulator.DefaultConfig().Limits.WithoutQuotas()
		c.DiscardRows = true
	})
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	produce(t, c, telemetry(t, n), 1)
	opts := pipelineOptions{
		source:     kafkaSource(c, "e2e-measure", time.Second),
		batch:      "{max_rows: 10000, linger: 50ms}",
		limits:     "{requests_per_minute: 1000000, rows_per_hour: 1000000000, large_table_rows: -1, max_in_flight: 8}",
		maxUnacked: maxUnackedFromEnv(t),
		// The quick start's 13 columns, without the Kafka metadata ones.
		schema: telemetrySchema[:strings.Index(telemetrySchema, "        - {name: Key,")],
	}

	if path := os.Getenv("PUSHD_MEASURE_CPUPROFILE"); path != "" {
		profileInProcess(t, s.config("measure", opts), path, func() int64 {
			return emu.Stats().Datasets[id].RowsAccepted
		}, n)
		return
	}

	r := runUnderTime(t, s.writeConfig(t, "measure", opts), s.dir, n, func() int64 {
		return emu.Stats().Datasets[id].RowsAccepted
	})
	delivered, user, sys, rss := r.delivered, r.user, r.sys, r.rssBytes
	perCPU := float64(n) / (user + sys)
	st := emu.Stats().Datasets[id]
	t.Logf("%d events in %d requests, all accepted %v after start; pushd used %.2fs user + %.2fs sys: %.0f events per CPU-second (target %d); peak RSS %.1f MB (target < %d MB)",
		n, st.PostRows, delivered.Round(time.Millisecond), user, sys, perCPU, targetEventsPerCPUSecond, rss/1e6, targetPeakRSSBytes/1_000_000)
	if perCPU < targetEventsPerCPUSecond || rss >= targetPeakRSSBytes {
		t.Logf("BELOW TARGET")
	}
}

// profileInProcess runs the config with daemon.Run in this process under
// the CPU profiler until delivered (rows accepted by the target) reaches n.
// PUSHD_MEASURE_HEAPPROFILE=FILE adds a heap profile taken half way.
func profileInProcess(t *testing.T, text, path string, delivered func() int64, n int) {
	cfg, err := config.Parse([]byte(text), "measure.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	defer pprof.StopCPUProfile()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := daemon.Run(ctx, daemon.Options{Config: cfg})
		done <- err
	}()
	heapWritten := false
	for delivered() < int64(n) {
		select {
		case err := <-done:
			t.Fatalf("daemon.Run ended early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if hp := os.Getenv("PUSHD_MEASURE_HEAPPROFILE"); hp != "" && !heapWritten && delivered() >= int64(n/2) {
			hf, err := os.Create(hp)
			if err != nil {
				t.Fatal(err)
			}
			_ = pprof.Lookup("heap").WriteTo(hf, 0)
			hf.Close()
			heapWritten = true
		}
	}
	t.Logf("%d rows delivered after %v; CPU profile in %s", n, time.Since(start).Round(time.Millisecond), path)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// maxUnackedFromEnv reads PUSHD_MEASURE_MAX_UNACKED (0 when unset: pushd's
// default).
func maxUnackedFromEnv(t *testing.T) int {
	v := os.Getenv("PUSHD_MEASURE_MAX_UNACKED")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// timeReport is what /usr/bin/time -v said of a pushd run.
type timeReport struct {
	delivered time.Duration // from start until delivered reached n
	user, sys float64       // CPU seconds
	rssBytes  float64       // peak resident set size
}

// runUnderTime runs `pushd run -c cfg` under /usr/bin/time -v (its report
// in dir) until delivered() reaches n, within 5 minutes, then stops pushd
// with SIGTERM and reads the report.
func runUnderTime(t *testing.T, cfg, dir string, n int, delivered func() int64) timeReport {
	t.Helper()
	timeBin, err := exec.LookPath("/usr/bin/time")
	if err != nil {
		t.Fatal("/usr/bin/time is missing: apt-get install -y time")
	}
	report := filepath.Join(dir, "time.txt")
	var stderr bytes.Buffer
	cmd := exec.Command(timeBin, "-v", "-o", report, pushdBin, "run", "-c", cfg, "-log-level", "warn")
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	for got := delivered(); got < int64(n); got = delivered() {
		select {
		case err := <-exited:
			t.Fatalf("pushd exited early: %v\n%s", err, stderr.Bytes())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("%d of %d delivered after 5 minutes", got, n)
		}
	}
	r := timeReport{delivered: time.Since(start)}
	// time forwards no signal: SIGTERM goes to its child, pushd.
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(children)))
	if err != nil {
		t.Fatalf("pushd's pid from %q: %v", children, err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("pushd under time: %v\n%s", err, stderr.Bytes())
	}
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	field := func(name string) float64 {
		m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(name) + `: ([0-9.]+)$`).FindSubmatch(data)
		if m == nil {
			t.Fatalf("no %q in /usr/bin/time's report:\n%s", name, data)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	r.user, r.sys = field("User time (seconds)"), field("System time (seconds)")
	r.rssBytes = field("Maximum resident set size (kbytes)") * 1024
	return r
}
