package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/webui"
	"github.com/pushd/pushd/internal/webui/webuitest"
)

// pagesConfig is the quick start's pipeline with an HTTP source, against
// the embedded emulator.
func pagesConfig(dl string) string {
	return fmt.Sprintf(`
emulator:
  embedded: true
metrics:
  listen: 127.0.0.1:0
powerbi:
  retry:
    initial_backoff: 10ms
    max_backoff: 200ms
pipelines:
  - name: telemetry
    source:
      type: http
      http:
        listen: 127.0.0.1:0
    target:
      workspace_id: %s
      dataset_name: IoT Telemetry
      table: Telemetry
    provision:
      create: true
%s
    batch: {linger: 20ms}
    dead_letter:
      path: %s
`, testWorkspace, telemetrySchema, dl)
}

// startPagesDaemon runs pushd in-process with the embedded emulator and an
// HTTP source, with probe metrics registered once it is built.
func startPagesDaemon(t *testing.T, probes func(reg *prometheus.Registry)) *Daemon {
	t.Helper()
	cfg := loadConfig(t, pagesConfig(filepath.Join(t.TempDir(), "dl.ndjson")))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *Daemon, 1)
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Options{Config: cfg, Registry: reg, Logger: slog.New(slog.DiscardHandler),
			Ready: func(d *Daemon) { probes(reg); ready <- d }})
		done <- err
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case d := <-ready:
		return d
	case err := <-done:
		t.Fatalf("daemon ended before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("daemon not ready after 60s")
	}
	return nil
}

// postEvents sends NDJSON to the HTTP source and returns its answer once
// every event landed or was dead-lettered.
func postEvents(t *testing.T, d *Daemon, body []byte) map[string]int {
	t.Helper()
	resp, err := http.Post("http://"+d.HTTPSourceAddr("telemetry")+"/v1/events", "application/x-ndjson", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST events: %s %s", resp.Status, b)
	}
	var out map[string]int
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("POST events answer %s: %v", b, err)
	}
	return out
}

// screenshotDir is $PUSHD_SCREENSHOTS (made if missing), else a temporary
// directory.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("PUSHD_SCREENSHOTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// registerProbe registers c unless the name is taken already (another part
// of pushd now provides that metric); it reports whether the test's own
// collector is in force.
func registerProbe(reg *prometheus.Registry, c prometheus.Collector) bool {
	return reg.Register(c) == nil
}

// gathers reports whether reg has series of the named metric.
func gathers(t *testing.T, reg prometheus.Gatherer, name string) bool {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return true
		}
	}
	return false
}

