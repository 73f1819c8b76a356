package emulator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is a SHA-1 thumbprint by definition (RFC 7515)
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// tokenInfo is what the emulator knows about an issued access token.
type tokenInfo struct {
	expires time.Time
	subject string // client id, managed identity id, or test user
}

// tokenGrace is how long an expired token is remembered, so that it gets
// 403 TokenExpired rather than 401.
const tokenGrace = 24 * time.Hour

func lower(s string) string { return strings.ToLower(s) }

func normResource(r string) string {
	return strings.TrimRight(lower(strings.TrimSpace(r)), "/")
}

// issue makes an opaque access token valid for lifetime.
func (s *Server) issue(subject string, lifetime time.Duration) (string, time.Time) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	tok := "emu." + base64.RawURLEncoding.EncodeToString(b[:])
	now := s.now()
	exp := now.Add(lifetime)
	s.tokMu.Lock()
	if len(s.tokens) >= 4096 {
		for k, v := range s.tokens {
			if now.Sub(v.expires) > tokenGrace {
				delete(s.tokens, k)
			}
		}
	}
	s.tokens[tok] = tokenInfo{expires: exp, subject: subject}
	s.tokMu.Unlock()
	return tok, exp
}

// IssueToken returns a valid bearer token for the configured lifetime, for
// tests that skip MSAL.
func (s *Server) IssueToken() string {
	tok, _ := s.issue("emulator-test@"+s.cfg.Tenant, s.cfg.TokenLifetime)
	return tok
}

// IssueTokenFor returns a bearer token that expires after lifetime (a
// negative lifetime gives an already expired token).
func (s *Server) IssueTokenFor(lifetime time.Duration) string {
	tok, _ := s.issue("emulator-test@"+s.cfg.Tenant, lifetime)
	return tok
}

