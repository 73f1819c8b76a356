package deadletter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var fixed = time.Date(2026, 5, 9, 7, 31, 2, 123456000, time.FixedZone("CEST", 2*3600))

func TestLines(t *testing.T) {
	tests := []struct {
		name  string
		entry Entry
		want  string // the exact line, without its newline
	}{
		{
			name: "mapping, valid event",
			entry: Entry{Position: "stdin:42", Reason: Reason{Kind: KindMapping, Field: "temperature", Rule: "type", Message: `"hot" is not a number`},
				Event: []byte(`{"temperature":"hot"}`)},
			want: `{"time":"2026-05-09T05:31:02.123456Z","pipeline":"telemetry","position":"stdin:42","reason":{"kind":"mapping","field":"temperature","rule":"type","message":"\"hot\" is not a number"},"event":{"temperature":"hot"}}`,
		},
		{
			name: "rejected row of an array event, pretty event compacted, HTML kept",
			entry: Entry{Pipeline: "other", Position: "kafka:t/0@7", Index: 2,
				Reason: Reason{Kind: KindRejected, Status: 400, Code: "InvalidRequest", Message: "bad value"},
				Row:    json.RawMessage(`{"a":"<b>"}`), Event: []byte("[\n  {\"a\": 1},\n  {\"a\": \"<b>&\"}\n]")},
			want: `{"time":"2026-05-09T05:31:02.123456Z","pipeline":"other","position":"kafka:t/0@7","index":2,"reason":{"kind":"rejected","status":400,"code":"InvalidRequest","message":"bad value"},"row":{"a":"<b>"},"event":[{"a":1},{"a":"<b>&"}]}`,
		},
		{
			name:  "invalid JSON stored as a string",
			entry: Entry{Position: "stdin:3", Reason: Reason{Kind: KindMapping, Rule: "syntax"}, Event: []byte(`{"a":1,`)},
			want:  `{"time":"2026-05-09T05:31:02.123456Z","pipeline":"telemetry","position":"stdin:3","reason":{"kind":"mapping","rule":"syntax"},"event":"{\"a\":1,"}`,
		},
		{
			name:  "not UTF-8 stored in base64",
			entry: Entry{Position: "stdin:4", Reason: Reason{Kind: KindSource, Message: "line is not valid UTF-8"}, Event: []byte("{\"a\":\"\xff\"}")},
			want:  `{"time":"2026-05-09T05:31:02.123456Z","pipeline":"telemetry","position":"stdin:4","reason":{"kind":"source","message":"line is not valid UTF-8"},"event_base64":"eyJhIjoi/yJ9"}`,
		},
		{
			name:  "empty event",
			entry: Entry{Reason: Reason{Kind: KindSource}, Event: nil},
			want:  `{"time":"2026-05-09T05:31:02.123456Z","pipeline":"telemetry","reason":{"kind":"source"},"event":""}`,
		},
		{
			name:  "time given",
			entry: Entry{Time: time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC), Reason: Reason{Kind: KindMapping}, Event: []byte(`1`)},
			want:  `{"time":"2020-01-02T03:04:05Z","pipeline":"telemetry","reason":{"kind":"mapping"},"event":1}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			w := New(&out, Options{Pipeline: "telemetry", Now: func() time.Time { return fixed }})
			if err := w.Write(t.Context(), tt.entry); err != nil {
				t.Fatal(err)
			}
			got := out.String()
			if !strings.HasSuffix(got, "\n") || strings.Count(got, "\n") != 1 {
				t.Fatalf("not one line: %q", got)
			}
			got = strings.TrimSuffix(got, "\n")
			if got != tt.want {
				t.Errorf("line =\n%s\nwant\n%s", got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("line is not valid JSON: %s", got)
			}
			if w.Count() != 1 {
				t.Errorf("Count = %d, want 1", w.Count())
			}
		})
	}
}

func TestOpenAppendsConcurrently(t *testing.T) {
	const writers, each = 8, 200
	path := filepath.Join(t.TempDir(), "nested", "dir", "dl.ndjson")
	// An earlier run left an unfinished line.
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(`{"earlier":true}`+"\n"+`{"torn":`), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	w, err := Open(path, Options{Pipeline: "p", Metrics: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				kind := []string{KindMapping, KindRejected, KindSource}[i%3]
				e := Entry{Position: fmt.Sprintf("stdin:%d", g*each+i), Reason: Reason{Kind: kind},
					Event: []byte(fmt.Sprintf(`{"g":%d,"i":%d,"pad":%q}`, g, i, strings.Repeat("z", i)))}
				if err := w.Write(t.Context(), e); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := w.Write(t.Context(), Entry{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if w.Count() != writers*each {
		t.Errorf("Count = %d, want %d", w.Count(), writers*each)
	}

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != FileMode {
		t.Errorf("file mode %v, want %v", st.Mode().Perm(), FileMode)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != 2+writers*each {
		t.Fatalf("%d lines, want %d", len(lines), 2+writers*each)
	}
	if lines[0] != `{"earlier":true}` || lines[1] != `{"torn":` {
		t.Errorf("earlier lines changed: %q %q", lines[0], lines[1])
	}
	seen := map[string]bool{}
	for _, l := range lines[2:] {
		var v struct {
			Position string
			Event    struct{ G, I int }
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if seen[v.Position] {
			t.Errorf("%s written twice", v.Position)
		}
		seen[v.Position] = true
		if v.Position != fmt.Sprintf("stdin:%d", v.Event.G*each+v.Event.I) {
			t.Errorf("line mixes entries: %s", l)
		}
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "pushd_deadletter_rows_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			got[labels["pipeline"]+"/"+labels["reason"]] = m.GetCounter().GetValue()
		}
	}
	// 200 per writer: i%3 gives 67 mapping, 67 rejected, 66 source.
	want := map[string]float64{"p/mapping": 67 * writers, "p/rejected": 67 * writers, "p/source": 66 * writers}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pushd_deadletter_rows_total = %v, want %v", got, want)
	}
}

// failWriter fails every write after the first n bytes.
type failWriter struct {
	n   int
	buf bytes.Buffer
}

func (f *failWriter) Write(p []byte) (int, error) {
	if f.buf.Len()+len(p) > f.n {
		return 0, errors.New("no space left on device")
	}
	return f.buf.Write(p)
}

func TestWriteFailureIsSticky(t *testing.T) {
	fw := &failWriter{n: 200}
	w := New(fw, Options{Pipeline: "p"})
	e := Entry{Reason: Reason{Kind: KindMapping}, Event: []byte(`{"a":1}`)}
	if err := w.Write(t.Context(), e); err != nil {
		t.Fatalf("first Write = %v", err)
	}
	e.Event = []byte(`{"big":"` + strings.Repeat("b", 300) + `"}`)
	err := w.Write(t.Context(), e)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Write = %v, want the write error", err)
	}
	// Even a small entry that would fit is refused now.
	e.Event = []byte(`1`)
	if err2 := w.Write(t.Context(), e); err2 == nil {
		t.Error("Write after a failure succeeded")
	}
	if w.Count() != 1 {
		t.Errorf("Count = %d, want 1", w.Count())
	}
}

func TestWriteHonoursContext(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Write(ctx, Entry{Event: []byte(`{}`)}); !errors.Is(err, context.Canceled) {
		t.Errorf("Write = %v, want context.Canceled", err)
	}
	if out.Len() != 0 || w.Count() != 0 {
		t.Errorf("wrote %q after ctx ended", out.String())
	}
	// A nil *Metrics is allowed.
	if err := w.Write(t.Context(), Entry{Reason: Reason{Kind: "odd"}, Event: []byte(`{}`)}); err != nil {
		t.Error(err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(file, "dl.ndjson"), dir} {
		if w, err := Open(path, Options{}); err == nil {
			w.Close()
			t.Errorf("Open(%s) succeeded", path)
		}
	}
}

// TestOpenCreatesTheFileOnFirstWrite checks that a run with nothing to
// dead-letter leaves no file, that the first Write creates it with
// FileMode, and that Open leaves nothing else in the directory.
func TestOpenCreatesTheFileOnFirstWrite(t *testing.T) {
	entry := Entry{Position: "stdin:1", Reason: Reason{Kind: KindMapping}, Event: []byte(`{"a":1}`)}
	for _, tt := range []struct {
		name   string
		writes int
		// between runs after Open and before the writes (e.g. another
		// writer creating the file with a torn last line).
		between   func(t *testing.T, path string)
		wantFile  bool
		wantLines []string // prefixes of the file's lines
	}{
		{name: "nothing written leaves no file"},
		{name: "first write creates the file", writes: 2, wantFile: true,
			wantLines: []string{`{"time":`, `{"time":`}},
		{name: "file created by another writer meanwhile, torn line ended", writes: 1, wantFile: true,
			between: func(t *testing.T, path string) {
				if err := os.WriteFile(path, []byte(`{"torn":`), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantLines: []string{`{"torn":`, `{"time":`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state", "dead")
			path := filepath.Join(dir, "dl.ndjson")
			w, err := Open(path, Options{Pipeline: "p"})
			if err != nil {
				t.Fatal(err)
			}
			if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
				t.Fatalf("after Open the directory holds %v (err %v), want it created and empty", entries, err)
			}
			if tt.between != nil {
				tt.between(t, path)
			}
			for range tt.writes {
				if err := w.Write(t.Context(), entry); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if !tt.wantFile {
				if !errors.Is(err, os.ErrNotExist) {
					t.Errorf("file exists (err %v) with %q, want none", err, data)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			if len(lines) != len(tt.wantLines) {
				t.Fatalf("lines %q, want %d", lines, len(tt.wantLines))
			}
			for i, want := range tt.wantLines {
				if !strings.HasPrefix(lines[i], want) {
					t.Errorf("line %d = %q, want prefix %q", i, lines[i], want)
				}
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if tt.between == nil && st.Mode().Perm() != FileMode {
				t.Errorf("file mode %v, want %v", st.Mode().Perm(), FileMode)
			}
			if w.Count() != int64(tt.writes) {
				t.Errorf("Count = %d, want %d", w.Count(), tt.writes)
			}
		})
	}
}

// TestCreateFailureIsSticky checks that when the first Write cannot create
// the file, it and every later Write fail, so the pipeline stops.
func TestCreateFailureIsSticky(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dead")
	path := filepath.Join(dir, "dl.ndjson")
	w, err := Open(path, Options{Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	// The directory goes away, and a file takes its place: no file can be
	// created at path any more.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e := Entry{Reason: Reason{Kind: KindMapping}, Event: []byte(`{"a":1}`)}
	err = w.Write(t.Context(), e)
	if err == nil || !strings.Contains(err.Error(), "creating the dead letter "+path) {
		t.Fatalf("Write = %v, want the create error naming %s", err, path)
	}
	if err := os.Remove(dir); err != nil { // the way is clear again
		t.Fatal(err)
	}
	if err2 := w.Write(t.Context(), e); err2 == nil {
		t.Error("Write after a failure succeeded")
	}
	if w.Count() != 0 {
		t.Errorf("Count = %d, want 0", w.Count())
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

// TestOpenRefusesWhatItCannotWrite checks that a path pushd could not write
// fails at Open, not at the first dead letter.
func TestOpenRefusesWhatItCannotWrite(t *testing.T) {
	for _, tt := range []struct {
		name     string
		setup    func(t *testing.T, dir string) string // returns the path
		want     string
		needUser bool // refused by permissions, which root writes through
	}{
		// Refused whoever runs the test, root (as CI does) included.
		{"directory under a regular file", func(t *testing.T, dir string) string {
			file := filepath.Join(dir, "file")
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(file, "sub", "dl.ndjson")
		}, "not a directory", false},
		{"path is a directory", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "dl.ndjson")
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
			return path
		}, "is a directory", false},
		{"read-only directory", func(t *testing.T, dir string) string {
			ro := filepath.Join(dir, "ro")
			if err := os.Mkdir(ro, 0o500); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(ro, "dl.ndjson")
		}, "is not writable", true},
		{"read-only existing file", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "dl.ndjson")
			if err := os.WriteFile(path, nil, 0o400); err != nil {
				t.Fatal(err)
			}
			return path
		}, "permission denied", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needUser && os.Geteuid() == 0 {
				t.Skip("root writes through permissions")
			}
			path := tt.setup(t, t.TempDir())
			w, err := Open(path, Options{})
			if err == nil {
				w.Close()
				t.Fatalf("Open(%s) succeeded", path)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("Open = %v, want %q naming %s", err, tt.want, path)
			}
		})
	}
}
