package doctor_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pushd/pushd/internal/deadletter"
	"github.com/pushd/pushd/internal/doctor"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/provision/provisiontest"
)

// columns of the test table, as config lines and as emulator columns.
var (
	configColumns = []string{
		"{name: DeviceId, type: String, from: device.id}",
		"{name: Seq, type: Int64}",
		"{name: Battery, type: Double}",
	}
	tableColumns = []string{"DeviceId", "String", "Seq", "Int64", "Battery", "Double"}
)

// kafkaSource is a Kafka source section for brokers and topic.
func kafkaSource(broker, topic string) string {
	return fmt.Sprintf(`    source:
      type: kafka
      kafka:
        brokers: [%q]
        topics: [%q]
        group_id: pushd-doctor-test
`, broker, topic)
}

// withSource replaces the HTTP source of a provisiontest pipeline.
func withSource(pipeline, src string) string {
	return strings.Replace(pipeline, provisiontest.SourceHTTP, src, 1)
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func newCluster(t *testing.T, topic string) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

type want struct {
	step   string // prefix of the step
	status doctor.Status
	detail []string
	fix    []string
}

func TestDoctor(t *testing.T) {
	env := provisiontest.Start(t)
	env.CreateDataset(t, "Push", "Good", "Readings", tableColumns...)
	env.CreateDataset(t, "Push", "Short", "Readings", "DeviceId", "String", "Seq", "Int64")
	env.CreateDataset(t, "Streaming", "Stream", "Readings", tableColumns...)
	broker := newCluster(t, "events")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	good := provisiontest.Pipeline("telemetry", "Good", "Readings", false, configColumns...)
	for _, tc := range []struct {
		name     string
		secret   string
		pipeline string
		ok       bool
		want     []want
	}{
		{name: "all good with Kafka", pipeline: withSource(good, kafkaSource(broker, "events")), ok: true, want: []want{
			{"config", doctor.Pass, nil, nil},
			{"token", doctor.Pass, []string{"client_secret: token obtained"}, nil},
			{"workspace", doctor.Pass, []string{"3 dataset(s) visible"}, nil},
			{"dataset (telemetry)", doctor.Pass, []string{`"Good"`, "accepts rows"}, nil},
			{"table (telemetry)", doctor.Pass, []string{"3 column(s)"}, nil},
			{"source (telemetry)", doctor.Pass, []string{"connected to " + broker, "events (2 partitions)"}, nil},
		}},
		{name: "all good with HTTP", pipeline: good, ok: true, want: []want{
			{"source (telemetry)", doctor.Pass, []string{"127.0.0.1:0 is free"}, nil},
		}},
		{name: "wrong secret", secret: "the-secret-id-not-its-value", pipeline: good, want: []want{
			{"token", doctor.Fail, []string{"AADSTS7000215", "invalid client secret"}, []string{"create a new client secret", "copy its Value, not its Secret ID"}},
			{"workspace", doctor.Skip, []string{"needs a token"}, nil},
			{"dataset (telemetry)", doctor.Skip, nil, nil},
			{"source (telemetry)", doctor.Pass, nil, nil},
		}},
		{name: "missing dataset", pipeline: provisiontest.Pipeline("telemetry", "Absent", "Readings", false, configColumns...), want: []want{
			{"workspace", doctor.Pass, nil, nil},
			{"dataset (telemetry)", doctor.Fail, []string{`dataset "Absent" not found`, `"Good"`}, []string{"pushd provision -c"}},
			{"table (telemetry)", doctor.Skip, []string{"needs the dataset"}, nil},
		}},
		{name: "missing column", pipeline: provisiontest.Pipeline("telemetry", "Short", "Readings", false, configColumns...), want: []want{
			{"dataset (telemetry)", doctor.Pass, nil, nil},
			{"table (telemetry)", doctor.Fail, []string{"columns missing in Power BI: Battery (Double)"}, []string{"pushd provision -c", "add the missing columns"}},
		}},
		{name: "column with another type", pipeline: provisiontest.Pipeline("telemetry", "Good", "Readings", false,
			"{name: DeviceId, type: String}", "{name: Seq, type: String}"), want: []want{
			{"table (telemetry)", doctor.Fail, []string{"column Seq is Int64 in Power BI but String in the config"}, []string{"cannot change a column's type"}},
		}},
		{name: "missing table", pipeline: provisiontest.Pipeline("telemetry", "Good", "Other", false, configColumns...), want: []want{
			{"table (telemetry)", doctor.Fail, []string{`no table "Other"`, `"Readings"`}, []string{"cannot add a table"}},
		}},
		{name: "not a push dataset", pipeline: provisiontest.Pipeline("telemetry", "Stream", "Readings", false, configColumns...), want: []want{
			{"dataset (telemetry)", doctor.Fail, []string{"addRowsAPIEnabled is false"}, []string{"push datasets"}},
		}},
		{name: "unreachable broker", pipeline: withSource(good, kafkaSource(closedPort(t), "events")), want: []want{
			{"table (telemetry)", doctor.Pass, nil, nil},
			{"source (telemetry)", doctor.Fail, []string{"cannot connect to any broker", "connection refused"}, []string{"pipelines[0].source.kafka.brokers"}},
		}},
		{name: "missing topic", pipeline: withSource(good, kafkaSource(broker, "no-such-topic")), want: []want{
			{"source (telemetry)", doctor.Fail, []string{"topic(s) no-such-topic not found", "topics events"}, []string{"create the topic", "--topic no-such-topic"}},
		}},
		{name: "http address in use", pipeline: strings.Replace(good, "127.0.0.1:0", busy.Addr().String(), 1), want: []want{
			{"source (telemetry)", doctor.Fail, []string{"cannot listen on " + busy.Addr().String()}, []string{"another process listens"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := tc.secret
			if secret == "" {
				secret = emulator.DefaultClientSecret
			}
			path := env.WriteConfigWithSecret(t, "doctor.yaml", secret, tc.pipeline)
			rep := doctor.Run(context.Background(), doctor.Options{Path: path, StepTimeout: 5 * time.Second})
			if rep.OK() != tc.ok {
				t.Errorf("OK() = %v, want %v\n%s", rep.OK(), tc.ok, dump(rep))
			}
			for _, w := range tc.want {
				checkStep(t, rep, w)
			}
		})
	}
	if n := env.Emulator.Stats().Requests[emulator.RoutePostRows]; len(n) != 0 {
		t.Errorf("doctor posted rows: %v", n)
	}
}

func checkStep(t *testing.T, rep doctor.Report, w want) {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Step != w.step {
			continue
		}
		if c.Status != w.status {
			t.Errorf("step %s: status %s, want %s\n%s", w.step, c.Status, w.status, dump(rep))
			return
		}
		for _, s := range w.detail {
			if !strings.Contains(c.Detail, s) {
				t.Errorf("step %s: detail %q lacks %q", w.step, c.Detail, s)
			}
		}
		for _, s := range w.fix {
			if !strings.Contains(c.Fix, s) {
				t.Errorf("step %s: fix %q lacks %q", w.step, c.Fix, s)
			}
		}
		if c.Status == doctor.Fail && c.Fix == "" {
			t.Errorf("step %s failed without a fix", w.step)
		}
		return
	}
	t.Errorf("no step %s\n%s", w.step, dump(rep))
}

func dump(rep doctor.Report) string {
	var b strings.Builder
	for _, c := range rep.Checks {
		fmt.Fprintf(&b, "%s %s: %s | fix: %s\n", c.Status, c.Step, c.Detail, c.Fix)
	}
	return b.String()
}

// TestDoctorIdentityAndAccess covers token and workspace failures that need
// their own powerbi section.
func TestDoctorIdentityAndAccess(t *testing.T) {
	env := provisiontest.Start(t)
	base := env.PowerBI(emulator.DefaultClientSecret)
	pipelines := "pipelines:\n" + provisiontest.Pipeline("telemetry", "Good", "Readings", false, configColumns...)
	for _, tc := range []struct {
		name string
		edit func(string) string
		want want
	}{
		{"unknown tenant", func(s string) string {
			return strings.Replace(s, "tenant_id: "+emulator.DefaultTenant, "tenant_id: 99999999-1111-4111-8111-111111111111", 1)
		}, want{"token", doctor.Fail, []string{"AADSTS90002", "tenant not found"}, []string{"Directory (tenant) ID"}}},
		{"unknown client", func(s string) string {
			return strings.Replace(s, "client_id: "+emulator.DefaultClientID, "client_id: 99999999-2222-4222-8222-222222222222", 1)
		}, want{"token", doctor.Fail, []string{"AADSTS700016"}, []string{"Application (client) ID"}}},
		{"token refused by Power BI", func(s string) string {
			i := strings.Index(s, "  auth:")
			j := strings.Index(s, "  retry:")
			return s[:i] + "  auth:\n    method: static_token\n    token: not-a-token\n" + s[j:]
		}, want{"workspace", doctor.Fail, []string{"401"}, []string{"refused the static token", "get a new one", "powerbi.auth.token"}}},
		{"authority unreachable", func(s string) string {
			return strings.Replace(s, "authority_url: "+env.Emulator.URL(), "authority_url: https://"+closedPort(t), 1)
		}, want{"token", doctor.Fail, nil, []string{"cannot reach the authority"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "doctor.yaml")
			if err := os.WriteFile(path, []byte(tc.edit(base)+pipelines), 0o600); err != nil {
				t.Fatal(err)
			}
			rep := doctor.Run(context.Background(), doctor.Options{Path: path, StepTimeout: 5 * time.Second})
			if rep.OK() {
				t.Errorf("OK() = true\n%s", dump(rep))
			}
			checkStep(t, rep, tc.want)
		})
	}
}

func TestDoctorConfigAndEmbedded(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("pipelines: []\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep := doctor.Run(context.Background(), doctor.Options{Path: bad})
	if rep.OK() || len(rep.Checks) != 1 {
		t.Fatalf("bad config: %s", dump(rep))
	}
	checkStep(t, rep, want{"config", doctor.Fail, []string{"bogus"}, []string{"pushd validate -c " + bad}})

	embedded := filepath.Join(dir, "embedded.yaml")
	text := `emulator:
  embedded: true
metrics:
  listen: 127.0.0.1:0
pipelines:
  - name: telemetry
    source: {type: stdin}
    target: {workspace_id: ` + provisiontest.Workspace + `, dataset_name: X, table: T}
    provision: {create: true}
    schema:
      columns: [{name: A, type: String}]
`
	if err := os.WriteFile(embedded, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var streamed []string
	rep = doctor.Run(context.Background(), doctor.Options{Path: embedded, Report: func(c doctor.Check) { streamed = append(streamed, c.Step) }})
	if !rep.OK() {
		t.Fatalf("embedded config: %s", dump(rep))
	}
	checkStep(t, rep, want{"power bi", doctor.Skip, []string{"emulator.embedded is true"}, nil})
	checkStep(t, rep, want{"source (telemetry)", doctor.Pass, []string{"stdin"}, nil})
	checkStep(t, rep, want{"metrics", doctor.Pass, nil, nil})
	if len(streamed) != len(rep.Checks) {
		t.Errorf("Report saw %v, report has %d checks", streamed, len(rep.Checks))
	}
}

// notPushd listens on a loopback port and drops every connection: a
// process that holds the port and is not pushd.
func notPushd(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestDoctorAddressInUse runs doctor beside a running pushd: an address in
// use passes when pushd itself holds it (its ops server answers /healthz),
// and fails with the fix when another process does.
func TestDoctorAddressInUse(t *testing.T) {
	// A stand-in for a running pushd's ops server (internal/daemon's):
	// /healthz answers "ok".
	ops := http.NewServeMux()
	ops.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	pushd := httptest.NewServer(ops)
	defer pushd.Close()
	pushdAddr := pushd.Listener.Addr().String()
	// Another web server: it answers, but not as pushd.
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	otherAddr := other.Listener.Addr().String()
	// A port held by a process that speaks no HTTP; it stands for pushd's
	// HTTP source too, when the metrics address shows pushd runs.
	held := notPushd(t)
	free := closedPort(t)

	const stdin = "{type: stdin}"
	httpSource := func(addr string) string { return fmt.Sprintf("{type: http, http: {listen: %q}}", addr) }
	for _, tc := range []struct {
		name           string
		metricsEnabled bool
		metrics        string
		source         string
		ok             bool
		want           want
	}{
		{"metrics address held by pushd", true, pushdAddr, stdin, true,
			want{"metrics", doctor.Pass, []string{pushdAddr + " is in use", "pushd is already serving here"}, nil}},
		{"metrics address held by a process that is not HTTP", true, held, stdin, false,
			want{"metrics", doctor.Fail, []string{"cannot listen on " + held, "does not answer GET /healthz"},
				[]string{"another process listens on " + held + "; stop it or change metrics.listen"}}},
		{"metrics address held by another web server", true, otherAddr, stdin, false,
			want{"metrics", doctor.Fail, []string{"does not answer GET /healthz"},
				[]string{"another process listens on " + otherAddr + "; stop it or change metrics.listen"}}},
		{"http source held while this config's pushd serves metrics", true, pushdAddr, httpSource(held), true,
			want{"source (telemetry)", doctor.Pass, []string{held + " is in use", "metrics.listen (" + pushdAddr + ")", "pushd is already serving here"}, nil}},
		{"http source held and no pushd on the metrics address", true, free, httpSource(held), false,
			want{"source (telemetry)", doctor.Fail, []string{"cannot listen on " + held, "nothing answers GET /healthz on metrics.listen"},
				[]string{"another process listens on " + held + "; stop it or change pipelines[0].source.http.listen"}}},
		{"http source held and another web server on the metrics address", true, otherAddr, httpSource(held), false,
			want{"source (telemetry)", doctor.Fail, []string{"not this config's pushd"},
				[]string{"another process listens on " + held}}},
		{"http source on an address this host does not have", true, free, "{type: http, http: {listen: \"192.0.2.1:8080\", bearer_token: t0ken}}", false,
			want{"source (telemetry)", doctor.Fail, []string{"cannot listen on 192.0.2.1:8080"},
				[]string{"set pipelines[0].source.http.listen to an address of this host"}}},
		{"http source held with metrics disabled", false, free, httpSource(held), false,
			want{"source (telemetry)", doctor.Fail, []string{"metrics.enabled is false"},
				[]string{"another process listens on " + held + "; stop it or change pipelines[0].source.http.listen"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := fmt.Sprintf(`emulator:
  embedded: true
metrics:
  enabled: %t
  listen: %q
pipelines:
  - name: telemetry
    source: %s
    target: {workspace_id: %s, dataset_name: X, table: T}
    provision: {create: true}
    schema:
      columns: [{name: A, type: String}]
`, tc.metricsEnabled, tc.metrics, tc.source, provisiontest.Workspace)
			path := filepath.Join(t.TempDir(), "doctor.yaml")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			rep := doctor.Run(context.Background(), doctor.Options{Path: path, StepTimeout: 5 * time.Second})
			if rep.OK() != tc.ok {
				t.Errorf("OK() = %v, want %v\n%s", rep.OK(), tc.ok, dump(rep))
			}
			checkStep(t, rep, tc.want)
		})
	}
}

// TestDoctorWorkspaceNotGiven: against an emulator whose service principal
// is a member of one workspace only, doctor passes on that workspace and
// fails the workspace step on another, with the fix to add the principal.
func TestDoctorWorkspaceNotGiven(t *testing.T) {
	const other = "9a9a9a9a-1b1b-4c2c-8d3d-4e4e4e4e4e4e"
	env := provisiontest.StartWith(t, func(c *emulator.Config) { c.Workspaces = []string{provisiontest.Workspace} })
	env.CreateDataset(t, "Push", "Good", "Readings", tableColumns...)
	good := provisiontest.Pipeline("telemetry", "Good", "Readings", false, configColumns...)
	for _, tc := range []struct {
		name     string
		pipeline string
		ok       bool
		want     want
	}{
		{"the workspace given", good, true, want{"workspace", doctor.Pass, []string{"1 dataset(s) visible"}, nil}},
		{"another workspace", strings.Replace(good, provisiontest.Workspace, other, 1), false,
			want{"workspace", doctor.Fail, []string{"workspace " + other, "403"}, []string{"add the service principal to the workspace as Member or Contributor"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := env.WriteConfig(t, strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.pipeline)
			rep := doctor.Run(context.Background(), doctor.Options{Path: path, StepTimeout: 5 * time.Second})
			if rep.OK() != tc.ok {
				t.Errorf("OK() = %v, want %v\n%s", rep.OK(), tc.ok, dump(rep))
			}
			checkStep(t, rep, tc.want)
		})
	}
}

// TestDoctorChecksTheDeadLetterAsRunDoes: doctor refuses a dead-letter
// path exactly when `pushd run` (deadletter.Open) would, and changes
// nothing while checking. The refused paths fail for root too.
func TestDoctorChecksTheDeadLetterAsRunDoes(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	existing := filepath.Join(dir, "existing.ndjson")
	if err := os.WriteFile(existing, []byte(`{"unfinished"`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		path   string
		status doctor.Status
		detail string
	}{
		{"under a regular file", filepath.Join(file, "dl.ndjson"), doctor.Fail, "not a directory"},
		{"deep under a regular file", filepath.Join(file, "sub", "dl.ndjson"), doctor.Fail, "not a directory"},
		{"a directory", dir, doctor.Fail, "is a directory"},
		{"missing directories", filepath.Join(dir, "new", "sub", "dl.ndjson"), doctor.Pass, "can append"},
		{"existing file", existing, doctor.Pass, "can append"},
		{"new file", filepath.Join(dir, "dl.ndjson"), doctor.Pass, "can append"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfgPath := filepath.Join(t.TempDir(), "pushd.yaml")
			text := fmt.Sprintf(`emulator:
  embedded: true
pipelines:
  - name: telemetry
    source: {type: stdin}
    target: {workspace_id: %s, dataset_name: X, table: T}
    provision: {create: true}
    schema:
      columns: [{name: A, type: String}]
    dead_letter: {path: %q}
`, provisiontest.Workspace, tt.path)
			if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			before := listTree(t, dir)
			rep := doctor.Run(context.Background(), doctor.Options{Path: cfgPath})
			if after := listTree(t, dir); after != before {
				t.Errorf("doctor changed the file system:\nbefore %s\nafter  %s", before, after)
			}
			var fix []string
			if tt.status == doctor.Fail {
				fix = []string{"pipelines[0].dead_letter.path"}
			}
			checkStep(t, rep, want{"dead letter (telemetry)", tt.status, []string{tt.detail}, fix})
			if rep.OK() != (tt.status == doctor.Pass) {
				t.Errorf("report OK = %v with the dead letter %s: %s", rep.OK(), tt.status, dump(rep))
			}
			// pushd run opens the dead letter with deadletter.Open: the
			// same verdict.
			w, err := deadletter.Open(tt.path, deadletter.Options{Pipeline: fmt.Sprint("p", i)})
			if (err == nil) != (tt.status == doctor.Pass) {
				t.Errorf("deadletter.Open = %v, doctor said %s", err, tt.status)
			}
			if w != nil {
				_ = w.Close()
			}
		})
	}
}

// listTree lists the names, sizes and contents under dir, to tell whether
// anything changed there.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s", p)
		if !d.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "=%q", data)
		}
		b.WriteString("; ")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