// authorize checks the bearer token: missing or unknown → 401
// PowerBINotAuthorizedException, expired → 403 TokenExpired.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	var info tokenInfo
	if ok && strings.EqualFold(scheme, "Bearer") && tok != "" {
		s.tokMu.Lock()
		info, ok = s.tokens[tok]
		s.tokMu.Unlock()
	} else {
		ok = false
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization_uri="%s/%s/oauth2/v2.0/authorize", error="invalid_token"`, s.url, s.cfg.Tenant))
		writeJSON(w, http.StatusUnauthorized, errorBody{Error: apiError{
			Code:     "PowerBINotAuthorizedException",
			PBIError: &pbiError{Code: "PowerBINotAuthorizedException", Parameters: map[string]any{}, Details: []any{}, ExceptionCulprit: 1},
		}})
		return false
	}
	if !s.now().Before(info.expires) {
		writeError(w, http.StatusForbidden, "TokenExpired", "Access token has expired, resubmit with a new access token")
		return false
	}
	return true
}

// subject is the identity behind a request's token (for configuredBy).
func (s *Server) subject(r *http.Request) string {
	_, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	return s.tokens[strings.TrimSpace(tok)].subject
}

// entraError is the error JSON of the Entra ID token endpoint.
type entraError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCodes       []int  `json:"error_codes"`
	Timestamp        string `json:"timestamp"`
	TraceID          string `json:"trace_id"`
	CorrelationID    string `json:"correlation_id"`
	ErrorURI         string `json:"error_uri,omitempty"`
}

func (s *Server) writeEntraError(w http.ResponseWriter, r *http.Request, status int, code string, aadsts int, text string) {
	s.stats.tokenError()
	trace, corr := newUUID(), r.Header.Get("client-request-id")
	if corr == "" {
		corr = newUUID()
	}
	now := s.now().UTC()
	writeJSON(w, status, entraError{
		Error: code,
		ErrorDescription: fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s",
			aadsts, text, trace, corr, now.Format("2006-01-02 15:04:05Z")),
		ErrorCodes:    []int{aadsts},
		Timestamp:     now.Format("2006-01-02 15:04:05Z"),
		TraceID:       trace,
		CorrelationID: corr,
		ErrorURI:      s.url + "/error?code=" + strconv.Itoa(aadsts),
	})
}

// tokenOutage reports whether the token endpoints are down (a fault).
func (s *Server) tokenOutage() bool {
	f := s.currentFaults()
	return f.TokenOutage || s.now().Before(f.TokenOutageUntil)
}

func (s *Server) tenantOK(t string) bool { return strings.EqualFold(t, s.cfg.Tenant) }

func (s *Server) scheme() string {
	if s.cfg.TLS {
		return "https"
	}
	return "http"
}

// openIDConfiguration serves {tenant}/v2.0/.well-known/openid-configuration
// with endpoints on the host the client used (MSAL checks the issuer host
// equals the authority host).
func (s *Server) openIDConfiguration(w *recorder, r *http.Request, _ string) {
	tenant := r.PathValue("tenant")
	if !s.tenantOK(tenant) {
		s.writeEntraError(w, r, http.StatusBadRequest, "invalid_tenant", 90002, fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	}
	base := s.scheme() + "://" + r.Host + "/" + tenant
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                base + "/v2.0",
		"request_uri_parameter_supported":       false,
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
		"end_session_endpoint":                  base + "/oauth2/v2.0/logout",
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "emulator",
	})
}

// token serves the client-credentials grant with a client secret (form or
// HTTP Basic) or a certificate assertion.
func (s *Server) token(w *recorder, r *http.Request, _ string) {
	tenant := r.PathValue("tenant")
	if s.tokenOutage() {
		s.writeEntraError(w, r, http.StatusServiceUnavailable, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again. (outage injected by the emulator)")
		return
	}
	if !s.tenantOK(tenant) {
		s.writeEntraError(w, r, http.StatusBadRequest, "invalid_request", 90002, fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	}
	if err := r.ParseForm(); err != nil {
		s.writeEntraError(w, r, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	form := r.PostForm
	if gt := form.Get("grant_type"); gt != "client_credentials" {
		if gt == "" {
			s.writeEntraError(w, r, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		} else {
			s.writeEntraError(w, r, http.StatusBadRequest, "unsupported_grant_type", 70003, fmt.Sprintf("The app requested an unsupported grant type '%s'.", gt))
		}
		return
	}
	clientID, secret := form.Get("client_id"), form.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		u, _ = url.QueryUnescape(u)
		p, _ = url.QueryUnescape(p)
		if clientID == "" {
			clientID = u
		}
		secret = p
	}
	if clientID == "" {
		s.writeEntraError(w, r, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	resource, ok := s.scopeResource(w, r, form.Get("scope"))
	if !ok {
		return
	}
	client, known := s.clients[lower(clientID)]
	if !known {
		s.writeEntraError(w, r, http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.", clientID, s.cfg.Tenant))
		return
	}
	switch assertion := form.Get("client_assertion"); {
	case assertion != "":
		if at := form.Get("client_assertion_type"); at != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			s.writeEntraError(w, r, http.StatusBadRequest, "invalid_request", 50027, fmt.Sprintf("Invalid client_assertion_type '%s'.", at))
			return
		}
		if code, text := s.checkAssertion(r, tenant, client, assertion); code != 0 {
			s.writeEntraError(w, r, http.StatusUnauthorized, "invalid_client", code, text)
			return
		}
	case secret != "":
		if client.Secret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(client.Secret)) != 1 {
			s.writeEntraError(w, r, http.StatusUnauthorized, "invalid_client", 7000215, fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", clientID))
			return
		}
	default:
		s.writeEntraError(w, r, http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	}
	lifetime := s.cfg.TokenLifetime
	tok, _ := s.issue(client.ID, lifetime)
	s.stats.tokenIssued()
	sec := int(lifetime / time.Second)
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     sec,
		"ext_expires_in": sec,
		"access_token":   tok,
		"scope":          resource + "/.default",
	})
}

// scopeResource checks the scope list: exactly one "<resource>/.default"
// for an accepted resource, plus MSAL's openid/offline_access/profile.
func (s *Server) scopeResource(w http.ResponseWriter, r *http.Request, scope string) (string, bool) {
	var resources []string
	for _, sc := range strings.Fields(scope) {
		switch sc {
		case "openid", "offline_access", "profile", "email":
			continue
		}
		res, ok := strings.CutSuffix(sc, "/.default")
		if !ok {
			s.writeEntraError(w, r, http.StatusBadRequest, "invalid_scope", 1002012, fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", sc))
			return "", false
		}
		resources = append(resources, res)
	}
	if len(resources) != 1 {
		s.writeEntraError(w, r, http.StatusBadRequest, "invalid_scope", 70011, fmt.Sprintf("The provided request must include a 'scope' input parameter with exactly one resource. The provided value for the input parameter 'scope' is not valid: '%s'.", scope))
		return "", false
	}
	if !s.res[normResource(resources[0])] {
		s.writeEntraError(w, r, http.StatusBadRequest, "invalid_resource", 500011, fmt.Sprintf("The resource principal named %s was not found in the tenant named %s. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.", resources[0], s.cfg.Tenant))
		return "", false
	}
	return resources[0], true
}

// assertion skew tolerated on exp and nbf, as Entra does.
const assertionSkew = 5 * time.Minute

// assertionHeader is the JOSE header of a client assertion.
type assertionHeader struct {
	Alg     string   `json:"alg"`
	X5t     string   `json:"x5t"`
	X5tS256 string   `json:"x5t#S256"`
	X5c     []string `json:"x5c"`
}

// assertionClaims are the claims of a client assertion the emulator checks.
type assertionClaims struct {
	Aud json.RawMessage `json:"aud"`
	Iss string          `json:"iss"`
	Sub string          `json:"sub"`
	Exp json.Number     `json:"exp"`
	Nbf json.Number     `json:"nbf"`
}

// checkAssertion verifies a client_assertion JWT. One whose iss or sub is
// the client id is a certificate assertion (checkCertAssertion); any other
// is a federated token (checkFederated). It returns 0 or the AADSTS code
// and text.
func (s *Server) checkAssertion(r *http.Request, tenant string, c Client, jwt string) (int, string) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return 50027, "JWT token is invalid or malformed."
	}
	var header assertionHeader
	var claims assertionClaims
	if err := decodeSegment(parts[0], &header); err != nil {
		return 50027, "JWT token is invalid or malformed (header)."
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return 50027, "JWT token is invalid or malformed (claims)."
	}
	if !strings.EqualFold(claims.Iss, c.ID) && !strings.EqualFold(claims.Sub, c.ID) {
		return s.checkFederated(c, jwt, header, claims)
	}
	return s.checkCertAssertion(r, tenant, c, parts, header, claims)
}

// checkCertAssertion verifies a certificate assertion: signature (RS256,
// PS256 or ES256) by a certificate registered for the client (chosen by
// x5t#S256 or x5t when present), aud = this token endpoint, iss = sub =
// client id, and the validity times.
func (s *Server) checkCertAssertion(r *http.Request, tenant string, c Client, parts []string, header assertionHeader, claims assertionClaims) (int, string) {
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return 50027, "JWT token is invalid or malformed (signature)."
	}
	if len(c.Certificates) == 0 {
		return 700027, fmt.Sprintf("Client assertion failed signature validation: no certificate is registered for app '%s'.", c.ID)
	}
	var candidates []*x509.Certificate
	for _, cert := range c.Certificates {
		s256 := sha256.Sum256(cert.Raw)
		s1 := sha1.Sum(cert.Raw) //nolint:gosec // thumbprint, not security
		switch {
		case header.X5tS256 != "":
			if thumbEqual(header.X5tS256, s256[:]) {
				candidates = append(candidates, cert)
			}
		case header.X5t != "":
			if thumbEqual(header.X5t, s1[:]) {
				candidates = append(candidates, cert)
			}
		default:
			candidates = append(candidates, cert)
		}
	}
	if len(candidates) == 0 {
		return 700027, fmt.Sprintf("Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '%s%s']", header.X5tS256, header.X5t)
	}
	signed := []byte(parts[0] + "." + parts[1])
	verified := false
	for _, cert := range candidates {
		if verifyJWS(header.Alg, cert.PublicKey, signed, sig) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return 700027, fmt.Sprintf("Client assertion failed signature validation (alg %s).", header.Alg)
	}
	if !s.audienceOK(r, tenant, claims.Aud) {
		return 700212, fmt.Sprintf("No matching federated identity record found for presented assertion audience '%s'.", strings.Trim(string(claims.Aud), `"`))
	}
	if !strings.EqualFold(claims.Iss, c.ID) || !strings.EqualFold(claims.Sub, c.ID) {
		return 700021, fmt.Sprintf("Client assertion application identifier doesn't match 'client_id' parameter (iss %q, sub %q).", claims.Iss, claims.Sub)
	}
	return s.checkAssertionTimes(claims)
}

