package emulator

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/managedidentity"
)

const powerBIScope = "https://analysis.windows.net/powerbi/api/.default"

// testCert makes an RSA key and a self-signed certificate for it.
func testCert(t *testing.T) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "pushd test client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// startTLS runs a real-clock HTTPS emulator with cert registered.
func startTLS(t *testing.T, cert *x509.Certificate) *env {
	return start(t, func(c *Config) {
		c.Now = nil
		c.TLS = true
		if cert != nil {
			c.ClientCertificates = []*x509.Certificate{cert}
		}
	})
}

// TestMSALConfidentialClient: the real MSAL confidential client gets a token
// with a secret and with a certificate, and the API accepts it.
func TestMSALConfidentialClient(t *testing.T) {
	cert, key := testCert(t)
	other, otherKey := testCert(t)
	e := startTLS(t, cert)
	if !strings.HasPrefix(e.s.URL(), "https://") || e.s.CACertPEM() == nil {
		t.Fatalf("URL %s, CA %d bytes", e.s.URL(), len(e.s.CACertPEM()))
	}
	secret := func(s string) confidential.Credential {
		c, err := confidential.NewCredFromSecret(s)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	certCred := func(c *x509.Certificate, k *rsa.PrivateKey) confidential.Credential {
		cred, err := confidential.NewCredFromCert([]*x509.Certificate{c}, k)
		if err != nil {
			t.Fatal(err)
		}
		return cred
	}
	for _, tc := range []struct {
		name    string
		cred    confidential.Credential
		opts    []confidential.Option
		wantErr string // "" means a token the API accepts
	}{
		{name: "secret", cred: secret(DefaultClientSecret)},
		{name: "certificate", cred: certCred(cert, key)},
		{name: "certificate with x5c", cred: certCred(cert, key), opts: []confidential.Option{confidential.WithX5C()}},
		{name: "wrong secret", cred: secret("nope"), wantErr: "AADSTS7000215"},
		{name: "unregistered certificate", cred: certCred(other, otherKey), wantErr: "AADSTS700027"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append([]confidential.Option{confidential.WithHTTPClient(e.c), confidential.WithInstanceDiscovery(false)}, tc.opts...)
			client, err := confidential.New(e.s.Authority(), DefaultClientID, tc.cred, opts...)
			if err != nil {
				t.Fatalf("confidential.New: %v", err)
			}
			res, err := client.AcquireTokenByCredential(context.Background(), []string{powerBIScope})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("AcquireTokenByCredential: %v", err)
			}
			if left := time.Until(res.ExpiresOn); left < 59*time.Minute || left > 61*time.Minute {
				t.Fatalf("token expires in %s, want about 1h", left)
			}
			wantStatus(t, e.doToken("GET", "/v1.0/myorg/groups/"+group+"/datasets", nil, res.AccessToken), http.StatusOK)
		})
	}
	if st := e.s.Stats(); st.TokensIssued != 3 || st.Requests[RouteOpenIDConfiguration][200] == 0 {
		t.Fatalf("stats: tokens issued %d, requests %v", st.TokensIssued, st.Requests)
	}
}

// tokenRequest posts a form to the token endpoint.
func (e *env) tokenRequest(tenant string, form url.Values) (int, map[string]any) {
	e.t.Helper()
	resp, err := e.c.PostForm(e.s.URL()+"/"+tenant+"/oauth2/v2.0/token", form)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		e.t.Fatalf("token response is not JSON: %v", err)
	}
	return resp.StatusCode, m
}

