package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
)

// TestKafkaShutdownTimeoutCancelsSendsAndCommitsNothingUndelivered sends
// SIGTERM while every request hangs at Power BI for longer than
// shutdown_timeout: pushd cancels its sends when the timeout passes, exits
// non-zero, and commits nothing it did not deliver, so a restart delivers
// every event.
func TestKafkaShutdownTimeoutCancelsSendsAndCommitsNothingUndelivered(t *testing.T) {
	t.Parallel()
	const (
		n        = 2000
		group    = "e2e-timeout"
		shutdown = time.Second
	)
	c := newCluster(t)
	emu, ca, id := testEmulator(t, func(c *emulator.Config) {
		noQuotas(c)
		c.Faults.Latency = time.Minute // every POST rows hangs
	})
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	produce(t, c, telemetry(t, n), 1)
	cfg := s.writeConfig(t, "timeout", pipelineOptions{
		source:          kafkaSource(c, group, 100*time.Millisecond),
		batch:           "{max_rows: 500, linger: 50ms}",
		limits:          raisedLimits,
		shutdownTimeout: shutdown,
	})
	p := startPushd(t, "hung", cfg)
	deadline := time.Now().Add(30 * time.Second)
	for inFlight(emu, id) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no request reached the emulator")
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, took := p.stop(t, syscall.SIGTERM)
	if code == 0 {
		t.Fatalf("pushd exited 0 although its sends were cancelled at the shutdown timeout")
	}
	if took < shutdown || took > shutdown+15*time.Second {
		t.Fatalf("pushd exited after %v, want shortly after shutdown_timeout %v", took, shutdown)
	}
	committed := committedOffsets(t, c, group)
	for part, off := range committed {
		if off != 0 {
			t.Errorf("partition %d committed up to %d although nothing was delivered", part, off)
		}
	}

	emu.SetFaults(emulator.Faults{})
	again := startPushd(t, "restarted", cfg)
	waitLanded(t, emu, id, n, 3*time.Minute)
	if code, _ := again.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("restarted pushd exited %d after SIGTERM, want 0", code)
	}
	counts := seqCounts(t, emu, id)
	if missing := missingSeqs(counts, n); len(missing) > 0 {
		t.Fatalf("%d events never landed, e.g. %v", len(missing), first(missing, 5))
	}
	t.Logf("SIGTERM with sends hung: exit %d after %v; restart delivered all %d", code, took.Round(time.Millisecond), n)
}
