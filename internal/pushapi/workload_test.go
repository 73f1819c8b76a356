package pushapi

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
)

const (
	aksIssuer  = "https://oidc.prod-aks.azure.com/11111111-1111-4111-8111-111111111111/cluster-1/"
	aksSubject = "system:serviceaccount:telemetry:pushd"
)

// serviceAccountToken signs a Kubernetes-style projected service account
// token (RS256) as an AKS cluster's OIDC issuer would.
func serviceAccountToken(t *testing.T, key *rsa.PrivateKey, iss, sub, aud string, now time.Time) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": "RS256", "kid": "cluster-key", "typ": "JWT"}) + "." +
		enc(map[string]any{"iss": iss, "sub": sub, "aud": []string{aud}, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// aksPod sets the environment the AKS workload identity webhook injects
// and writes the projected token file; it returns the file.
func aksPod(t *testing.T, s *emulator.Server, token string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvClientID, emulator.DefaultClientID)
	t.Setenv(EnvTenantID, emulator.DefaultTenant)
	t.Setenv(EnvFederatedTokenFile, file)
	t.Setenv(EnvAuthorityHost, s.URL()+"/") // the webhook's value ends with a slash
	return file
}

// TestEmulatorWorkloadIdentity: in an AKS-style pod (federated token file
// and the webhook's variables, nothing else configured), workload_identity
// signs in against the emulator, and a rotated token file is read at the
// next sign-in (the old token has expired by then: reading it once would
// fail with AADSTS700024).
func TestEmulatorWorkloadIdentity(t *testing.T) {
	clusterKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	clock := &emuClock{}
	s := startEmulator(t, func(c *emulator.Config) {
		c.Now = clock.now
		c.ClientSecret = "" // the app has no secret: only the federated credential
		c.FederatedCredentials = []emulator.FederatedCredential{{Issuer: aksIssuer, Subject: aksSubject, Keys: []crypto.PublicKey{&clusterKey.PublicKey}}}
	})
	file := aksPod(t, s, serviceAccountToken(t, clusterKey, aksIssuer, aksSubject, emulator.AzureADTokenExchange, clock.now()))
	cfg := Config{APIURL: s.URL(), Timeout: 10 * time.Second, Auth: AuthConfig{Method: AuthWorkloadIdentity},
		Retry: RetryConfig{InitialBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, MaxElapsed: 2 * time.Second}}
	c, _ := emuClient(t, s, cfg, nil)
	tgt := createTelemetry(t, c, RetentionNone)
	if err := c.PostRows(context.Background(), tgt, telemetryRows(0, 5)); err != nil {
		t.Fatalf("PostRows: %v", err)
	}

	// Two hours later: the access token and the first service account
	// token have expired; the kubelet has written a new one in place.
	clock.advance(2 * time.Hour)
	if err := os.WriteFile(file, []byte(serviceAccountToken(t, clusterKey, aksIssuer, aksSubject, emulator.AzureADTokenExchange, clock.now())), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.PostRows(context.Background(), tgt, telemetryRows(5, 5)); err != nil {
		t.Fatalf("PostRows after the token file rotated: %v", err)
	}
	if n := s.RowCount(tgt.DatasetID, tgt.Table); n != 10 {
		t.Errorf("rows = %d, want 10", n)
	}
	if n := s.Stats().TokensIssued; n != 2 {
		t.Errorf("tokens issued = %d, want 2 (one per service account token)", n)
	}
}

// TestEmulatorWorkloadIdentityRefusals: a federated token that does not
// match the app's federated credential is refused with Entra's code, which
// the AuthError carries.
func TestEmulatorWorkloadIdentityRefusals(t *testing.T) {
	clusterKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s := startEmulator(t, func(c *emulator.Config) {
		c.FederatedCredentials = []emulator.FederatedCredential{{Issuer: aksIssuer, Subject: aksSubject, Keys: []crypto.PublicKey{&clusterKey.PublicKey}}}
	})
	now := time.Now()
	for _, tc := range []struct {
		name   string
		token  string
		aadsts string
	}{
		{"another cluster", serviceAccountToken(t, clusterKey, "https://oidc.example/other/", aksSubject, emulator.AzureADTokenExchange, now), "AADSTS700211"},
		{"another audience", serviceAccountToken(t, clusterKey, aksIssuer, aksSubject, "api://something-else", now), "AADSTS700212"},
		{"another service account", serviceAccountToken(t, clusterKey, aksIssuer, "system:serviceaccount:telemetry:default", emulator.AzureADTokenExchange, now), "AADSTS700213"},
		{"subject differs in case only", serviceAccountToken(t, clusterKey, aksIssuer, "system:serviceaccount:Telemetry:pushd", emulator.AzureADTokenExchange, now), "AADSTS7002138"},
		{"signed by another key", serviceAccountToken(t, otherKey, aksIssuer, aksSubject, emulator.AzureADTokenExchange, now), "AADSTS700027"},
		{"expired", serviceAccountToken(t, clusterKey, aksIssuer, aksSubject, emulator.AzureADTokenExchange, now.Add(-2*time.Hour)), "AADSTS700024"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aksPod(t, s, tc.token)
			tp, err := NewTokenProvider(Config{Auth: AuthConfig{Method: AuthWorkloadIdentity}}, s.Client(), discardLogger(), nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tp.Token(context.Background())
			var ae *AuthError
			if !errors.As(err, &ae) || ae.AADSTS != tc.aadsts {
				t.Fatalf("Token err = %v, want an AuthError with %s", err, tc.aadsts)
			}
		})
	}
}

// TestWorkloadIdentityConfig: the webhook's variables are the defaults,
// the config overrides each, and without either the key is named.
func TestWorkloadIdentityConfig(t *testing.T) {
	t.Setenv(EnvClientID, "env-client")
	t.Setenv(EnvTenantID, "env-tenant")
	t.Setenv(EnvFederatedTokenFile, "/var/run/secrets/azure/tokens/azure-identity-token")
	t.Setenv(EnvAuthorityHost, "https://login.microsoftonline.com/")
	got := Config{Auth: AuthConfig{Method: AuthWorkloadIdentity, ClientID: "cfg-client"}}.WithEnvironment(os.Getenv)
	if got.Auth.ClientID != "cfg-client" || got.Auth.TenantID != "env-tenant" ||
		got.Auth.FederatedTokenFile != "/var/run/secrets/azure/tokens/azure-identity-token" ||
		got.AuthorityURL != "https://login.microsoftonline.com" {
		t.Errorf("WithEnvironment = %+v", got)
	}
	if other := (Config{Auth: AuthConfig{Method: AuthClientSecret}}).WithEnvironment(os.Getenv); other.Auth.ClientID != "" {
		t.Errorf("client_secret took AZURE_CLIENT_ID: %+v", other.Auth)
	}
	t.Setenv(EnvTenantID, "")
	t.Setenv(EnvFederatedTokenFile, "")
	err := AuthConfig{Method: AuthWorkloadIdentity}.Validate()
	for _, want := range []string{"auth.tenant_id: required for method workload_identity (or set AZURE_TENANT_ID", "auth.federated_token_file: required"} {
		if err == nil || !contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
	if err != nil && contains(err.Error(), "auth.client_id") {
		t.Errorf("Validate = %v: AZURE_CLIENT_ID is set", err)
	}
}