// signJWT makes a client assertion signed with key (RS256 or PS256).
func signJWT(t *testing.T, alg string, cert *x509.Certificate, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	thumb := sha256.Sum256(cert.Raw)
	h, _ := json.Marshal(map[string]any{"alg": alg, "typ": "JWT", "x5t#S256": base64.RawURLEncoding.EncodeToString(thumb[:])})
	c, _ := json.Marshal(claims)
	signed := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	var err error
	if alg == "PS256" {
		sig, err = rsa.SignPSS(rand.Reader, key, crypto.SHA256, sum[:], nil)
	} else {
		sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	}
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestTokenEndpointErrors: Entra's error JSON and status for each refusal.
func TestTokenEndpointErrors(t *testing.T) {
	cert, key := testCert(t)
	e := startTLS(t, cert)
	aud := e.s.URL() + "/" + DefaultTenant + "/oauth2/v2.0/token"
	now := time.Now().Unix()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"aud": aud, "iss": DefaultClientID, "sub": DefaultClientID, "exp": now + 600, "nbf": now, "jti": "x"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	assertion := func(jwt string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "client_id": {DefaultClientID}, "scope": {powerBIScope},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {jwt}}
	}
	secretForm := func(mod func(url.Values)) url.Values {
		f := url.Values{"grant_type": {"client_credentials"}, "client_id": {DefaultClientID}, "scope": {powerBIScope + " openid offline_access profile"}, "client_secret": {DefaultClientSecret}}
		if mod != nil {
			mod(f)
		}
		return f
	}
	for _, tc := range []struct {
		name   string
		tenant string
		form   url.Values
		status int
		code   string
		aadsts float64
	}{
		{"secret with MSAL's extra scopes", DefaultTenant, secretForm(nil), 200, "", 0},
		{"tenant case-insensitive", strings.ToUpper(DefaultTenant), secretForm(nil), 200, "", 0},
		{"RS256 assertion", DefaultTenant, assertion(signJWT(t, "RS256", cert, key, claims(nil))), 200, "", 0},
		{"PS256 assertion", DefaultTenant, assertion(signJWT(t, "PS256", cert, key, claims(nil))), 200, "", 0},
		{"wrong secret", DefaultTenant, secretForm(func(f url.Values) { f.Set("client_secret", "x") }), 401, "invalid_client", 7000215},
		{"unknown client", DefaultTenant, secretForm(func(f url.Values) { f.Set("client_id", "nobody") }), 400, "unauthorized_client", 700016},
		{"unknown tenant", "other", secretForm(nil), 400, "invalid_request", 90002},
		{"no credential", DefaultTenant, secretForm(func(f url.Values) { f.Del("client_secret") }), 401, "invalid_client", 7000218},
		{"wrong grant", DefaultTenant, secretForm(func(f url.Values) { f.Set("grant_type", "password") }), 400, "unsupported_grant_type", 70003},
		{"scope without .default", DefaultTenant, secretForm(func(f url.Values) { f.Set("scope", "Dataset.ReadWrite.All") }), 400, "invalid_scope", 1002012},
		{"unknown resource", DefaultTenant, secretForm(func(f url.Values) { f.Set("scope", "https://graph.microsoft.com/.default") }), 400, "invalid_resource", 500011},
		{"expired assertion", DefaultTenant, assertion(signJWT(t, "RS256", cert, key, claims(func(c map[string]any) { c["exp"] = now - 3600 }))), 401, "invalid_client", 700024},
		{"assertion for another audience", DefaultTenant, assertion(signJWT(t, "RS256", cert, key, claims(func(c map[string]any) { c["aud"] = "https://login.microsoftonline.com/x/oauth2/v2.0/token" }))), 401, "invalid_client", 700212},
		{"assertion from another issuer", DefaultTenant, assertion(signJWT(t, "RS256", cert, key, claims(func(c map[string]any) { c["iss"] = "someone" }))), 401, "invalid_client", 700021},
		{"tampered assertion", DefaultTenant, assertion(signJWT(t, "RS256", cert, key, claims(nil)) + "AA"), 401, "invalid_client", 700027},
		{"malformed assertion", DefaultTenant, assertion("not.a.jwt"), 401, "invalid_client", 50027},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.tokenRequest(tc.tenant, tc.form)
			if status != tc.status {
				t.Fatalf("status = %d, want %d: %v", status, tc.status, body)
			}
			if tc.code == "" {
				if body["access_token"] == "" || body["token_type"] != "Bearer" || body["expires_in"] != float64(3600) {
					t.Fatalf("token response = %v", body)
				}
				wantStatus(t, e.doToken("GET", "/v1.0/myorg/datasets", nil, body["access_token"].(string)), http.StatusOK)
				return
			}
			for _, k := range []string{"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"} {
				if _, ok := body[k]; !ok {
					t.Fatalf("error JSON lacks %q: %v", k, body)
				}
			}
			codes, _ := body["error_codes"].([]any)
			if body["error"] != tc.code || len(codes) != 1 || codes[0] != tc.aadsts {
				t.Fatalf("error = %v %v, want %s %v", body["error"], body["error_codes"], tc.code, tc.aadsts)
			}
			if d, _ := body["error_description"].(string); !strings.HasPrefix(d, "AADSTS") {
				t.Fatalf("error_description = %q", d)
			}
		})
	}
}

// TestOpenIDConfiguration: the discovery document MSAL needs.
func TestOpenIDConfiguration(t *testing.T) {
	e := startTLS(t, nil)
	resp, err := e.c.Get(e.s.Authority() + "/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"token_endpoint", "authorization_endpoint", "issuer"} {
		v, _ := doc[k].(string)
		if !strings.HasPrefix(v, e.s.URL()+"/") {
			t.Fatalf("%s = %q, want on %s", k, v, e.s.URL())
		}
	}
}

