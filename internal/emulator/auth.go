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
	"slices"
	"strconv"
	"strings"
	"time"
)

// tokenInfo is what the emulator knows about an issued access token.
type tokenInfo struct {
	expires time.Time
	subject string // client id, managed identity id, or test user
	// app: issued to an application identity (service principal or
	// managed identity), which sees only Config.Workspaces when set.
	app bool
	x5c bool // obtained with a client assertion that carried x5c
}

// TokenGrant is what the emulator knows of how an access token it issued
// was obtained, for tests of the client's authentication options.
type TokenGrant struct {
	// Subject is the identity the token was issued to: the client id of a
	// service principal, or the managed identity as the request selected
	// it (client_id, mi_res_id or object_id; the system-assigned identity's
	// client id when none).
	Subject string
	// X5C reports that the client assertion carried its certificate chain
	// (the x5c header that subject name/issuer authentication needs).
	X5C bool
}

// TokenGrant returns how token was obtained; false for a token the
// emulator did not issue.
func (s *Server) TokenGrant(token string) (TokenGrant, bool) {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	info, ok := s.tokens[token]
	return TokenGrant{Subject: info.subject, X5C: info.x5c}, ok
}

// assertionX5C reports whether a client assertion's JOSE header holds x5c.
func assertionX5C(jwt string) bool {
	head, _, _ := strings.Cut(jwt, ".")
	var h struct {
		X5c []string `json:"x5c"`
	}
	return decodeSegment(head, &h) == nil && len(h.X5c) > 0
}

// tokenGrace is how long an expired token is remembered, so that it gets
// 403 TokenExpired rather than 401.
const tokenGrace = 24 * time.Hour

func lower(s string) string { return strings.ToLower(s) }

func normResource(r string) string {
	return strings.TrimRight(lower(strings.TrimSpace(r)), "/")
}

// issue makes an opaque access token valid for lifetime.
func (s *Server) issue(subject string, app bool, lifetime time.Duration) (string, time.Time) {
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
	s.tokens[tok] = tokenInfo{expires: exp, subject: subject, app: app}
	s.tokMu.Unlock()
	return tok, exp
}

// IssueToken returns a valid bearer token for the configured lifetime, for
// tests that skip MSAL.
func (s *Server) IssueToken() string {
	tok, _ := s.issue("emulator-test@"+s.cfg.Tenant, false, s.cfg.TokenLifetime)
	return tok
}

// IssueTokenFor returns a bearer token that expires after lifetime (a
// negative lifetime gives an already expired token).
func (s *Server) IssueTokenFor(lifetime time.Duration) string {
	tok, _ := s.issue("emulator-test@"+s.cfg.Tenant, false, lifetime)
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
	tok, _ := s.issue(client.ID, true, lifetime)
	if assertionX5C(form.Get("client_assertion")) {
		s.tokMu.Lock()
		info := s.tokens[tok]
		info.x5c = true
		s.tokens[tok] = info
		s.tokMu.Unlock()
	}
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
	if len(header.X5c) > 0 {
		// Subject name and issuer sign-in: the chain comes with the
		// assertion; a certificate registered by thumbprint is found by it.
		cert, code, text := s.x5cCertificate(c, header)
		if code != 0 {
			return code, text
		}
		if err := verifyJWS(header.Alg, cert.PublicKey, []byte(parts[0]+"."+parts[1]), sig); err != nil {
			return 700027, fmt.Sprintf("Client assertion failed signature validation (alg %s).", header.Alg)
		}
		return s.checkCertClaims(r, tenant, c, claims)
	}
	if len(c.Certificates) == 0 {
		return 700027, fmt.Sprintf("The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '%s%s', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '%s'.]", header.X5tS256, header.X5t, c.ID)
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
	return s.checkCertClaims(r, tenant, c, claims)
}

// checkCertClaims checks a certificate assertion's aud, iss, sub and times.
func (s *Server) checkCertClaims(r *http.Request, tenant string, c Client, claims assertionClaims) (int, string) {
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
	id, ok := s.managedIdentityFor(q)
	if !ok {
		s.stats.tokenError()
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "Unable to load the proper Managed Identity.", "correlationId": newUUID()})
		return
	}
	clientID, subject := id.ClientID, id.ClientID
	if id.ResourceID != "" && q.Get("mi_res_id") != "" {
		subject = id.ResourceID
	}
	tok, exp := s.issue(subject, true, s.cfg.TokenLifetime)
	s.stats.tokenIssued()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"expires_on":   strconv.FormatInt(exp.Unix(), 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    clientID,
	})
}

