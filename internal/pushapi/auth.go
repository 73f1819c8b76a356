package pushapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/managedidentity"
)

// TokenProvider hands out bearer tokens for the Power BI API.
type TokenProvider interface {
	// Token returns a valid access token, renewing it before it expires.
	Token(ctx context.Context) (string, error)
	// Invalidate reports that the API refused token (401, or 403
	// TokenExpired); the next Token call obtains a fresh one instead of
	// returning it again. Invalidating a token that was already replaced
	// does nothing, so concurrent refusals renew once.
	Invalidate(token string)
}

// AuthError is a failure to obtain a token. It never holds the secret.
type AuthError struct {
	// Method is the auth method (client_secret, client_certificate, ...).
	Method string
	// Status is the identity provider's HTTP status (0 when none came).
	Status int
	// Code is the OAuth error, e.g. "invalid_client".
	Code string
	// AADSTS is Entra ID's error code, e.g. "AADSTS7000215" (invalid
	// secret), "AADSTS700016" (unknown application), "AADSTS90002" (unknown
	// tenant); empty when the answer carried none.
	AADSTS string
	// Description is the first line of Entra ID's error_description, or the
	// transport error's text.
	Description string
	err         error
}

// Error implements error.
func (e *AuthError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "acquiring a Power BI token (%s)", e.Method)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.AADSTS != "" {
		b.WriteString(" " + e.AADSTS)
	}
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	return b.String()
}

// Unwrap returns the underlying error only when it carries no response
// (transport failures), so that errors.Is(err, context.Canceled) works.
func (e *AuthError) Unwrap() error { return e.err }

var aadstsPattern = regexp.MustCompile(`AADSTS\d+`)

// refusedForGood are Entra ID's codes for a credential refused until
// someone changes the configuration, the secret or the app registration,
// with what each means.
var refusedForGood = map[string]string{
	"AADSTS7000215": "invalid client secret (its Value, not its Secret ID, is needed)",
	"AADSTS7000222": "the client secret has expired",
	"AADSTS700016":  "unknown application: wrong client_id, or the app is in another tenant",
	"AADSTS90002":   "unknown tenant: wrong tenant_id or cloud",
	"AADSTS900023":  "tenant_id is not a valid tenant identifier",
	"AADSTS7000218": "no client credential was sent",
	"AADSTS700027":  "the certificate is not registered with the app, or its key does not match",
	"AADSTS700021":  "the client assertion names another application",
	"AADSTS50027":   "the client assertion is malformed",
	"AADSTS7000112": "the application is disabled",
	"AADSTS500011":  "the Power BI resource is not in the tenant",
	"AADSTS53003":   "blocked by a Conditional Access policy",
	"AADSTS70021":   "the app has no federated credential matching the token",
	"AADSTS700211":  "no federated credential trusts the token's issuer",
	"AADSTS700212":  "no federated credential accepts the token's audience",
	"AADSTS700213":  "no federated credential matches the token's subject",
	"AADSTS7002138": "the token's subject matches a federated credential only without case",
}

// Refused reports whether Entra ID refused the credential itself (unknown
// tenant or client, wrong or expired secret, unregistered certificate,
// unmatched federated credential): the same request cannot succeed until
// the configuration, the secret or the app registration changes.
func (e *AuthError) Refused() bool {
	_, ok := refusedForGood[e.AADSTS]
	return ok
}

// Meaning says in words what Entra ID's code means, "" when pushd does not
// know it.
func (e *AuthError) Meaning() string { return refusedForGood[e.AADSTS] }

// IsCredentialRefused reports whether err holds an AuthError that Refused.
func IsCredentialRefused(err error) bool {
	var ae *AuthError
	return errors.As(err, &ae) && ae.Refused()
}

