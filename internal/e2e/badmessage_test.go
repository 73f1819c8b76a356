package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKafkaBadMessagesAreDeadLetteredAndCommitted produces good events with
// a few records that are not JSON, not an object, or miss a required
// field among them: each bad one goes to the dead letter with its topic,
// partition and offset, the stream goes on around it, and every offset is
// committed (a restart fetches nothing again).
func TestKafkaBadMessagesAreDeadLetteredAndCommitted(t *testing.T) {
	t.Parallel()
	const (
		n     = 3000
		group = "e2e-bad"
	)
	c := newCluster(t)
	emu, ca, id := testEmulator(t, nil)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	good := telemetry(t, n)
	bad := [][]byte{
		[]byte(`this is not json`),
		[]byte(`42`),
		[]byte(`{"device":{"id":"dev-x"},"seq":"not-a-number","ts":"2026-11-28T00:00:00Z"}`),
		[]byte(`{"truncated":`),
	}
	var records [][]byte
	for i, ev := range good {
		records = append(records, ev)
		if i%700 == 350 && len(bad) > 0 {
			records = append(records, bad[0])
			bad = bad[1:]
		}
	}
	records = append(records, bad...) // whatever is left, at the end
	produce(t, c, records, 1)

	cfg := s.writeConfig(t, "bad", pipelineOptions{
		source: kafkaSource(c, group, 100*time.Millisecond),
		batch:  "{max_rows: 1000, linger: 50ms}",
		limits: "{requests_per_minute: 100000}",
	})
	p := startPushd(t, "bad", cfg)
	waitLanded(t, emu, id, n, 3*time.Minute)
	time.Sleep(500 * time.Millisecond) // a few commit intervals
	if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd exited %d after SIGTERM, want 0", code)
	}
	if dups, strays := duplicates(seqCounts(t, emu, id), n); dups != 0 || strays != 0 {
		t.Fatalf("%d duplicates, %d strays", dups, strays)
	}

	data, err := os.ReadFile(filepath.Join(s.dir, "bad-dead-letter.ndjson"))
	if err != nil {
		t.Fatalf("reading the dead letter: %v", err)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("dead letter line is not JSON: %s", sc.Bytes())
		}
		lines = append(lines, m)
	}
	if len(lines) != 4 {
		t.Fatalf("dead letter has %d lines, want 4:\n%s", len(lines), data)
	}
	for _, l := range lines {
		pos, _ := l["position"].(string)
		if !strings.HasPrefix(pos, "kafka:"+topic+"/") || !strings.Contains(pos, "@") {
			t.Errorf("dead letter position %q does not name topic, partition and offset", pos)
		}
		// An empty rule is left out of the line: compare the string held,
		// not the map entry with "" (a missing entry is nil, never "").
		reason, _ := l["reason"].(map[string]any)
		rule, _ := reason["rule"].(string)
		wantRule := map[string]bool{"syntax": true, "shape": true, "type": true}
		if reason["kind"] != "mapping" || !wantRule[rule] {
			t.Errorf("dead letter reason %v, want a mapping failure with rule syntax, shape or type", reason)
		}
		if rule == "type" && reason["field"] != "Seq" {
			t.Errorf("dead letter reason %v, want field Seq for the seq that is not a number", reason)
		}
		if l["event"] == nil && l["event_base64"] == nil {
			t.Errorf("dead letter line holds no event: %v", l)
		}
	}

	committed := committedOffsets(t, c, group)
	var total int64
	for _, o := range committed {
		total += o
	}
	if total != int64(len(records)) {
		t.Fatalf("committed offsets %v sum to %d, want all %d records (bad ones included)", committed, total, len(records))
	}
}