// TestManagedIdentity: MSAL's managed-identity client, App Service style.
// (MSAL keeps managed-identity tokens in a process-wide cache, so only this
// test acquires one.)
func TestManagedIdentity(t *testing.T) {
	e := start(t, func(c *Config) {
		c.Now = nil
		c.TLS = true
		c.UserAssignedIdentities = []ManagedIdentity{{ClientID: "abc"}}
	})
	t.Setenv("IDENTITY_ENDPOINT", e.s.ManagedIdentityEndpoint())
	t.Setenv("IDENTITY_HEADER", DefaultIdentityHeader)
	if src, err := managedidentity.GetSource(); err != nil || src != managedidentity.AppService {
		t.Fatalf("source = %v, %v", src, err)
	}
	client, err := managedidentity.New(managedidentity.SystemAssigned(), managedidentity.WithHTTPClient(e.c))
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.AcquireToken(context.Background(), powerBIScope)
	if err != nil {
		t.Fatalf("AcquireToken: %v", err)
	}
	wantStatus(t, e.doToken("GET", "/v1.0/myorg/datasets", nil, res.AccessToken), http.StatusOK)

	for _, tc := range []struct {
		name   string
		query  string
		header string
		status int
	}{
		{"ok user-assigned", "?api-version=2019-08-01&resource=https://analysis.windows.net/powerbi/api&client_id=abc", DefaultIdentityHeader, 200},
		{"unknown user-assigned", "?api-version=2019-08-01&resource=https://analysis.windows.net/powerbi/api&client_id=abd", DefaultIdentityHeader, 400},
		{"user-assigned by object id (unknown)", "?api-version=2019-08-01&resource=https://analysis.windows.net/powerbi/api&object_id=abc", DefaultIdentityHeader, 400},
		{"wrong header", "?api-version=2019-08-01&resource=https://analysis.windows.net/powerbi/api", "nope", 401},
		{"wrong api version", "?api-version=2017-09-01&resource=https://analysis.windows.net/powerbi/api", DefaultIdentityHeader, 400},
		{"unknown resource", "?api-version=2019-08-01&resource=https://graph.microsoft.com", DefaultIdentityHeader, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.s.ManagedIdentityEndpoint()+tc.query, nil)
			req.Header.Set("X-IDENTITY-HEADER", tc.header)
			resp, err := e.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d: %v", resp.StatusCode, tc.status, body)
			}
			if tc.status == 200 && (body["client_id"] != "abc" || body["expires_on"] == "") {
				t.Fatalf("body = %v", body)
			}
		})
	}
}

// TestTokenOutage: the fault makes both token endpoints answer 503.
func TestTokenOutage(t *testing.T) {
	e := start(t, func(c *Config) { c.Faults.TokenOutageFor = time.Minute })
	status, body := e.tokenRequest(DefaultTenant, url.Values{"grant_type": {"client_credentials"}, "client_id": {DefaultClientID}, "scope": {powerBIScope}, "client_secret": {DefaultClientSecret}})
	if status != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" {
		t.Fatalf("during outage: %d %v", status, body)
	}
	req, _ := http.NewRequest("GET", e.s.ManagedIdentityEndpoint()+"?api-version=2019-08-01&resource=https://analysis.windows.net/powerbi/api", nil)
	req.Header.Set("X-IDENTITY-HEADER", DefaultIdentityHeader)
	resp, err := e.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("managed identity during outage: %d", resp.StatusCode)
	}
	e.clock.Advance(time.Minute)
	status, body = e.tokenRequest(DefaultTenant, url.Values{"grant_type": {"client_credentials"}, "client_id": {DefaultClientID}, "scope": {powerBIScope}, "client_secret": {DefaultClientSecret}})
	if status != http.StatusOK {
		t.Fatalf("after outage: %d %v", status, body)
	}
}

// TestWorkspacesPerPrincipal: with Workspaces set, a service principal's
// token reaches only those workspaces (403 elsewhere, and on My workspace
// Power BI's "API is not accessible for application"); a user's token
// reaches every workspace.
func TestWorkspacesPerPrincipal(t *testing.T) {
	const given, other = "0f6a3b4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "9a9a9a9a-1b1b-4c2c-8d3d-4e4e4e4e4e4e"
	e := start(t, func(c *Config) { c.Workspaces = []string{given} })
	status, body := e.tokenRequest(DefaultTenant, url.Values{"grant_type": {"client_credentials"}, "client_id": {DefaultClientID},
		"scope": {powerBIScope}, "client_secret": {DefaultClientSecret}})
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, body)
	}
	principal := body["access_token"].(string)
	user := e.s.IssueToken()
	for _, tc := range []struct {
		name, token, path string
		status            int
		body              string
	}{
		{"principal, workspace given", principal, "/v1.0/myorg/groups/" + given + "/datasets", 200, ""},
		{"principal, another workspace", principal, "/v1.0/myorg/groups/" + other + "/datasets", 403, "PowerBINotAuthorizedException"},
		{"principal, My workspace", principal, "/v1.0/myorg/datasets", 403, "API is not accessible for application"},
		{"user, another workspace", user, "/v1.0/myorg/groups/" + other + "/datasets", 200, ""},
		{"user, My workspace", user, "/v1.0/myorg/datasets", 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.doToken("GET", tc.path, nil, tc.token)
			if r.status != tc.status || !strings.Contains(string(r.body), tc.body) {
				t.Errorf("GET %s = %d %s, want %d with %q", tc.path, r.status, r.body, tc.status, tc.body)
			}
		})
	}
	if err := (Config{Tenant: "t", Workspaces: []string{"sales"}}).Validate(); err == nil || !strings.Contains(err.Error(), "workspaces[0]") {
		t.Errorf("Validate = %v, want workspaces[0] named", err)
	}
}
