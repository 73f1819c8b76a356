package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/provision/provisiontest"
)

// replayPipeline is a stdin pipeline into Replay/Events whose Seq column
// reads seqPath and whose When column is a String in pushd (the table's is
// a DateTime, so a bad date passes pushd and Power BI refuses the row).
func replayPipeline(seqPath, dl string) string {
	p := provisiontest.Pipeline("events", "Replay", "Events", false,
		"{name: Id, type: String, from: id, required: true}",
		"{name: Seq, type: Int64, from: "+seqPath+", required: true}",
		"{name: When, type: String, from: ts}")
	p = strings.Replace(p, provisiontest.SourceHTTP, "    source: {type: stdin}\n", 1)
	return p + "    batch: {linger: 20ms}\n    dead_letter: {path: " + dl + "}\n"
}

// TestReplay: a run dead-letters mapping failures (one of them an object of
// an array event) and rows Power BI refused (one of them from an array
// event); after the schema is fixed, replay sends exactly those objects
// again: the fixed ones land once, the objects that had landed are not sent
// twice, what is still refused goes to a new dead letter naming where it
// came from, and the input file is unchanged.
func TestReplay(t *testing.T) {
	env := provisiontest.Start(t)
	id := env.CreateDataset(t, "Push", "Replay", "Events", "Id", "String", "Seq", "Int64", "When", "DateTime")
	dir := t.TempDir()
	dl := filepath.Join(dir, "dl.ndjson")
	const good = `"ts":"2026-01-01T00:00:00Z"`
	events := strings.Join([]string{
		`{"id":"a","seq":1,"n":1,` + good + `}`,
		`{"id":"b","seq":"two","n":2,` + good + `}`,
		`[{"id":"c","seq":3,"n":3,` + good + `},{"id":"d","seq":"four","n":4,` + good + `}]`,
		`{"id":"e","seq":5,"n":5,"ts":"yesterday"}`,
		`[{"id":"f","seq":6,"n":6,` + good + `},{"id":"g","seq":7,"n":7,"ts":"tomorrow"}]`,
	}, "\n") + "\n"
	v1 := env.WriteConfig(t, "v1.yaml", replayPipeline("seq", dl))
	code, out, errOut := runCmd(t, events, "run", "-c", v1)
	if code != exitOK {
		t.Fatalf("run: exit %d\n%s\n%s", code, out, errOut)
	}
	before, err := os.ReadFile(dl)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(before, []byte("\n")); n != 4 {
		t.Fatalf("the run dead-lettered %d entries, want 4 (b, d, e, g):\n%s", n, before)
	}
	if got := ids(t, env, id); got != "a,c,f" {
		t.Fatalf("after the run the table holds %s, want a,c,f", got)
	}

	// The fix: Seq reads n. The dates stay wrong.
	v2 := env.WriteConfig(t, "v2.yaml", replayPipeline("n", filepath.Join(dir, "unused.ndjson")))
	again := filepath.Join(dir, "again.ndjson")
	code, out, errOut = runCmd(t, "", "replay", "-c", v2, "--dead-letter", again, dl)
	if code != exitFailed {
		t.Fatalf("replay: exit %d, want %d (two are still refused)\n%s\n%s", code, exitFailed, out, errOut)
	}
	mustContain(t, "replay's summary", out, "replay: 4 entries of "+dl+": 2 landed, 2 still refused (in "+again)
	if got := ids(t, env, id); got != "a,b,c,d,f" {
		t.Errorf("after the replay the table holds %s, want a,b,c,d,f (each once)", got)
	}
	after, err := os.ReadFile(dl)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the input dead letter changed (err %v)", err)
	}
	refused, err := os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(refused)), "\n")
	// Two batches may be sent at once: the entries come in either order.
	sort.Slice(lines, func(i, j int) bool {
		return strings.Contains(lines[i], `"id":"e"`) && !strings.Contains(lines[j], `"id":"e"`)
	})
	if len(lines) != 2 {
		t.Fatalf("new dead letter has %d entries, want 2 (e, g):\n%s", len(lines), refused)
	}
	for i, want := range []struct{ id, was string }{{"e", "(was stdin:4)"}, {"g", "(was stdin:5)"}} {
		var e struct {
			Position string `json:"position"`
			Reason   struct {
				Kind string `json:"kind"`
			} `json:"reason"`
			Event json.RawMessage `json:"event"`
		}
		if err := json.Unmarshal([]byte(lines[i]), &e); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(e.Position, "replay:dl.ndjson:") || !strings.HasSuffix(e.Position, want.was) || e.Reason.Kind != "rejected" || !strings.Contains(string(e.Event), `"id":"`+want.id+`"`) {
			t.Errorf("entry %d = %s, want the refused row of %s %s", i, lines[i], want.id, want.was)
		}
		if want.id == "g" && strings.Contains(string(e.Event), `"id":"f"`) {
			t.Errorf("g was replayed with its whole array event (f would land twice): %s", lines[i])
		}
	}

	// A line that is not an entry is not dropped: it goes to the new dead
	// letter with the reason.
	broken := filepath.Join(dir, "broken.ndjson")
	if err := os.WriteFile(broken, []byte("this is not an entry\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	brokenOut := filepath.Join(dir, "broken-again.ndjson")
	code, out, _ = runCmd(t, "", "replay", "-c", v2, "--dead-letter", brokenOut, broken)
	if code != exitFailed || !strings.Contains(out, "1 entries of "+broken+": 0 landed, 1 still refused") {
		t.Errorf("replay of a broken line: exit %d, %s", code, out)
	}
	if data, err := os.ReadFile(brokenOut); err != nil || !bytes.Contains(data, []byte("is not a dead-letter entry")) {
		t.Errorf("the broken line's new entry: %s (%v)", data, err)
	}

	// Replay never writes to its input.
	if code, _, errOut := runCmd(t, "", "replay", "-c", v2, "--dead-letter", dl, dl); code != exitUsage || !strings.Contains(errOut, "is the input file") {
		t.Errorf("replay into its own input: exit %d, %s", code, errOut)
	}
}

// ids lists the Id column of the table's rows, sorted.
func ids(t *testing.T, env *provisiontest.Env, dataset string) string {
	t.Helper()
	var out []string
	for _, raw := range env.Emulator.Rows(dataset, "Events") {
		var row struct{ Id string }
		if err := json.Unmarshal(raw, &row); err != nil {
			t.Fatal(err)
		}
		out = append(out, row.Id)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