// newAuthError turns an MSAL error into an AuthError, keeping Entra's codes
// and dropping anything that could echo the request (and so the secret).
func newAuthError(method string, err error, secrets ...string) *AuthError {
	ae := &AuthError{Method: method}
	var call msalerrors.CallErr
	if errors.As(err, &call) && call.Resp != nil {
		ae.Status = call.Resp.StatusCode
		var body []byte
		if call.Resp.Body != nil {
			body, _ = io.ReadAll(io.LimitReader(call.Resp.Body, 64<<10))
			call.Resp.Body = io.NopCloser(bytes.NewReader(body))
		}
		if len(body) == 0 && call.Err != nil {
			// MSAL's managed-identity client consumed the body and put it
			// in its error, after the first line.
			_, rest, _ := strings.Cut(call.Err.Error(), "\n")
			body = []byte(rest)
		}
		var eb struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
			Codes       []int  `json:"error_codes"`
			// Managed identity endpoints answer with these.
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &eb) == nil {
			ae.Code = eb.Error
			ae.Description = firstLine(eb.Description)
			if ae.Description == "" {
				ae.Description = firstLine(eb.Message)
			}
			ae.AADSTS = aadstsPattern.FindString(eb.Description)
			if ae.AADSTS == "" && len(eb.Codes) > 0 {
				ae.AADSTS = fmt.Sprintf("AADSTS%d", eb.Codes[0])
			}
		} else {
			ae.Description = firstLine(string(body))
		}
	} else {
		ae.Description = err.Error()
		ae.AADSTS = aadstsPattern.FindString(ae.Description)
		ae.err = err
	}
	for _, s := range secrets {
		if s != "" {
			ae.Description = strings.ReplaceAll(ae.Description, s, "<redacted>")
		}
	}
	return ae
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// NewTokenProvider builds the provider that AuthConfig describes (method
// inferred from the fields set when empty, see AuthConfig.ResolvedMethod).
// httpClient carries MSAL's traffic (nil: MSAL's default); m may be nil.
func NewTokenProvider(cfg Config, httpClient *http.Client, logger *slog.Logger, m *Metrics) (TokenProvider, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.WithEnvironment(os.Getenv)
	if err := cfg.Auth.Validate(); err != nil {
		return nil, err
	}
	ep, err := cfg.Endpoints()
	if err != nil {
		return nil, err
	}
	a := cfg.Auth
	method := a.ResolvedMethod()
	switch method {
	case AuthStaticToken:
		return &staticProvider{value: a.Token.Reveal(), file: a.TokenFile, metrics: m}, nil
	case AuthManagedIdentity:
		return newManagedIdentityProvider(a, ep, httpClient, logger, m)
	case AuthClientSecret, AuthClientCertificate, AuthWorkloadIdentity:
		return newConfidentialProvider(cfg, ep, method, httpClient, logger, m)
	}
	return nil, fmt.Errorf("auth.method: unknown method %q", method)
}

func newConfidentialProvider(cfg Config, ep Endpoints, method string, httpClient *http.Client, logger *slog.Logger, m *Metrics) (*msalProvider, error) {
	a := cfg.Auth
	var (
		cred   confidential.Credential
		err    error
		secret *secretSource
	)
	switch method {
	case AuthClientSecret:
		secret = &secretSource{value: a.ClientSecret.Reveal(), file: a.ClientSecretFile}
		if _, err := secret.load(); err != nil {
			return nil, err
		}
		if cred, err = secret.credential(); err != nil {
			return nil, err
		}
	case AuthClientCertificate:
		if cred, err = certificateCredential(a.CertificateFile); err != nil {
			return nil, err
		}
	case AuthWorkloadIdentity:
		if _, err := readFederatedToken(a.FederatedTokenFile); err != nil {
			return nil, err
		}
		// MSAL calls back at every sign-in: read the file each time, as
		// the kubelet rotates the token (hourly by default) in place.
		file := a.FederatedTokenFile
		cred = confidential.NewCredFromAssertionCallback(func(context.Context, confidential.AssertionRequestOptions) (string, error) {
			return readFederatedToken(file)
		})
	}
	store := &appTokenCache{}
	opts := []confidential.Option{confidential.WithCache(store)}
	if httpClient != nil {
		opts = append(opts, confidential.WithHTTPClient(httpClient))
	}
	if cfg.AuthorityURL != "" {
		// A custom authority (the emulator) is unknown to Microsoft's
		// instance discovery, which would call the real login host.
		opts = append(opts, confidential.WithInstanceDiscovery(false))
	}
	if a.SendX5C {
		opts = append(opts, confidential.WithX5C())
	}
	authority := ep.AuthorityHost + "/" + a.TenantID
	client, err := confidential.New(authority, a.ClientID, cred, opts...)
	if err != nil {
		return nil, fmt.Errorf("creating MSAL client for authority %s: %w", authority, err)
	}
	scopes := []string{ep.Scope}
	p := &msalProvider{method: method, logger: logger, metrics: m, sem: make(chan struct{}, 1)}
	p.acquire = func(ctx context.Context, force bool) (tokenResult, error) {
		// Calls are serialised by p.sem: client may be replaced here.
		if changed, err := secret.load(); err != nil {
			return tokenResult{}, &AuthError{Method: method, Description: err.Error(), err: err}
		} else if changed {
			cred, err := secret.credential()
			if err == nil {
				client, err = confidential.New(authority, a.ClientID, cred, opts...)
			}
			if err != nil {
				return tokenResult{}, &AuthError{Method: method, Description: err.Error(), err: err}
			}
			store.clear()
			logger.Info("client secret file changed; signing in with the new secret", "method", method, "file", a.ClientSecretFile)
		}
		if force {
			// Drop MSAL's cached token so it asks Entra for a new one.
			store.clear()
		}
		r, err := client.AcquireTokenByCredential(ctx, scopes)
		if err != nil {
			return tokenResult{}, newAuthError(method, err, secret.known()...)
		}
		return tokenResult{token: r.AccessToken, expiresOn: r.ExpiresOn, refreshOn: r.Metadata.RefreshOn,
			fromCache: r.Metadata.TokenSource == confidential.TokenSourceCache}, nil
	}
	return p, nil
}

