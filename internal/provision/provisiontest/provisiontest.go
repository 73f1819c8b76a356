// Package provisiontest runs an in-process Power BI emulator over TLS and
// writes pushd configs that point at it with the real MSAL client-secret
// flow, for the tests of provision, doctor and their commands.
package provisiontest

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/emulator/emulatortest"
	"github.com/pushd/pushd/internal/pushapi"
)

// Workspace is the workspace id the configs use.
const Workspace = "0f6a3b4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"

// Env is an emulator over TLS and a temporary directory holding its CA
// certificate and the configs written.
type Env struct {
	Emulator *emulator.Server
	// Dir is a temporary directory for configs and dead letters.
	Dir string
	// CAFile holds the emulator's certificate as PEM (powerbi.ca_file).
	CAFile string
}

// Start starts the emulator (closed when the test ends).
func Start(t testing.TB) *Env { return StartWith(t, nil) }

// StartWith is Start with the emulator's config changed by mutate first.
func StartWith(t testing.TB, mutate func(*emulator.Config)) *Env {
	t.Helper()
	emu, ca := emulatortest.StartTLS(t, mutate)
	return &Env{Emulator: emu, Dir: filepath.Dir(ca), CAFile: ca}
}

// PowerBI is the powerbi and metrics sections of a config pointing at the
// emulator with client_secret auth using secret (emulator.DefaultClientSecret
// is the right one). Retries are short so that failures come back quickly.
func (e *Env) PowerBI(secret string) string {
	return fmt.Sprintf(`powerbi:
  api_url: %s
  authority_url: %s
  ca_file: %s
  auth:
    method: client_secret
    tenant_id: %s
    client_id: %s
    client_secret: %q
  retry:
    initial_backoff: 10ms
    max_backoff: 50ms
    max_elapsed: 2s
metrics:
  enabled: false
`, e.Emulator.URL(), e.Emulator.URL(), e.CAFile, emulator.DefaultTenant, emulator.DefaultClientID, secret)
}

// SourceHTTP is the source section Pipeline writes: an HTTP source on any
// free loopback port (several pipelines may use it, unlike stdin).
const SourceHTTP = `    source:
      type: http
      http:
        listen: 127.0.0.1:0
`

// Pipeline is one pipeline (source SourceHTTP) writing to dataset/table of Workspace
// with the given columns (YAML flow mappings, one per line, without the
// leading "- ") and provision.create.
func Pipeline(name, dataset, table string, create bool, columns ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `  - name: %s
`+SourceHTTP+`    target:
      workspace_id: %s
      dataset_name: %q
      table: %q
    provision:
      create: %t
      retention: basicFIFO
    schema:
      columns:
`, name, Workspace, dataset, table, create)
	for _, c := range columns {
		fmt.Fprintf(&b, "        - %s\n", c)
	}
	return b.String()
}

// WriteConfig writes the powerbi section (with the right secret) and the
// pipelines to a file in Dir and returns its path; the text must be valid.
func (e *Env) WriteConfig(t testing.TB, name string, pipelines ...string) string {
	t.Helper()
	return e.WriteConfigWithSecret(t, name, emulator.DefaultClientSecret, pipelines...)
}

// WriteConfigWithSecret is WriteConfig with another client secret.
func (e *Env) WriteConfigWithSecret(t testing.TB, name, secret string, pipelines ...string) string {
	t.Helper()
	text := e.PowerBI(secret) + "pipelines:\n" + strings.Join(pipelines, "")
	path := filepath.Join(e.Dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatalf("writing config: %v", err)
	}
	if _, err := config.Load(path); err != nil {
		t.Fatalf("config %s is invalid:\n%v\n%s", path, err, text)
	}
	return path
}

// Client builds a Power BI client for cfg the way pushd run does.
func Client(t testing.TB, cfg *config.Config) *pushapi.Client {
	t.Helper()
	hc, err := pushapi.NewHTTPClient(cfg.PowerBI)
	if err != nil {
		t.Fatalf("http client: %v", err)
	}
	tokens, err := pushapi.NewTokenProvider(cfg.PowerBI, hc, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatalf("token provider: %v", err)
	}
	c, err := pushapi.NewClient(cfg.PowerBI, tokens, hc, pushapi.ClientOptions{})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return c
}

// CreateDataset creates a dataset with one table directly in the emulator
// and returns its id; columns alternate name and type.
func (e *Env) CreateDataset(t testing.TB, mode, dataset, table string, columns ...string) string {
	t.Helper()
	cols := make([]emulator.Column, 0, len(columns)/2)
	for i := 0; i+1 < len(columns); i += 2 {
		cols = append(cols, emulator.Column{Name: columns[i], DataType: columns[i+1]})
	}
	id, err := e.Emulator.CreateDataset(Workspace, emulator.CreateDatasetRequest{
		Name: dataset, DefaultMode: mode, Tables: []emulator.Table{{Name: table, Columns: cols}},
	}, emulator.RetentionNone)
	if err != nil {
		t.Fatalf("creating dataset %q: %v", dataset, err)
	}
	return id
}
