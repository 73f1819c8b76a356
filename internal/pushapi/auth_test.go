package pushapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushd/pushd/internal/secret"
)

func TestRenewTime(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name               string
		expiresIn, refresh time.Duration // refresh 0: none
		want               time.Duration
	}{
		{"one hour token renews 5 minutes early", time.Hour, 0, 55 * time.Minute},
		{"RefreshOn earlier wins", 2 * time.Hour, time.Hour, time.Hour},
		{"RefreshOn later than the margin is ignored", time.Hour, 59 * time.Minute, 55 * time.Minute},
		{"short token renews halfway", 4 * time.Minute, 0, 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var refresh time.Time
			if tt.refresh > 0 {
				refresh = now.Add(tt.refresh)
			}
			if got := renewTime(now, now.Add(tt.expiresIn), refresh).Sub(now); got != tt.want {
				t.Errorf("renew after %v, want %v", got, tt.want)
			}
		})
	}
}

// scriptedAcquire is an MSAL stand-in: it hands out tok-1, tok-2, ... valid
// for an hour, or fails while fail is set.
type scriptedAcquire struct {
	mu     sync.Mutex
	calls  int
	forced int
	fail   error
}

func (s *scriptedAcquire) acquire(_ context.Context, force bool) (tokenResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return tokenResult{}, s.fail
	}
	s.calls++
	if force {
		s.forced++
	}
	return tokenResult{token: "tok-" + string(rune('0'+s.calls)), expiresOn: time.Now().Add(time.Hour)}, nil
}

func newScriptedProvider(m *Metrics) (*msalProvider, *scriptedAcquire) {
	sa := &scriptedAcquire{}
	p := &msalProvider{method: AuthClientSecret, acquire: sa.acquire, metrics: m, sem: make(chan struct{}, 1),
		logger: discardLogger()}
	return p, sa
}

func TestMSALProviderLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		m := NewMetrics(reg)
		p, sa := newScriptedProvider(m)
		ctx := context.Background()
		get := func(want string) {
			t.Helper()
			got, err := p.Token(ctx)
			if err != nil || got != want {
				t.Fatalf("Token = %q, %v; want %q", got, err, want)
			}
		}
		get("tok-1")
		time.Sleep(54 * time.Minute)
		get("tok-1") // cached
		time.Sleep(2 * time.Minute)
		get("tok-2") // renewed 5 minutes before expiry

		p.Invalidate("tok-1") // stale: ignored
		get("tok-2")
		p.Invalidate("tok-2")
		get("tok-3")
		if sa.forced != 1 {
			t.Errorf("forced acquisitions = %d, want 1", sa.forced)
		}

		// Renewal fails while the token is still valid: keep using it.
		sa.fail = &AuthError{Method: AuthClientSecret, Status: 503}
		time.Sleep(56 * time.Minute)
		get("tok-3")
		// ...until 30s before it expires.
		time.Sleep(4 * time.Minute)
		if _, err := p.Token(ctx); err == nil {
			t.Fatal("Token succeeded with an expired token and a failing identity provider")
		}
		sa.fail = nil
		get("tok-4")

		if got := testutil.ToFloat64(m.tokenRenewals.WithLabelValues(AuthClientSecret)); got != 4 {
			t.Errorf("renewals = %v, want 4", got)
		}
		if got := testutil.ToFloat64(m.tokenFailures.WithLabelValues(AuthClientSecret)); got != 2 {
			t.Errorf("failures = %v, want 2", got)
		}
	})
}

func TestMSALProviderInvalidateRenewsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, sa := newScriptedProvider(nil)
		tok, _ := p.Token(context.Background())
		// Many requests refused with the same token: one renewal.
		for range 8 {
			p.Invalidate(tok)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				got, err := p.Token(context.Background())
				if err != nil || got == tok {
					t.Errorf("Token = %q, %v after Invalidate(%q)", got, err, tok)
				}
			})
		}
		wg.Wait()
		// A late refusal of the replaced token changes nothing.
		p.Invalidate(tok)
		if got, _ := p.Token(context.Background()); got != "tok-2" {
			t.Errorf("Token = %q, want tok-2", got)
		}
		if sa.calls != 2 || sa.forced != 1 {
			t.Errorf("acquisitions = %d (forced %d), want 2 (forced 1)", sa.calls, sa.forced)
		}
	})
}

