package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/logtest"
)

var baseURLLine = regexp.MustCompile(`base URL:\s+(\S+)`)

// waitForURL waits for the command to print its base URL.
func waitForURL(t *testing.T, out *logtest.Buffer, done <-chan int) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if m := baseURLLine.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case code := <-done:
			t.Fatalf("emulate exited %d before serving; output %s", code, out.String())
		case <-deadline:
			t.Fatalf("no base URL printed; output %s", out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestEmulateHelpListsEveryFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := emulate(context.Background(), []string{"--help"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
	help := stdout.String()
	cfg := emulator.DefaultConfig()
	fs := emulateFlagSet(&cfg, &emulateOptions{})
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(help, "  --"+f.Name+" ") && !strings.Contains(help, "  --"+f.Name+"\n") {
			t.Errorf("help lacks --%s", f.Name)
		}
	})
	for _, want := range []string{"--listen string", "(default 127.0.0.1:8090)", "--max-rows-per-request int", "(default 10000)", "--requests-per-window int", "(default 120)", "--request-window duration", "(default 1m0s)", "--rows-per-window int", "(default 1000000)", "--error-rate float", "(default 0)", "--tls", "(default false)", "--ca-out string", `(default "")`} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if n < 35 {
		t.Fatalf("only %d flags", n)
	}
}

func TestEmulateBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"unknown flag", []string{"--nope"}},
		{"bad rate", []string{"--error-rate", "2"}},
		{"bad unknown-columns", []string{"--unknown-columns", "maybe"}},
		{"ca-out without tls", []string{"--ca-out", "x.pem"}},
		{"missing client cert", []string{"--client-cert", "/nonexistent.pem"}},
		{"stray argument", []string{"serve"}},
		{"federated issuer alone", []string{"--federated-issuer", "https://oidc.example/"}},
		{"federated key missing", []string{"--federated-issuer", "https://oidc.example/", "--federated-subject", "system:serviceaccount:a:b", "--federated-key", "/nonexistent.pem"}},
		{"workspace not a UUID", []string{"--workspace", "sales"}},
		{"missing trusted issuer", []string{"--trusted-issuer", "/nonexistent.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := emulate(context.Background(), tc.args, &stdout, &stderr); code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %s", code, exitUsage, stderr.String())
			}
		})
	}
}

// TestEmulateServesUntilSignal: prints URL, tenant, client id and secret,
// serves HTTPS with the CA written to --ca-out, and exits 0 on SIGTERM.
func TestEmulateServesUntilSignal(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	var stdout, stderr logtest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- runEmulate([]string{"--listen", "127.0.0.1:0", "--tls", "--ca-out", caFile, "--requests-per-window", "1", "--log-level", "warn"}, nil, &stdout, &stderr)
	}()
	base := waitForURL(t, &stdout, done)
	out := stdout.String()
	for _, want := range []string{emulator.DefaultTenant, emulator.DefaultClientID, emulator.DefaultClientSecret, caFile, "https://127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		t.Fatal("--ca-out is not a PEM certificate")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.PostForm(base+"/"+emulator.DefaultTenant+"/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {emulator.DefaultClientID},
		"client_secret": {emulator.DefaultClientSecret}, "scope": {"https://analysis.windows.net/powerbi/api/.default"},
	})
	if err != nil {
		t.Fatalf("token request over the --ca-out trust: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token status %d", resp.StatusCode)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d after SIGTERM; stderr %s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("emulate did not stop on SIGTERM")
	}
}

// TestEmulateDefaults: no flag but the port gives a working plain-HTTP
// emulator; cancelling stops it with exit 0.
func TestEmulateDefaults(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr logtest.Buffer
	done := make(chan int, 1)
	go func() { done <- emulate(ctx, []string{"--listen", "127.0.0.1:0"}, &stdout, &stderr) }()
	base := waitForURL(t, &stdout, done)
	resp, err := http.Get(base + "/emulator/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(base, "http://") {
		t.Fatalf("stats %d at %s", resp.StatusCode, base)
	}
	// The live page it prints is served at /.
	if !strings.Contains(stdout.String(), "live page:       "+base+"/\n") {
		t.Fatalf("no live page line in:\n%s", stdout.String())
	}
	page, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if page.StatusCode != http.StatusOK || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") || page.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("GET /: %d %s, CSP %q", page.StatusCode, page.Header.Get("Content-Type"), page.Header.Get("Content-Security-Policy"))
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d", code)
	}
}
