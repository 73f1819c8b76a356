package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/pushd/pushd/internal/source"
)

// brokenTokens is a token provider that cannot get a token (an Entra ID
// outage, a revoked secret).
type brokenTokens struct{}

func (brokenTokens) Token(context.Context) (string, error) {
	return "", errors.New("AADSTS7000215: invalid client secret")
}
func (brokenTokens) Invalidate(string) {}

// unreadySource is a source that is not connected yet (a Kafka source
// before it joined its group).
type unreadySource struct{ source.Source }

func (unreadySource) Ready() error { return errors.New("not joined the consumer group yet") }

// readyzBody is /readyz's body.
type readyzBody struct {
	Ready  bool
	Checks []readinessCheck
}

func getReadyz(t *testing.T, rc *readiness) (int, readyzBody) {
	t.Helper()
	rec := httptest.NewRecorder()
	rc.serve(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var body readyzBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("/readyz body %q: %v", rec.Body.String(), err)
	}
	return rec.Code, body
}

// TestReadyzIsNotReadyForEachCause: /readyz answers 503, names the failing
// check and says why, for each thing that makes pushd not ready: no token,
// a target dataset that does not answer, a source not connected; 200 when
// all hold. The parts come from a real daemon run against the emulator,
// with one part replaced per cause.
func TestReadyzIsNotReadyForEachCause(t *testing.T) {
	emu, ca := testEmulator(t, nil)
	createTelemetryDataset(t, emu, "Int64")
	dl := filepath.Join(t.TempDir(), "dl.ndjson")
	cfg := loadConfig(t, powerbiSection(emu, ca)+stdinPipeline("", dl))
	pr, pw := io.Pipe()
	ready := make(chan *Daemon, 1)
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), Options{Config: cfg, Stdin: pr, Ready: func(d *Daemon) { ready <- d }})
		done <- err
	}()
	d := <-ready
	defer func() {
		pw.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// The daemon's own endpoint, all well.
	resp, err := http.Get("http://" + d.OpsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /readyz of a healthy daemon = %d, want 200", resp.StatusCode)
	}

	// Only what /readyz reads, set when the pipeline was built: copying the
	// whole running pipeline would read fields its goroutine writes.
	orig := d.list()[0]
	p := running{cfg: orig.cfg, target: orig.target, src: orig.src}
	missing := p
	missing.target.DatasetID = "99999999-9999-4999-8999-999999999999"
	unready := p
	unready.src = unreadySource{p.src}
	tests := []struct {
		name   string
		d      *Daemon
		failed string // the check that fails, "" when ready
	}{
		{"ready", &Daemon{tokens: d.tokens, client: d.client, pipelines: []*running{&p}}, ""},
		{"no token", &Daemon{tokens: brokenTokens{}, client: d.client, pipelines: []*running{&p}}, "token"},
		{"dataset gone", &Daemon{tokens: d.tokens, client: d.client, pipelines: []*running{&missing}}, "dataset " + missing.target.DatasetID},
		{"source not connected", &Daemon{tokens: d.tokens, client: d.client, pipelines: []*running{&unready}}, "source telemetry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := getReadyz(t, &readiness{d: tt.d})
			want := http.StatusOK
			if tt.failed != "" {
				want = http.StatusServiceUnavailable
			}
			if code != want || body.Ready != (tt.failed == "") {
				t.Errorf("/readyz = %d ready=%v, want %d: %+v", code, body.Ready, want, body.Checks)
			}
			names := map[string]bool{}
			for _, c := range body.Checks {
				names[c.Name] = true
				switch {
				case c.Name == tt.failed && (c.OK || c.Error == ""):
					t.Errorf("check %q = %+v, want failed with its error", c.Name, c)
				case c.Name != tt.failed && !c.OK:
					t.Errorf("check %q failed (%s), want only %q to", c.Name, c.Error, tt.failed)
				}
			}
			for _, n := range []string{"token", "source telemetry"} {
				if !names[n] {
					t.Errorf("no %q check in %+v", n, body.Checks)
				}
			}
			if tt.failed != "" && !names[tt.failed] {
				t.Errorf("no %q check in %+v", tt.failed, body.Checks)
			}
		})
	}
}
