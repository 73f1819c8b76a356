package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
)

func mustLoad(t *testing.T, file string) *Config {
	t.Helper()
	cfg, err := testOptions(testEnv, testFiles).Load(file)
	if err != nil {
		t.Fatalf("Load(%s): %v", file, err)
	}
	return cfg
}

func TestLoadFullConfig(t *testing.T) {
	cfg := mustLoad(t, "testdata/full.good.yaml")
	tele, side := cfg.Pipelines[0], cfg.Pipelines[1]
	kafka := tele.Source.Kafka
	checks := []struct {
		name      string
		got, want any
	}{
		{"cloud", cfg.PowerBI.Cloud, "usgov"},
		{"timeout", cfg.PowerBI.Timeout, 45 * time.Second},
		{"tenant from ${VAR:-default}", cfg.PowerBI.Auth.TenantID, "contoso.onmicrosoft.com"},
		{"client secret file kept: pushapi re-reads it when it rotates", cfg.PowerBI.Auth.ClientSecretFile, "/secrets/client-secret"},
		{"client secret not copied out of its file", cfg.PowerBI.Auth.ClientSecret.Reveal(), ""},
		{"bearer token file cleared once read", side.Source.HTTP.BearerTokenFile, ""},
		{"retry set", cfg.PowerBI.Retry.InitialBackoff, 250 * time.Millisecond},
		{"retry default kept beside set keys", cfg.PowerBI.Retry.MaxRetryAfter, time.Hour},
		{"metrics listen", cfg.Metrics.Listen, "127.0.0.1:9999"},
		{"metrics path default", cfg.Metrics.Path, "/metrics"},
		{"metrics enabled default", cfg.Metrics.Enabled, true},
		{"log", cfg.Log, Log{Format: "json", Level: "debug", ProgressInterval: 30 * time.Second}},
		{"shutdown timeout", cfg.ShutdownTimeout, time.Minute},
		{"brokers with quoted default", kafka.Brokers, []string{"localhost:9092", "localhost:9093"}},
		{"literal $ kept", kafka.SASL.Username, "$ConnectionString"},
		{"password from env", kafka.SASL.Password.Reveal(), testEnv["EH_CONNECTION_STRING"]},
		{"kafka default client id", kafka.ClientID, "pushd"},
		{"kafka start offset", kafka.StartOffset, "latest"},
		{"kafka tls", kafka.TLS, source.TLSConfig{Enabled: true, CAFile: "/etc/ssl/ca.pem"}},
		{"max_rows from env is a number", tele.Batch.MaxRows, 5000},
		{"max_bytes default", tele.Batch.MaxBytes, 16000000},
		{"linger", tele.Batch.Linger, 250 * time.Millisecond},
		{"limits set", tele.Limits.RequestsPerMinute, 60},
		{"limits default kept", tele.Limits.RowsPerHour, 1000000},
		{"underscored integer", tele.MaxUnackedEvents, 1000},
		{"dead letter default", tele.DeadLetter.Path, "dead-letter-telemetry.ndjson"},
		{"provision default", tele.Provision, Provision{Retention: "basicFIFO", Mode: "Push"}},
		{"schema columns", len(tele.Schema.Columns), 3},
		{"schema column", tele.Schema.Columns[0], schema.Column{Name: "device", Type: "String", From: "device.id", Required: true}},
		{"schema default kept", tele.Schema.EpochUnit, schema.DefaultConfig().EpochUnit},
		{"bearer token from file, CRLF trimmed", side.Source.HTTP.BearerToken.Reveal(), "bearer-from-file"},
		{"http listen", side.Source.HTTP.Listen, "0.0.0.0:8080"},
		{"http path default", side.Source.HTTP.Path, "/v1/events"},
		{"$$ is a literal $", side.Target.DatasetName, "Sidecar $5"},
		{"dead letter set", side.DeadLetter.Path, "/var/lib/pushd/sidecar.ndjson"},
		{"provision set", side.Provision, Provision{Create: true, Retention: "None", Mode: "Push"}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

func TestLoadMinimalConfigGetsDefaults(t *testing.T) {
	cfg := mustLoad(t, "testdata/minimal.good.yaml")
	def := DefaultConfig()
	if !reflect.DeepEqual(cfg.PowerBI, def.PowerBI) || cfg.Metrics != def.Metrics || cfg.Log != def.Log ||
		cfg.ShutdownTimeout != 30*time.Second {
		t.Errorf("top-level defaults not applied: %+v", cfg)
	}
	if !cfg.Emulator.Embedded || cfg.Emulator.TLS {
		t.Errorf("emulator = %+v, want embedded without TLS", cfg.Emulator)
	}
	want := DefaultPipeline()
	want.Name = "quickstart"
	want.Source.Type = "stdin"
	want.Target = pushapi.Target{DatasetName: "quickstart", Table: "telemetry"}
	want.Schema.Columns = []schema.Column{{Name: "device", Type: "String"}}
	want.DeadLetter.Path = "dead-letter-quickstart.ndjson"
	if len(cfg.Pipelines) != 1 || !reflect.DeepEqual(cfg.Pipelines[0], want) {
		t.Errorf("pipeline:\n got %+v\nwant %+v", cfg.Pipelines, want)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"batch max_rows", want.Batch.MaxRows, 10000},
		{"batch max_bytes", want.Batch.MaxBytes, 16000000},
		{"batch linger", want.Batch.Linger, time.Second},
		{"requests per minute", want.Limits.RequestsPerMinute, 120},
		{"rows per hour", want.Limits.RowsPerHour, 1000000},
		{"in flight", want.Limits.MaxInFlight, 5},
		{"large table rows", want.Limits.LargeTableRows, 250000},
		{"large table requests per hour", want.Limits.LargeTableRequestsPerHour, 120},
		{"max unacked", want.MaxUnackedEvents, 5000},
		{"retry initial", def.PowerBI.Retry.InitialBackoff, 500 * time.Millisecond},
		{"retry max", def.PowerBI.Retry.MaxBackoff, 30 * time.Second},
		{"retry-after cap", def.PowerBI.Retry.MaxRetryAfter, time.Hour},
		{"timeout", def.PowerBI.Timeout, 30 * time.Second},
		{"cloud", def.PowerBI.Cloud, "public"},
		{"metrics", def.Metrics, Metrics{Enabled: true, Listen: "127.0.0.1:9464", Path: "/metrics"}},
		{"stdin line", want.Source.Stdin.MaxLineBytes, 1 << 20},
		{"http listen", want.Source.HTTP.Listen, "127.0.0.1:8080"},
		{"kafka commit interval", want.Source.Kafka.CommitInterval, time.Second},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("default %s: got %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// TestEveryProblemAtOnce checks that one load reports problems of every
// kind — syntax aside — together: unknown keys, types, environment,
// secret files and validation, across sections.
func TestEveryProblemAtOnce(t *testing.T) {
	const doc = `powerbi:
  cloud: mars
  auth:
    method: client_secret
    tenant_id: t
    client_id: c
    client_secret_file: /nope
    colour: red
pipelines:
  - name: a
    source: {type: kafka, kafka: {brokers: ["${NO_SUCH_BROKER}"], topics: [t], group_id: g}}
    target: {workspace_id: f089354e-8366-4e18-aea3-4cb4a3a50b48, table: T}
    schema: {columns: [{name: x, type: Blob}]}
    batch: {max_rows: 20000, linger: soon}
`
	_, err := testOptions(nil, nil).Parse([]byte(doc), "all.yaml")
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("got %v, want *Error", err)
	}
	want := []Problem{
		{"powerbi.cloud", 2, ""},
		{"powerbi.auth.client_secret_file", 7, "cannot read the secret"},
		{"powerbi.auth.colour", 8, "unknown key"},
		{"pipelines[0].source.kafka.brokers[0]", 11, "NO_SUCH_BROKER is not set"},
		{"pipelines[0].target.dataset_id", 12, "required"},
		{"pipelines[0].schema.columns[0].type", 13, "Blob"},
		{"pipelines[0].batch.max_rows", 14, "must be 1..10000, got 20000"},
		{"pipelines[0].batch.linger", 14, "must be a duration"},
	}
	if len(cerr.Problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(cerr.Problems), len(want), err)
	}
	for _, w := range want {
		found := false
		for _, p := range cerr.Problems {
			if p.Path == w.Path && p.Line == w.Line && strings.Contains(p.Msg, w.Msg) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem %s at line %d containing %q in:\n%v", w.Path, w.Line, w.Msg, err)
		}
	}
}

func TestEnvExpansion(t *testing.T) {
	env := map[string]string{"ROWS": "200", "EMPTY": "", "NAME": "p1", "ON": "true", "SECRET": "a$b"}
	cases := []struct {
		name  string
		value string // YAML text of metrics.path or another key, see check
		check func(*Config) any
		want  any
	}{
		{"plain number", "pipelines[0].batch.max_rows: ${ROWS}", func(c *Config) any { return c.Pipelines[0].Batch.MaxRows }, 200},
		{"quoted reference to a number key", `pipelines[0].batch.max_rows: "${ROWS}"`, func(c *Config) any { return c.Pipelines[0].Batch.MaxRows }, 200},
		{"default when unset", "pipelines[0].batch.max_rows: ${NOPE:-300}", func(c *Config) any { return c.Pipelines[0].Batch.MaxRows }, 300},
		{"default when empty", "pipelines[0].batch.max_rows: ${EMPTY:-400}", func(c *Config) any { return c.Pipelines[0].Batch.MaxRows }, 400},
		{"empty without default keeps the default", "pipelines[0].batch.max_rows: ${EMPTY}", func(c *Config) any { return c.Pipelines[0].Batch.MaxRows }, 10000},
		{"number-like text stays a string", "pipelines[0].target.table: ${ROWS}", func(c *Config) any { return c.Pipelines[0].Target.Table }, "200"},
		{"bool", "metrics.enabled: ${ON}", func(c *Config) any { return c.Metrics.Enabled }, true},
		{"inside text", "pipelines[0].target.table: t_${NAME}_x", func(c *Config) any { return c.Pipelines[0].Target.Table }, "t_p1_x"},
		{"value with $ is not expanded again", "pipelines[0].target.dataset_name: T${SECRET}", func(c *Config) any { return c.Pipelines[0].Target.DatasetName }, "Ta$b"},
		{"$$ escapes", "pipelines[0].target.dataset_name: cost$$5", func(c *Config) any { return c.Pipelines[0].Target.DatasetName }, "cost$5"},
		{"lone $ kept", "pipelines[0].target.dataset_name: $HOME", func(c *Config) any { return c.Pipelines[0].Target.DatasetName }, "$HOME"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := minimalWith(c.value)
			cfg, err := testOptions(env, nil).Parse([]byte(doc), "env.yaml")
			if err != nil {
				t.Fatalf("%v\n%s", err, doc)
			}
			if got := c.check(cfg); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

// minimalWith returns a valid config with one more key set; setting is
// "PATH: VALUE" where PATH is metrics.KEY or pipelines[0].SECTION.KEY.
func minimalWith(setting string) string {
	path, value, _ := strings.Cut(setting, ": ")
	var metrics string
	target := map[string]string{"dataset_name": "D", "table": "T"}
	var extra string
	if key, ok := strings.CutPrefix(path, "metrics."); ok {
		metrics = "metrics:\n  " + key + ": " + value + "\n"
	} else {
		section, key, _ := strings.Cut(strings.TrimPrefix(path, "pipelines[0]."), ".")
		if section == "target" {
			target[key] = value
		} else {
			extra = "    " + section + ":\n      " + key + ": " + value + "\n"
		}
	}
	return "emulator: {embedded: true}\n" + metrics +
		"pipelines:\n  - name: p\n    source: {type: stdin}\n    schema: {columns: [{name: v, type: String}]}\n" +
		"    target:\n      dataset_name: " + target["dataset_name"] + "\n      table: " + target["table"] + "\n" + extra
}

func TestExpandEnv(t *testing.T) {
	env := func(name string) (string, bool) {
		v, ok := map[string]string{"A": "x", "E": ""}[name]
		return v, ok
	}
	cases := []struct {
		in, want string
		changed  bool
		errs     []string
	}{
		{"plain", "plain", false, nil},
		{"${A}", "x", true, nil},
		{"${A:-d}", "x", true, nil},
		{"${E}", "", true, nil},
		{"${E:-d}", "d", true, nil},
		{"${U:-}", "", true, nil},
		{"${U:-a:b}", "a:b", true, nil},
		{"$$A", "$A", true, nil},
		{"$", "$", false, nil},
		{"a$b", "a$b", false, nil},
		{"${U}", "", true, []string{"environment variable U is not set"}},
		{"${U}${V}", "", true, []string{"U is not set", "V is not set"}},
		{"${A", "${A", false, []string{"unterminated"}},
		{"${}", "", true, []string{"invalid variable reference ${}"}},
		{"${A-B}", "", true, []string{"invalid variable reference ${A-B}"}},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, changed, errs := expandEnv(c.in, env)
			if len(errs) != len(c.errs) {
				t.Fatalf("errors %v, want %d matching %q", errs, len(c.errs), c.errs)
			}
			for i := range errs {
				if !strings.Contains(errs[i].Error(), c.errs[i]) {
					t.Errorf("error %q does not contain %q", errs[i], c.errs[i])
				}
			}
			if len(errs) == 0 && (got != c.want || changed != c.changed) {
				t.Errorf("expandEnv(%q) = %q, %v; want %q, %v", c.in, got, changed, c.want, c.changed)
			}
		})
	}
}

func TestRedactedHidesSecrets(t *testing.T) {
	cfg := mustLoad(t, "testdata/full.good.yaml")
	out, err := cfg.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, secret := range []string{"s3cret-from-file", "bearer-from-file", testEnv["EH_CONNECTION_STRING"]} {
		if strings.Contains(text, secret) {
			t.Errorf("dump shows secret %q:\n%s", secret, text)
		}
	}
	for _, want := range []string{"client_secret_file: /secrets/client-secret", "password: <redacted>", "bearer_token: <redacted>",
		"max_rows: 5000", "linger: 250ms"} {
		if !strings.Contains(text, want) {
			t.Errorf("dump lacks %q:\n%s", want, text)
		}
	}
	// Only the section of the chosen source kind is shown.
	if strings.Count(text, "max_line_bytes") != 0 || strings.Count(text, "group_id") != 1 {
		t.Errorf("dump shows source sections of other kinds:\n%s", text)
	}
}

func TestLoadErrors(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"empty", "", "empty.yaml:1: config is empty"},
		{"comments only", "# nothing\n", "config is empty"},
		{"not a mapping", "- a\n- b\n", "empty.yaml:1: the top level must be a mapping"},
		{"two documents", "log: {level: info}\n---\nlog: {level: debug}\n", "empty.yaml:2: a config holds one YAML document"},
		{"tab indentation", "log:\n\tlevel: info\n", "empty.yaml:2: invalid YAML"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := testOptions(nil, nil).Parse([]byte(c.doc), "empty.yaml")
			var cerr *Error
			if !errors.As(err, &cerr) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want *Error containing %q", err, c.want)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: got %v, want a wrapped ErrNotExist", err)
	}
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	const doc = `emulator: {embedded: true}
x-batch: &batch {max_rows: 500, linger: 2s}
pipelines:
  - name: a
    source: {type: stdin}
    schema: &schema {columns: [{name: v, type: String}]}
    target: {dataset_name: D, table: A}
    batch: *batch
  - name: b
    source: {type: http}
    schema: *schema
    target: {dataset_name: D, table: B}
    batch:
      <<: *batch
      max_rows: 700
`
	cfg, err := testOptions(nil, nil).Parse([]byte(doc), "anchors.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Extension keys are allowed at the top level only.
	bad := strings.Replace(doc, "    batch: *batch\n", "    batch: *batch\n    x-note: hi\n", 1)
	if _, err := testOptions(nil, nil).Parse([]byte(bad), "anchors.yaml"); err == nil ||
		!strings.Contains(err.Error(), "anchors.yaml:9: pipelines[0].x-note: unknown key") {
		t.Errorf("got %v, want x-note rejected inside a pipeline", err)
	}
	a, b := cfg.Pipelines[0], cfg.Pipelines[1]
	if a.Batch.MaxRows != 500 || a.Batch.Linger != 2*time.Second {
		t.Errorf("alias: %+v", a.Batch)
	}
	if b.Batch.MaxRows != 700 || b.Batch.Linger != 2*time.Second || len(b.Schema.Columns) != 1 {
		t.Errorf("merge: %+v, schema %+v", b.Batch, b.Schema)
	}
}

func TestLineOf(t *testing.T) {
	const doc = `powerbi:
  auth:
    method: x
pipelines:
  - name: a
    batch:
      max_rows: 1
  -
    name: b
`
	cfg, err := testOptions(nil, nil).Parse([]byte(doc), "x")
	_ = cfg
	if err == nil {
		t.Fatal("want an error")
	}
	root, problem := parseDocument([]byte(doc))
	if problem != nil {
		t.Fatal(problem)
	}
	cases := []struct {
		path string
		line int
	}{
		{"powerbi.auth.method", 3},
		{"powerbi.auth.tenant_id", 2},    // missing: its section's key
		{"powerbi.retry.max_backoff", 1}, // missing section: the nearest that exists
		{"pipelines[0].batch.max_rows", 7},
		{"pipelines[0].batch.linger", 6},
		{"pipelines[0].target.table", 5}, // the list item
		{"pipelines[1].name", 9},
		{"pipelines[1]", 9},
		{"pipelines[7].name", 4},
		{"not a path", 1},
	}
	for _, c := range cases {
		if got := lineOf(root, c.path); got != c.line {
			t.Errorf("lineOf(%q) = %d, want %d", c.path, got, c.line)
		}
	}
}

func TestSectionProblemsPaths(t *testing.T) {
	err := errors.Join(
		errors.New("columns[2].type: unknown type"),
		errors.Join(errors.New("epoch_unit: bad"), errors.New("columns: too many")),
		errors.New("invalid: not a key of the section, so about the section"),
		errors.New("two\nlines"),
	)
	got := sectionProblems("pipelines[1].schema", reflect.TypeFor[schema.Config](), err)
	want := []Problem{
		{Path: "pipelines[1].schema.columns[2].type", Msg: "unknown type"},
		{Path: "pipelines[1].schema.epoch_unit", Msg: "bad"},
		{Path: "pipelines[1].schema.columns", Msg: "too many"},
		{Path: "pipelines[1].schema", Msg: "invalid: not a key of the section, so about the section"},
		{Path: "pipelines[1].schema", Msg: "two"},
		{Path: "pipelines[1].schema", Msg: "lines"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{File: "configs/x.yaml", Problems: []Problem{
		{Path: "pipelines[0].batch.max_rows", Line: 14, Msg: "must be 1..10000, got 20000"},
		{Line: 3, Msg: "invalid YAML: oops"},
		{Path: "pipelines", Msg: "required"},
	}}
	want := "configs/x.yaml:14: pipelines[0].batch.max_rows: must be 1..10000, got 20000\n" +
		"configs/x.yaml:3: invalid YAML: oops\n" +
		"configs/x.yaml: pipelines: required"
	if got := e.Error(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestSuggest(t *testing.T) {
	keys := []string{"max_rows", "max_bytes", "linger"}
	cases := map[string]string{
		"max_row":   " (did you mean max_rows?)",
		"maxRows":   " (did you mean max_rows?)",
		"MAX-BYTES": " (did you mean max_bytes?)",
		"lingr":     " (did you mean linger?)",
		"flush":     " (known keys: max_rows, max_bytes, linger)",
		"x":         " (known keys: max_rows, max_bytes, linger)",
		"ligner":    " (did you mean linger?)", // two letters swapped: one edit
	}
	for in, want := range cases {
		if got := suggest(in, keys); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
	// A column's keys are short: form for from must still be caught.
	columnKeys := []string{"name", "type", "from", "default", "required"}
	if got, want := suggest("form", columnKeys), " (did you mean from?)"; got != want {
		t.Errorf("suggest(form) = %q, want %q", got, want)
	}
}

func TestTokenFileIsCheckedButKept(t *testing.T) {
	doc := func(file string) string {
		return "powerbi:\n  auth:\n    method: static_token\n    token_file: " + file + "\n" +
			"pipelines:\n  - name: p\n    source: {type: stdin}\n    schema: {columns: [{name: v, type: String}]}\n" +
			"    target: {dataset_name: D, table: T}\n"
	}
	files := map[string]string{"/run/token": "eyJ0eXAi\n"}
	cfg, err := testOptions(nil, files).Parse([]byte(doc("/run/token")), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// pushapi re-reads token_file when it changes, so the path stays and
	// the token is not copied.
	if a := cfg.PowerBI.Auth; a.TokenFile != "/run/token" || a.Token != "" {
		t.Errorf("auth = token %q, token_file %q; want the path kept and no token", a.Token.Reveal(), a.TokenFile)
	}
	_, err = testOptions(nil, files).Parse([]byte(doc("/run/missing")), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), "t.yaml:4: powerbi.auth.token_file: cannot read the secret") {
		t.Errorf("got %v, want an unreadable token_file at line 4", err)
	}
}