func TestStaticTokenProvider(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	write := func(s string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	write("first-token\n", t0)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	p, err := NewTokenProvider(Config{Auth: AuthConfig{TokenFile: file}}, nil, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps := []struct {
		name   string
		before func()
		want   string
	}{
		{"read and trimmed", nil, "first-token"},
		{"unchanged file is not re-read", func() { _ = os.WriteFile(file, []byte("other-token\n"), 0o600); _ = os.Chtimes(file, t0, t0) }, "first-token"},
		{"new mtime re-reads", func() { write("second-token", t0.Add(time.Minute)) }, "second-token"},
		{"invalidate re-reads", func() {
			_ = os.WriteFile(file, []byte("third-token!"), 0o600)
			_ = os.Chtimes(file, t0.Add(time.Minute), t0.Add(time.Minute))
			p.Invalidate("second-token")
		}, "third-token!"},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		got, err := p.Token(ctx)
		if err != nil || got != st.want {
			t.Errorf("%s: Token = %q, %v; want %q", st.name, got, err, st.want)
		}
	}
	write("", t0.Add(2*time.Minute))
	if _, err := p.Token(ctx); err == nil {
		t.Error("empty token file accepted")
	}
	if got := testutil.ToFloat64(m.tokenRenewals.WithLabelValues(AuthStaticToken)); got != 3 {
		t.Errorf("renewals = %v, want 3", got)
	}

	fixed, err := NewTokenProvider(Config{Auth: AuthConfig{Method: AuthStaticToken, Token: secret.Value("abc")}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fixed.Token(ctx); err != nil || got != "abc" {
		t.Errorf("fixed Token = %q, %v", got, err)
	}
}

func TestNewAuthError(t *testing.T) {
	const secretText = "s3cr3t-value"
	mk := func(status int, body string) error {
		return msalerrors.CallErr{
			Req:  &http.Request{},
			Resp: &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader(body))},
			Err:  errors.New("http call(https://login/token)(POST) error: reply status code was 401:\n" + body),
		}
	}
	tests := []struct {
		name                     string
		err                      error
		status                   int
		code, aadsts, descPrefix string
	}{
		{"invalid secret", mk(401, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x\r\nCorrelation ID: y","error_codes":[7000215]}`),
			401, "invalid_client", "AADSTS7000215", "AADSTS7000215: Invalid client secret provided."},
		{"code only in error_codes", mk(400, `{"error":"invalid_request","error_description":"Tenant not found","error_codes":[90002]}`),
			400, "invalid_request", "AADSTS90002", "Tenant not found"},
		{"managed identity message", mk(400, `{"statusCode":400,"message":"resource unknown"}`), 400, "", "", "resource unknown"},
		{"not json", mk(502, `<html>bad gateway</html>`), 502, "", "", "<html>bad gateway</html>"},
		{"transport error echoing the secret", errors.New("dial tcp: secret " + secretText + " AADSTS50001"), 0, "", "AADSTS50001", "dial tcp: secret <redacted>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ae := newAuthError(AuthClientSecret, tt.err, secretText)
			if ae.Status != tt.status || ae.Code != tt.code || ae.AADSTS != tt.aadsts || !strings.HasPrefix(ae.Description, tt.descPrefix) {
				t.Errorf("AuthError = %+v", ae)
			}
			if strings.Contains(ae.Error(), secretText) {
				t.Errorf("error %q leaks the secret", ae.Error())
			}
			if strings.Contains(ae.Description, "Trace ID") {
				t.Errorf("description keeps Entra's trace lines: %q", ae.Description)
			}
		})
	}
}

func TestNewTokenProviderErrors(t *testing.T) {
	dir := t.TempDir()
	badPEM := filepath.Join(dir, "bad.pem")
	_ = os.WriteFile(badPEM, []byte("not a pem"), 0o600)
	tests := []struct {
		name string
		auth AuthConfig
		want string
	}{
		{"secret needs tenant and client", AuthConfig{Method: AuthClientSecret, ClientSecret: "x"}, "auth.tenant_id"},
		{"secret file missing", AuthConfig{Method: AuthClientSecret, TenantID: "t", ClientID: "c", ClientSecretFile: filepath.Join(dir, "nope")}, "auth.client_secret_file"},
		{"certificate unreadable", AuthConfig{Method: AuthClientCertificate, TenantID: "t", ClientID: "c", CertificateFile: badPEM}, "auth.certificate_file"},
		{"unknown method", AuthConfig{Method: "password"}, "auth.method"},
		{"both token and file", AuthConfig{Token: "a", TokenFile: "b"}, "auth.token_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTokenProvider(Config{Auth: tt.auth}, nil, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want mention of %s", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "x\"") {
				t.Errorf("err leaks a secret: %v", err)
			}
		})
	}
}

func TestAppTokenCacheClear(t *testing.T) {
	c := &appTokenCache{}
	var got bytes.Buffer
	u := unmarshalFunc(func(b []byte) error { got.Reset(); got.Write(b); return nil })
	_ = c.Export(context.Background(), marshalFunc(func() ([]byte, error) { return []byte(`{"AccessToken":{"k":{}}}`), nil }), cacheExportHints)
	_ = c.Replace(context.Background(), u, cacheReplaceHints)
	if got.String() != `{"AccessToken":{"k":{}}}` {
		t.Errorf("Replace loaded %q", got.String())
	}
	c.clear()
	_ = c.Replace(context.Background(), u, cacheReplaceHints)
	if got.String() != `{}` {
		t.Errorf("after clear Replace loaded %q, want {}", got.String())
	}
}
