package pushapi

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
)

// quotaCase is a standing backlog against the emulator with scaled quotas:
// which quota binds, the window, the batch size, and the emulator's added
// latency.
type quotaCase struct {
	name      string
	requests  int // per window
	rows      int // per rows window (the same length here)
	window    time.Duration
	batchRows int
	latency   time.Duration
	rowsBind  bool
}

func (q quotaCase) String() string {
	return fmt.Sprintf("%s: %d requests and %d rows per %s, batches of %d rows, latency %s",
		q.name, q.requests, q.rows, q.window, q.batchRows, q.latency)
}

// quotaUse runs q for windows windows with a standing backlog (8 workers)
// and returns the share of the binding quota the emulator accepted, and its
// 429 answers.
func quotaUse(t *testing.T, q quotaCase, windows int) (used float64, throttled int64) {
	t.Helper()
	s := startEmulator(t, func(c *emulator.Config) {
		c.Limits.RequestsPerWindow = q.requests
		c.Limits.RequestWindow = q.window
		c.Limits.RowsPerWindow = q.rows
		c.Limits.RowsWindow = q.window
		c.Limits.LargeTableRows = 0 // off: the run posts far fewer rows anyway
	})
	c, _ := emuClient(t, s, emuConfig(s), nil)
	tgt := createTelemetry(t, c, RetentionNone)
	c.SetLimits(tgt.DatasetID, Limits{RequestsPerMinute: q.requests, RequestWindow: q.window,
		RowsPerHour: q.rows, RowsWindow: q.window, LargeTableRows: -1})
	s.SetFaults(emulator.Faults{Latency: q.latency})
	run := time.Duration(windows) * q.window
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				err := c.PostRows(ctx, tgt, telemetryRows(w*1_000_000+i*q.batchRows, q.batchRows))
				if err != nil && ctx.Err() == nil {
					t.Errorf("PostRows: %v", err)
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats().Datasets[tgt.DatasetID]
	if q.rowsBind {
		return float64(st.RowsAccepted) / (float64(q.rows) * float64(windows)), st.Throttled
	}
	return float64(st.PostRows) / (float64(q.requests) * float64(windows)), st.Throttled
}

var quotaCases = []quotaCase{
	{name: "requests bind", requests: 10, rows: 100_000, window: 5 * time.Second, batchRows: 200},
	{name: "rows bind", requests: 100, rows: 1_000, window: 5 * time.Second, batchRows: 200, rowsBind: true},
	{name: "200ms latency", requests: 10, rows: 100_000, window: 20 * time.Second, batchRows: 200, latency: 200 * time.Millisecond},
}

// TestEmulatorQuotaUse: a standing backlog against the emulator's scaled
// quotas draws no 429 and uses most of the binding quota (the exact figures
// are TestMeasureQuotaUse's; this bound only catches a pacing that wastes a
// large part). Real time: about 40s, shortened windows.
func TestEmulatorQuotaUse(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 40s of real time")
	}
	for _, q := range quotaCases {
		t.Run(q.name, func(t *testing.T) {
			t.Parallel()
			q.window /= 2
			windows := 4
			if q.latency > 0 {
				windows = 2
			}
			used, throttled := quotaUse(t, q, windows)
			if throttled != 0 {
				t.Errorf("%v: %d answers 429, want 0", q, throttled)
			}
			// 80%: each window loses a round trip, and on a loaded machine
			// under -race (load 25 on 2 cores was seen in CI) a round trip
			// includes waiting for a core; TestEmulatorScaledQuota saw 83%
			// there. A pacing that wastes a large part still fails.
			if used < 0.8 {
				t.Errorf("%v: used %.1f%% of the quota over %d windows, want >= 80%%", q, 100*used, windows)
			}
			t.Logf("%v: used %.2f%% over %d windows, %d answers 429", q, 100*used, windows, throttled)
		})
	}
}

// TestMeasureQuotaUse measures the share of the quota a standing backlog
// uses against the emulator, PUSHD_MEASURE_RUNS runs (5) of
// PUSHD_MEASURE_WINDOWS windows (12) per case (one case: -run
// 'TestMeasureQuotaUse/rows'):
//
//	PUSHD_MEASURE=1 go test ./internal/pushapi -run TestMeasureQuotaUse -v -timeout 60m
func TestMeasureQuotaUse(t *testing.T) {
	if os.Getenv("PUSHD_MEASURE") == "" {
		t.Skip("a measurement, not a check: set PUSHD_MEASURE=1 to run it")
	}
	runs, windows := envInt(t, "PUSHD_MEASURE_RUNS", 5), envInt(t, "PUSHD_MEASURE_WINDOWS", 12)
	for _, q := range quotaCases {
		t.Run(q.name, func(t *testing.T) {
			for i := range runs {
				used, throttled := quotaUse(t, q, windows)
				fmt.Printf("%v: run %d: used %.2f%% of the quota over %d windows, %d answers 429\n", q, i+1, 100*used, windows, throttled)
				if throttled != 0 {
					t.Errorf("%v: run %d: %d answers 429", q, i+1, throttled)
				}
			}
		})
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive count", name, v)
	}
	return n
}