// checkAssertionTimes checks exp (required) and nbf with Entra's skew.
func (s *Server) checkAssertionTimes(claims assertionClaims) (int, string) {
	now := s.now()
	exp, err := numericDate(claims.Exp)
	if err != nil || exp.IsZero() {
		return 50027, "JWT token is invalid or malformed (exp)."
	}
	nbf, err := numericDate(claims.Nbf)
	if err != nil {
		return 50027, "JWT token is invalid or malformed (nbf)."
	}
	if now.After(exp.Add(assertionSkew)) || (!nbf.IsZero() && now.Add(assertionSkew).Before(nbf)) {
		return 700024, fmt.Sprintf("Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s.", now.UTC().Format(time.RFC3339), nbf.UTC().Format(time.RFC3339), exp.UTC().Format(time.RFC3339))
	}
	return 0, ""
}

// audiences reads an aud claim: a string or an array of strings.
func audiences(raw json.RawMessage) []string {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}
	}
	var many []string
	_ = json.Unmarshal(raw, &many)
	return many
}

// audienceOK accepts this server's token endpoint for the tenant (any host
// spelling the client reached us by, case-insensitively).
func (s *Server) audienceOK(r *http.Request, tenant string, raw json.RawMessage) bool {
	for _, a := range audiences(raw) {
		u, err := url.Parse(a)
		if err != nil {
			continue
		}
		if !strings.EqualFold(u.Host, r.Host) {
			continue
		}
		if strings.EqualFold(strings.TrimSuffix(u.Path, "/"), "/"+tenant+"/oauth2/v2.0/token") || strings.EqualFold(strings.TrimSuffix(u.Path, "/"), "/"+s.cfg.Tenant+"/oauth2/v2.0/token") {
			return true
		}
	}
	return false
}

