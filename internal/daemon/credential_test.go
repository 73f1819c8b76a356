package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/logtest"
	"github.com/pushd/pushd/internal/pushapi"
)

// secretFileSection is powerbiSection with the secret read from file.
func secretFileSection(emu *emulator.Server, ca, file string) string {
	return fmt.Sprintf(`
powerbi:
  api_url: %s
  authority_url: %s
  ca_file: %s
  auth:
    method: client_secret
    tenant_id: %s
    client_id: %s
    client_secret_file: %s
  retry:
    initial_backoff: 10ms
    max_backoff: 200ms
metrics:
  listen: 127.0.0.1:0
`, emu.URL(), emu.URL(), ca, emulator.DefaultTenant, emulator.DefaultClientID, file)
}

// TestRunRefusedCredentialEndsAtOnce: a credential Entra refuses for good
// at start ends the run before any pipeline starts, with the AADSTS code in
// a CredentialError, after a single token request (no retries).
func TestRunRefusedCredentialEndsAtOnce(t *testing.T) {
	emu, ca := testEmulator(t, nil)
	createTelemetryDataset(t, emu, "Int64")
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("the-secret-id-not-its-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, secretFileSection(emu, ca, secretFile)+stdinPipeline("", filepath.Join(t.TempDir(), "dl.ndjson")))
	_, err := Run(context.Background(), Options{Config: cfg, Stdin: strings.NewReader("")})
	var ce *CredentialError
	var ae *pushapi.AuthError
	if !errors.As(err, &ce) || !errors.As(err, &ae) || ae.AADSTS != "AADSTS7000215" {
		t.Fatalf("Run = %v, want a CredentialError with AADSTS7000215", err)
	}
	if strings.Contains(err.Error(), "the-secret-id-not-its-value") {
		t.Errorf("error shows the secret: %v", err)
	}
	st := emu.Stats()
	if st.TokenErrors != 1 || st.Requests[emulator.RouteGetDatasets] != nil {
		t.Errorf("token errors = %d, dataset requests %v: want one refused sign-in and nothing else", st.TokenErrors, st.Requests[emulator.RouteGetDatasets])
	}
}

// readyz returns /readyz's status and body.
func readyz(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady polls /readyz until its status is want; it returns the body.
func waitReady(t *testing.T, addr string, want int, what string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := readyz(t, addr)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz still %d: %s", what, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCredentialRefusedDuringARun: when Entra starts refusing the secret
// in the middle of a run (here: a wrong secret rotated into the file),
// pushd keeps running, /readyz says not ready with the code, the log says
// what to fix, and the events read meanwhile land once a good secret is in
// the file again.
func TestCredentialRefusedDuringARun(t *testing.T) {
	emu, ca := testEmulator(t, func(c *emulator.Config) { c.TokenLifetime = 2 * time.Second })
	id := createTelemetryDataset(t, emu, "Int64")
	secretFile := filepath.Join(t.TempDir(), "secret")
	writeSecret := func(s string) {
		t.Helper()
		// Write aside and rename, as a secret store's sidecar does.
		tmp := secretFile + ".new"
		if err := os.WriteFile(tmp, []byte(s+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, secretFile); err != nil {
			t.Fatal(err)
		}
	}
	writeSecret(emulator.DefaultClientSecret)
	cfg := loadConfig(t, secretFileSection(emu, ca, secretFile)+stdinPipeline("    batch: {max_rows: 50, linger: 20ms}", filepath.Join(t.TempDir(), "dl.ndjson")))

	logs := &logtest.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	pr, pw := io.Pipe()
	ready := make(chan *Daemon, 1)
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), Options{Config: cfg, Stdin: pr, Logger: logger, Ready: func(d *Daemon) { ready <- d }})
		done <- err
	}()
	d := <-ready
	waitReady(t, d.OpsAddr(), http.StatusOK, "with the right secret")

	writeSecret("rotated-to-a-wrong-secret")
	body := waitReady(t, d.OpsAddr(), http.StatusServiceUnavailable, "after a wrong secret was rotated in")
	if !strings.Contains(body, "AADSTS7000215") {
		t.Errorf("/readyz body lacks the code: %s", body)
	}
	const n = 100
	if _, err := pw.Write(sampleEvents(t, n)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), `"msg":"Entra ID refuses the credential`) {
		if time.Now().After(deadline) {
			t.Fatalf("no refusal logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := emu.RowCount(id, "Telemetry"); n != 0 {
		t.Errorf("%d rows landed while the secret was refused", n)
	}

	writeSecret(emulator.DefaultClientSecret)
	waitReady(t, d.OpsAddr(), http.StatusOK, "after the right secret was rotated back")
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := emu.RowCount(id, "Telemetry"); got != n {
		t.Errorf("%d rows landed, want %d", got, n)
	}
	out := logs.String()
	for _, want := range []string{`"aadsts":"AADSTS7000215"`, `"fix":"correct powerbi.auth`, "pushd doctor", `"msg":"Entra ID accepts the credential again"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(out, "rotated-to-a-wrong-secret") || strings.Contains(out, emulator.DefaultClientSecret) {
		t.Error("log shows a secret")
	}
}