// secretSource is the client secret, from the config or from a file that
// is read again whenever it changes (a rotated secret is picked up without
// a restart).
type secretSource struct {
	value, file string
	modTime     time.Time
	size        int64
	seen        []string // every secret read, to redact from errors
}

// load reads the file when it changed since the last load and reports
// whether the secret changed. A nil source (no secret) does nothing.
func (s *secretSource) load() (bool, error) {
	if s == nil || (s.file == "" && s.seen != nil) {
		return false, nil
	}
	v := s.value
	if s.file != "" {
		fi, err := os.Stat(s.file)
		if err != nil {
			return false, fmt.Errorf("auth.client_secret_file: %w", err)
		}
		if s.seen != nil && fi.ModTime().Equal(s.modTime) && fi.Size() == s.size {
			return false, nil
		}
		b, err := os.ReadFile(s.file)
		if err != nil {
			return false, fmt.Errorf("auth.client_secret_file: %w", err)
		}
		s.modTime, s.size = fi.ModTime(), fi.Size()
		v = strings.TrimSpace(string(b))
	}
	if v == "" {
		return false, errors.New("auth.client_secret: empty")
	}
	changed := v != s.value || s.seen == nil
	s.value = v
	if !slices.Contains(s.seen, v) {
		s.seen = append(s.seen, v)
	}
	return changed, nil
}

func (s *secretSource) credential() (confidential.Credential, error) {
	cred, err := confidential.NewCredFromSecret(s.value)
	if err != nil {
		return cred, fmt.Errorf("auth.client_secret: %w", err)
	}
	return cred, nil
}

// known returns the secrets read so far (nil for a nil source).
func (s *secretSource) known() []string {
	if s == nil {
		return nil
	}
	return s.seen
}

// certificateCredential reads a PEM file with the certificate and its
// unencrypted key.
func certificateCredential(file string) (confidential.Credential, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return confidential.Credential{}, fmt.Errorf("auth.certificate_file: %w", err)
	}
	certs, key, err := confidential.CertFromPEM(pem, "")
	if err != nil && bytes.Contains(pem, []byte("ENCRYPTED")) {
		return confidential.Credential{}, fmt.Errorf("auth.certificate_file %s: the private key is encrypted; pushd needs it unencrypted (openssl pkcs8 -topk8 -nocrypt -in key.pem -out plain.pem) and protected by file permissions: %w", file, err)
	}
	if err != nil {
		return confidential.Credential{}, fmt.Errorf("auth.certificate_file %s: %w", file, err)
	}
	cred, err := confidential.NewCredFromCert(certs, key)
	if err != nil {
		return cred, fmt.Errorf("auth.certificate_file %s: %w", file, err)
	}
	return cred, nil
}

// readFederatedToken reads the federated token file (trimmed); an empty
// file is an error.
func readFederatedToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("auth.federated_token_file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("auth.federated_token_file %s: empty", file)
	}
	return t, nil
}