func thumbEqual(got string, want []byte) bool {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(got); err == nil && subtle.ConstantTimeCompare(b, want) == 1 {
			return true
		}
	}
	return false
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return fmt.Errorf("decoding JWT segment: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding JWT segment JSON: %w", err)
	}
	return nil
}

func numericDate(n json.Number) (time.Time, error) {
	if n == "" {
		return time.Time{}, nil
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, fmt.Errorf("numeric date %q: %w", n, err)
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), nil
}

// verifyJWS checks a JWS signature with a certificate's public key.
func verifyJWS(alg string, pub crypto.PublicKey, signed, sig []byte) error {
	h := sha256.Sum256(signed)
	switch alg {
	case "RS256", "PS256":
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("alg %s needs an RSA certificate", alg)
		}
		if alg == "RS256" {
			return rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig)
		}
		return rsa.VerifyPSS(k, crypto.SHA256, h[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	case "ES256":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || len(sig) != 64 {
			return errors.New("alg ES256 needs an ECDSA certificate and a 64-byte signature")
		}
		rr, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(k, h[:], rr, ss) {
			return errors.New("ES256 signature does not verify")
		}
		return nil
	}
	return fmt.Errorf("unsupported JWS alg %q", alg)
}

// managedIdentity serves the App Service style endpoint that MSAL's
// apps/managedidentity uses when IDENTITY_ENDPOINT and IDENTITY_HEADER are
// set: GET ?api-version=2019-08-01&resource=...[&client_id|mi_res_id|object_id]
// with header X-IDENTITY-HEADER.
func (s *Server) managedIdentity(w *recorder, r *http.Request, _ string) {
	if s.tokenOutage() {
		s.stats.tokenError()
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"statusCode": 503, "message": "The managed identity endpoint is unavailable (outage injected by the emulator)."})
		return
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-IDENTITY-HEADER")), []byte(s.cfg.IdentityHeader)) != 1 {
		s.stats.tokenError()
		writeJSON(w, http.StatusUnauthorized, map[string]any{"statusCode": 401, "message": "The X-IDENTITY-HEADER header is missing or wrong."})
		return
	}
	q := r.URL.Query()
	if v := q.Get("api-version"); v != "2019-08-01" {
		s.stats.tokenError()
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": fmt.Sprintf("api-version %q is not supported; want 2019-08-01.", v)})
		return
	}
	resource := q.Get("resource")
	if !s.res[normResource(resource)] {
		s.stats.tokenError()
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": fmt.Sprintf("resource %q is not known to the emulator.", resource)})
		return
	}
	clientID := s.cfg.ManagedIdentityClientID
	if v := q.Get("client_id"); v != "" {
		clientID = v
	}
	subject := clientID
	if v := q.Get("mi_res_id"); v != "" {
		subject = v
	} else if v := q.Get("object_id"); v != "" {
		subject = v
	}
	tok, exp := s.issue(subject, s.cfg.TokenLifetime)
	s.stats.tokenIssued()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"expires_on":   strconv.FormatInt(exp.Unix(), 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    clientID,
	})
}