// ManagedIdentity is a user-assigned managed identity the emulator's
// managed-identity endpoint knows, found by client id or resource id.
type ManagedIdentity struct {
	ClientID   string
	ResourceID string // /subscriptions/.../userAssignedIdentities/NAME
}

// managedIdentityFor finds the identity a managed-identity request asks
// for: the system-assigned one without client_id, mi_res_id or object_id
// (when there is one), else a user-assigned one the emulator was told
// about, as App Service does (anything else answers 400 "Unable to load the
// proper Managed Identity.").
func (s *Server) managedIdentityFor(q url.Values) (ManagedIdentity, bool) {
	clientID, resourceID, objectID := q.Get("client_id"), q.Get("mi_res_id"), q.Get("object_id")
	if clientID == "" && resourceID == "" && objectID == "" {
		return ManagedIdentity{ClientID: s.cfg.ManagedIdentityClientID}, !s.cfg.NoSystemAssignedIdentity
	}
	for _, id := range s.cfg.UserAssignedIdentities {
		switch {
		case clientID != "" && strings.EqualFold(clientID, id.ClientID),
			resourceID != "" && strings.EqualFold(resourceID, id.ResourceID):
			return id, true
		}
	}
	return ManagedIdentity{}, false
}

// member checks, when Config.Workspaces is set, that an application
// identity's token names a workspace it was given: service principals
// cannot use My workspace (403 "API is not accessible for application") and
// see only the workspaces they are members of (403, reference §4.3: a
// principal that is not a member; the body is the emulator's choice).
func (s *Server) member(w http.ResponseWriter, r *http.Request, workspace string) bool {
	if len(s.cfg.Workspaces) == 0 {
		return true
	}
	_, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	s.tokMu.Lock()
	info := s.tokens[strings.TrimSpace(tok)]
	s.tokMu.Unlock()
	if !info.app {
		return true
	}
	if workspace == "" {
		writeJSON(w, http.StatusForbidden, map[string]any{"Message": "API is not accessible for application"})
		return false
	}
	for _, g := range s.cfg.Workspaces {
		if strings.EqualFold(g, workspace) {
			return true
		}
	}
	writeJSON(w, http.StatusForbidden, errorBody{Error: apiError{
		Code:     "PowerBINotAuthorizedException",
		PBIError: &pbiError{Code: "PowerBINotAuthorizedException", Parameters: map[string]any{}, Details: []any{}, ExceptionCulprit: 1},
	}})
	return false
}

// x5cCertificate finds the certificate of an assertion that carries its
// chain (x5c): the leaf must match the x5t#S256/x5t header when present,
// and be either registered with the client by thumbprint, or — subject
// name and issuer sign-in — carry a subject name registered with the client
// and chain to a trusted issuer (Config.TrustedIssuers). Anything else is
// refused with AADSTS700027, as Entra refuses a key it does not know.
func (s *Server) x5cCertificate(c Client, h assertionHeader) (*x509.Certificate, int, string) {
	notFound := func(thumb string) (*x509.Certificate, int, string) {
		return nil, 700027, fmt.Sprintf("The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '%s', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '%s'.]", thumb, c.ID)
	}
	var chain []*x509.Certificate
	for _, b64 := range h.X5c {
		der, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, 50027, "JWT token is invalid or malformed (x5c)."
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, 50027, "JWT token is invalid or malformed (x5c certificate)."
		}
		chain = append(chain, cert)
	}
	leaf := chain[0]
	s256, s1 := sha256.Sum256(leaf.Raw), sha1.Sum(leaf.Raw) //nolint:gosec // thumbprint, not security
	thumb := strings.ToUpper(fmt.Sprintf("%x", s1[:]))
	if (h.X5tS256 != "" && !thumbEqual(h.X5tS256, s256[:])) || (h.X5t != "" && !thumbEqual(h.X5t, s1[:])) {
		return nil, 700027, "Client assertion contains an invalid signature: the x5c leaf certificate is not the one the thumbprint names."
	}
	for _, cert := range c.Certificates {
		if cert.Equal(leaf) {
			return leaf, 0, ""
		}
	}
	if len(c.SubjectNames) == 0 || len(s.cfg.TrustedIssuers) == 0 {
		return notFound(thumb)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, ca := range s.cfg.TrustedIssuers {
		roots.AddCert(ca)
	}
	for _, ca := range chain[1:] {
		inter.AddCert(ca)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: s.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return notFound(thumb)
	}
	for _, name := range c.SubjectNames {
		if strings.EqualFold(name, leaf.Subject.CommonName) || slices.ContainsFunc(leaf.DNSNames, func(d string) bool { return strings.EqualFold(d, name) }) {
			return leaf, 0, ""
		}
	}
	return notFound(thumb)
}