func newManagedIdentityProvider(a AuthConfig, ep Endpoints, httpClient *http.Client, logger *slog.Logger, m *Metrics) (*msalProvider, error) {
	if os.Getenv(EnvFederatedTokenFile) != "" {
		logger.Warn("AZURE_FEDERATED_TOKEN_FILE is set (AKS workload identity), but auth.method is managed_identity, which asks the node's instance metadata service instead: set auth.method: workload_identity",
			"method", AuthManagedIdentity)
	}
	id := managedidentity.SystemAssigned()
	switch {
	case a.ManagedIdentityClientID != "":
		id = managedidentity.UserAssignedClientID(a.ManagedIdentityClientID)
	case a.ManagedIdentityResourceID != "":
		id = managedidentity.UserAssignedResourceID(a.ManagedIdentityResourceID)
	}
	var opts []managedidentity.ClientOption
	if httpClient != nil {
		opts = append(opts, managedidentity.WithHTTPClient(httpClient))
	}
	client, err := managedidentity.New(id, opts...)
	if err != nil {
		return nil, fmt.Errorf("creating MSAL managed identity client: %w", err)
	}
	resource := strings.TrimSuffix(ep.Scope, "/.default")
	p := &msalProvider{method: AuthManagedIdentity, logger: logger, metrics: m, sem: make(chan struct{}, 1)}
	p.acquire = func(ctx context.Context, force bool) (tokenResult, error) {
		var o []managedidentity.AcquireTokenOption
		if force {
			// MSAL bypasses its managed-identity cache when claims are set;
			// the sources pushd runs on do not forward them.
			o = append(o, managedidentity.WithClaims("{}"))
		}
		r, err := client.AcquireToken(ctx, resource, o...)
		if err != nil {
			return tokenResult{}, newAuthError(AuthManagedIdentity, err)
		}
		return tokenResult{token: r.AccessToken, expiresOn: r.ExpiresOn, refreshOn: r.Metadata.RefreshOn,
			fromCache: r.Metadata.TokenSource == managedidentity.TokenSource(1)}, nil
	}
	return p, nil
}

// appTokenCache is MSAL's cache storage: in memory, and clearable so that
// Invalidate can force a new token from Entra (MSAL has no other way to
// bypass its app-token cache than sending claims to the authority).
type appTokenCache struct {
	mu   sync.Mutex
	data []byte
}

// Replace implements cache.ExportReplace.
func (c *appTokenCache) Replace(_ context.Context, u cache.Unmarshaler, _ cache.ReplaceHints) error {
	c.mu.Lock()
	data := c.data
	c.mu.Unlock()
	if data == nil {
		data = []byte("{}")
	}
	return u.Unmarshal(data)
}

// Export implements cache.ExportReplace.
func (c *appTokenCache) Export(_ context.Context, m cache.Marshaler, _ cache.ExportHints) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.data = b
	c.mu.Unlock()
	return nil
}

func (c *appTokenCache) clear() {
	c.mu.Lock()
	c.data = nil
	c.mu.Unlock()
}

type tokenResult struct {
	token                string
	expiresOn, refreshOn time.Time
	fromCache            bool
}

// msalProvider wraps an MSAL client with a small cache of its own, so that
// the hot path (every request) is a mutex and a time comparison, and so a
// failed renewal can keep using a token that is still valid.
type msalProvider struct {
	method  string
	acquire func(ctx context.Context, force bool) (tokenResult, error)
	logger  *slog.Logger
	metrics *Metrics
	sem     chan struct{} // one acquisition at a time

	mu        sync.Mutex
	token     string
	expiresOn time.Time
	renewAt   time.Time
	invalid   bool
	refused   string // the AADSTS code of the refusal last logged
}

// logRefusal logs, once per code until a token is obtained again, that
// Entra ID refuses the credential, with the fix. Requests keep retrying
// with backoff meanwhile: a rotated secret file or a corrected app
// registration may fix it without a restart.
func (p *msalProvider) logRefusal(err error) {
	var ae *AuthError
	if !errors.As(err, &ae) || !ae.Refused() {
		return
	}
	p.mu.Lock()
	seen := p.refused == ae.AADSTS
	p.refused = ae.AADSTS
	p.mu.Unlock()
	if seen {
		return
	}
	p.logger.Error("Entra ID refuses the credential; requests wait and retry with backoff until it is corrected",
		"method", p.method, "aadsts", ae.AADSTS, "reason", ae.Meaning(),
		"fix", "correct powerbi.auth or the app registration (a rotated client_secret_file is read again); `pushd doctor -c <config>` explains "+ae.AADSTS,
		"err", err)
}

// expiryMargin is how long before expiry a token is renewed (MSAL itself
// treats a token as expired 5 minutes early).
const expiryMargin = 5 * time.Minute