// TestPagesInChromium runs pushd with the embedded emulator and an HTTP
// source, opens the emulator's page and pushd's status page in headless
// Chromium, and checks what they render as the stream moves: row counts,
// quota gauges, a 429 injected through the page's fault form, a dead
// letter, the Content-Security-Policy; it saves screenshots of both pages.
func TestPagesInChromium(t *testing.T) {
	chromium := webuitest.Require(t)
	var ownShare, ownReduce bool
	var shareProbe *prometheus.GaugeVec
	d := startPagesDaemon(t, func(reg *prometheus.Registry) {
		share := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pushd_powerbi_quota_share_ratio", Help: "test probe"}, []string{"dataset"})
		reduce := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pushd_reduce_active", Help: "test probe"}, []string{"pipeline", "mode"})
		probe := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pushd_pages_test_probe", Help: "a metric the page has never heard of"}, []string{"pipeline"})
		if ownShare = registerProbe(reg, share); ownShare {
			share.WithLabelValues("placeholder").Set(0.5) // relabelled below once the dataset id is known
		}
		if ownReduce = registerProbe(reg, reduce); ownReduce {
			reduce.WithLabelValues("telemetry", "window").Set(1)
		}
		registerProbe(reg, probe)
		probe.WithLabelValues("telemetry").Set(42)
		shareProbe = share
	})
	emu := d.Emulator()
	id := datasetID(t, emu)
	if ownShare {
		shareProbe.Reset()
		shareProbe.WithLabelValues(id).Set(0.5)
	}
	emuURL, opsURL := emu.URL(), "http://"+d.OpsAddr()

	t.Run("content security policy on every answer", func(t *testing.T) {
		for _, u := range []string{emuURL + "/", emuURL + "/emulator/ui/emulator.js", emuURL + "/emulator/ui/common.css", emuURL + "/emulator/v1/live",
			opsURL + "/", opsURL + "/ui/status.js", opsURL + "/ui/chart.js", opsURL + "/status.json"} {
			resp, err := emu.Client().Get(u)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") != webui.ContentSecurityPolicy {
				t.Errorf("GET %s: %s, Content-Security-Policy %q", u, resp.Status, resp.Header.Get("Content-Security-Policy"))
			}
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := webuitest.Start(t, chromium, "--ignore-certificate-errors") // the embedded emulator's certificate is self-signed
	emuPage, err := b.Open(ctx, emuURL+"/", 1280, 800)
	if err != nil {
		t.Fatal(err)
	}
	statusPage, err := b.Open(ctx, opsURL+"/", 1280, 800)
	if err != nil {
		t.Fatal(err)
	}

	// Rows land: the page shows the emulator's count.
	if got := postEvents(t, d, sampleEvents(t, 300)); got["accepted"] != 300 {
		t.Fatalf("first post: %v", got)
	}
	wait(t, ctx, emuPage, "the table's row count", fmt.Sprintf(
		`document.querySelector('[data-dataset=%q][data-table="Telemetry"]')?.textContent === %q`, id, fmtInt(emu.RowCount(id, "Telemetry"))))
	wait(t, ctx, emuPage, "the newest rows", `document.querySelectorAll('[data-rows-of="Telemetry"] tbody tr').length === 20`)
	var before float64
	mustEval(t, ctx, emuPage, `Number(document.querySelector('[data-gauge="requests"]').dataset.value)`, &before)
	if before < 1 {
		t.Fatalf("requests gauge shows %v after a post", before)
	}

	// More rows: the quota gauge moves and the count follows.
	postEvents(t, d, sampleEvents(t, 200))
	wait(t, ctx, emuPage, "the requests gauge to move", fmt.Sprintf(`Number(document.querySelector('[data-gauge="requests"]').dataset.value) > %v`, before))
	wait(t, ctx, emuPage, "the rows gauge", `Number(document.querySelector('[data-gauge="rows"]').dataset.value) === 500`)
	wait(t, ctx, emuPage, "the new row count", fmt.Sprintf(
		`document.querySelector('[data-dataset=%q][data-table="Telemetry"]')?.textContent === %q`, id, fmtInt(emu.RowCount(id, "Telemetry"))))

	// A 429 injected through the page's fault form reaches the timeline.
	mustEval(t, ctx, emuPage, `(() => { const f = document.getElementById("faults");
		f.throttle_for.value = "5s"; f.throttle_retry_after.value = "1s";
		f.querySelector("button[type=submit]").click(); return true; })()`, nil)
	wait(t, ctx, emuPage, "the form's answer", `document.getElementById("faults-result").textContent.startsWith("Applied")`)
	if f := emu.Faults(); f.ThrottleUntil.IsZero() || f.ThrottleRetryAfter != time.Second {
		t.Fatalf("faults after the form: %+v", f)
	}
	postEvents(t, d, sampleEvents(t, 10))
	wait(t, ctx, emuPage, "a 429 on the timeline", `document.querySelector('#events li[data-kind="throttled"]')?.textContent.includes("throttle fault")`)
	wait(t, ctx, emuPage, "the 429 in the strip", `document.querySelector('#event-chart rect.mark-throttled') !== null`)

	// A dead letter appears on pushd's page, with the pipeline's figures.
	if got := postEvents(t, d, []byte(`{"device":{"site":"no id"},"ts":1764547200000,"seq":1}`+"\n")); got["dead_lettered"] != 1 {
		t.Fatalf("bad event: %v", got)
	}
	wait(t, ctx, statusPage, "the dead letter", `document.querySelector('[data-dead-letters="telemetry"] li')?.textContent.includes("DeviceId")`)
	wait(t, ctx, statusPage, "rows accepted", fmt.Sprintf(`document.querySelector('[data-pipeline="telemetry"] [data-stat="rows_accepted"]')?.textContent === %q`,
		fmtInt(emu.RowCount(id, "Telemetry"))))
	wait(t, ctx, statusPage, "a rows-out rate", `Number(document.querySelector('[data-pipeline="telemetry"] figcaption').dataset.peak) > 0`)
	wait(t, ctx, statusPage, "the 429s received", `Number(document.querySelector('[data-stat="throttled"]').textContent) >= 1`)
	wait(t, ctx, statusPage, "a metric the page does not know", `document.querySelector('[data-pipeline="telemetry"] .all').textContent.includes("pushd_pages_test_probe")`)
	if ownShare {
		wait(t, ctx, statusPage, "the quota share", `document.querySelector('[data-stat="share"]').textContent === "50%"`)
	} else { // pushapi's own: one process alone takes the whole quota
		wait(t, ctx, statusPage, "the quota share", `document.querySelector('[data-stat="share"]').textContent === "100% (alone)"`)
	}
	if gathers(t, d.reg, "pushd_powerbi_quota_used_ratio") {
		wait(t, ctx, statusPage, "the quota use gauge", `Number(document.querySelector('[data-pipeline="telemetry"] [data-gauge="used-requests"]')?.dataset.value) > 0`)
	}
	if ownReduce {
		wait(t, ctx, statusPage, "the reduction", `document.querySelector('[data-stat="reduction"]').textContent === "window"`)
	}

	// The policy is in force: another origin and inline script are refused.
	for _, p := range []*webuitest.Page{emuPage, statusPage} {
		var violated string
		mustEval(t, ctx, p, `new Promise((done) => {
			document.addEventListener("securitypolicyviolation", (e) => done(e.effectiveDirective), { once: true });
			setTimeout(() => done("no violation within 5s"), 5000);
			fetch("http://127.0.0.1:1/elsewhere").catch(() => {});
		})`, &violated)
		if violated != "connect-src" {
			t.Errorf("fetching another origin violated %q, want connect-src", violated)
		}
		mustEval(t, ctx, p, `new Promise((done) => {
			document.addEventListener("securitypolicyviolation", (e) => done(e.effectiveDirective), { once: true });
			setTimeout(() => done(window.inlineRan ? "none: the inline script ran" : "no violation within 5s"), 5000);
			const s = document.createElement("script"); s.textContent = "window.inlineRan = true"; document.body.append(s);
		})`, &violated)
		if violated != "script-src-elem" {
			t.Errorf("inline script violated %q, want script-src-elem", violated)
		}
	}

	// Screenshots: the pages open since the start (1280×800, with the
	// history of the run) and fresh ones at a phone's width.
	dir := screenshotDir(t)
	for _, shot := range []struct {
		name  string
		page  *webuitest.Page
		url   string
		ready string
	}{
		{"emulator-page", emuPage, "", ""},
		{"status-page", statusPage, "", ""},
		{"emulator-page-phone", nil, emuURL + "/", `document.querySelector('#events li[data-kind]') !== null`},
		{"status-page-phone", nil, opsURL + "/", `document.querySelector('[data-dead-letters] li') !== null`},
	} {
		p, width := shot.page, 1280
		if p == nil {
			width = 390
			if p, err = b.Open(ctx, shot.url, width, 844); err != nil {
				t.Fatal(err)
			}
			wait(t, ctx, p, shot.name+" rendered", shot.ready)
		}
		var overflow bool
		mustEval(t, ctx, p, `document.documentElement.scrollWidth > window.innerWidth`, &overflow)
		if overflow {
			t.Errorf("%s: the page is wider than the %dpx window", shot.name, width)
		}
		path := filepath.Join(dir, shot.name+".png")
		if err := p.Screenshot(ctx, path, false); err != nil {
			t.Fatalf("screenshot %s: %v", shot.name, err)
		}
		t.Logf("screenshot: %s", path)
	}

	for name, p := range map[string]*webuitest.Page{"emulator page": emuPage, "status page": statusPage} {
		for _, problem := range p.Problems() {
			if strings.Contains(problem, "127.0.0.1:1/elsewhere") || strings.Contains(problem, "inlineRan") || strings.Contains(problem, "Content Security Policy") && strings.Contains(problem, "inline") {
				continue // the violations provoked above
			}
			t.Errorf("%s reported: %s", name, problem)
		}
	}
}

func wait(t *testing.T, ctx context.Context, p *webuitest.Page, what, expr string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitFor(wctx, what, expr); err != nil {
		t.Fatal(err)
	}
}

func mustEval(t *testing.T, ctx context.Context, p *webuitest.Page, expr string, out any) {
	t.Helper()
	if err := p.Eval(ctx, expr, out); err != nil {
		t.Fatal(err)
	}
}

// fmtInt formats n as the pages do (en-US grouping).
func fmtInt(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// datasetID returns the id of the one dataset in emu.
func datasetID(t *testing.T, emu *emulator.Server) string {
	t.Helper()
	for id := range emu.Stats().Datasets {
		return id
	}
	t.Fatal("the emulator holds no dataset")
	return ""
}
