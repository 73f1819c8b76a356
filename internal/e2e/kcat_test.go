package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestKcatInteroperates has kcat (librdkafka: a Kafka client nobody here
// wrote) produce the events, keyed by seq, to the broker; the pushd binary
// delivers them all, with the record key in the Key column. kcat is
// required in CI (.ci/run installs it): without it the test fails when CI
// is set and skips otherwise.
func TestKcatInteroperates(t *testing.T) {
	t.Parallel()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat is not on PATH; CI must install it (apt-get install -y kcat, as .ci/run does)")
		}
		t.Skip("kcat is not on PATH (apt-get install -y kcat)")
	}
	const n = 5_000
	c := newCluster(t)
	emu, ca, id := testEmulator(t, noQuotas)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}

	// key:value lines; -K: splits each at its first colon.
	var input bytes.Buffer
	for i, ev := range telemetry(t, n) {
		input.WriteString(strconv.Itoa(i + 1))
		input.WriteByte(':')
		input.Write(ev)
		input.WriteByte('\n')
	}
	file := filepath.Join(s.dir, "events.txt")
	if err := os.WriteFile(file, input.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, "-P", "-b", c.ListenAddrs()[0], "-t", topic, "-K:", "-l", file)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}

	p := startPushd(t, "kcat", s.writeConfig(t, "kcat", pipelineOptions{
		source: kafkaSource(c, "e2e-kcat", 200*time.Millisecond),
		batch:  "{max_rows: 10000, linger: 50ms}",
		limits: raisedLimits,
	}))
	waitLanded(t, emu, id, n, 3*time.Minute)
	if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd exited %d after SIGTERM, want 0", code)
	}
	rows := landedRows(t, emu, id)
	partitions := map[int32]int{}
	for _, r := range rows {
		if r.Key != strconv.FormatInt(r.Seq, 10) {
			t.Fatalf("seq %d landed with Key %q, want the record key kcat sent", r.Seq, r.Key)
		}
		partitions[r.Partition]++
	}
	if len(rows) != n {
		t.Fatalf("%d rows for %d events", len(rows), n)
	}
	if len(partitions) != 3 {
		t.Fatalf("rows per partition %v: kcat's keyed records should spread over all 3", partitions)
	}
	t.Logf("%d events produced by %s landed once each, keys intact, rows per partition %v", n, kcat, partitions)
}