// Token implements TokenProvider.
func (p *msalProvider) Token(ctx context.Context) (string, error) {
	if t, ok := p.current(time.Now()); ok {
		return t, nil
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
	defer func() { <-p.sem }()
	now := time.Now()
	if t, ok := p.current(now); ok { // renewed while we waited
		return t, nil
	}
	p.mu.Lock()
	force, old, oldExpiry := p.invalid, p.token, p.expiresOn
	p.mu.Unlock()

	r, err := p.acquire(ctx, force)
	if err != nil {
		p.metrics.tokenFailed(p.method)
		p.logRefusal(err)
		if !force && old != "" && now.Before(oldExpiry.Add(-30*time.Second)) {
			p.logger.Warn("token renewal failed; using the current token until it expires",
				"method", p.method, "expires_on", oldExpiry, "err", err)
			return old, nil
		}
		return "", err
	}
	if r.token == "" {
		p.metrics.tokenFailed(p.method)
		return "", &AuthError{Method: p.method, Description: "identity provider returned an empty access token"}
	}
	if force && r.token == old {
		p.logger.Warn("identity provider returned the refused token again", "method", p.method)
	}
	renewAt := renewTime(now, r.expiresOn, r.refreshOn)
	p.mu.Lock()
	p.token, p.expiresOn, p.renewAt, p.invalid = r.token, r.expiresOn, renewAt, false
	refused := p.refused
	p.refused = ""
	p.mu.Unlock()
	if refused != "" {
		p.logger.Info("Entra ID accepts the credential again", "method", p.method, "aadsts", refused)
	}
	if r.token != old {
		p.metrics.tokenRenewed(p.method)
		p.logger.Debug("access token obtained", "method", p.method, "expires_on", r.expiresOn,
			"renew_at", renewAt, "from_cache", r.fromCache)
	}
	return r.token, nil
}

func (p *msalProvider) current(now time.Time) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.token != "" && !p.invalid && now.Before(p.renewAt) {
		return p.token, true
	}
	return "", false
}

// renewTime is when to renew a token: MSAL's RefreshOn when it gave one,
// else expiryMargin before expiry, but never later than halfway through a
// short-lived token's life.
func renewTime(now, expiresOn, refreshOn time.Time) time.Time {
	margin := min(expiryMargin, expiresOn.Sub(now)/2)
	at := expiresOn.Add(-margin)
	if !refreshOn.IsZero() && refreshOn.Before(at) {
		at = refreshOn
	}
	return at
}

// Invalidate implements TokenProvider.
func (p *msalProvider) Invalidate(token string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if token == p.token {
		p.invalid = true
	}
}

// staticProvider serves a fixed token, or the content of a file re-read
// whenever its modification time or size changes (e.g. a token refreshed by
// `az account get-access-token` in a cron job).
type staticProvider struct {
	value   string
	file    string
	metrics *Metrics

	mu      sync.Mutex
	token   string
	modTime time.Time
	size    int64
	reread  bool
}

// Token implements TokenProvider.
func (s *staticProvider) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if s.file == "" {
		if s.value == "" {
			return "", &AuthError{Method: AuthStaticToken, Description: "auth.token is empty"}
		}
		return s.value, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.file)
	if err != nil {
		s.metrics.tokenFailed(AuthStaticToken)
		return "", &AuthError{Method: AuthStaticToken, Description: "reading auth.token_file: " + err.Error(), err: err}
	}
	if s.token != "" && !s.reread && fi.ModTime().Equal(s.modTime) && fi.Size() == s.size {
		return s.token, nil
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		s.metrics.tokenFailed(AuthStaticToken)
		return "", &AuthError{Method: AuthStaticToken, Description: "reading auth.token_file: " + err.Error(), err: err}
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		s.metrics.tokenFailed(AuthStaticToken)
		return "", &AuthError{Method: AuthStaticToken, Description: "auth.token_file " + s.file + " is empty"}
	}
	if t != s.token {
		s.metrics.tokenRenewed(AuthStaticToken)
	}
	s.token, s.modTime, s.size, s.reread = t, fi.ModTime(), fi.Size(), false
	return t, nil
}

// Invalidate implements TokenProvider: the token file is read again on the
// next call (a fixed token cannot be renewed).
func (s *staticProvider) Invalidate(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if token == s.token {
		s.reread = true
	}
}
