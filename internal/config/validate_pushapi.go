package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/pushapi"
)

// Power BI's documented limits for push datasets, the defaults of Limits
// and the bounds of batcher.Config.
const (
	maxRowsPerRequest     = 10000
	maxBytesPerRequest    = 16000000
	requestsPerMinute     = 120
	rowsPerHour           = 1000000
	maxInFlight           = 5
	largeTableRows        = 250000
	largeTableRequestsPer = 120
)

// cloudNames lists the clouds accepted in powerbi.cloud.
func cloudNames() []string { return []string{"public", "usgov", "usgovhigh", "usdod", "china"} }

// Auth methods accepted in powerbi.auth.method.
const (
	AuthClientSecret      = "client_secret"
	AuthClientCertificate = "client_certificate"
	AuthManagedIdentity   = "managed_identity"
	AuthStaticToken       = "static_token"
)

// Dataset retention policies and modes accepted in provision.
const (
	RetentionBasicFIFO = "basicFIFO"
	RetentionNone      = "None"
	ModePush           = "Push"
	ModePushStreaming  = "PushStreaming"
)

// DefaultPowerBI returns the defaults of the powerbi section: the public
// cloud, 30s per request, and DefaultRetry.
func DefaultPowerBI() pushapi.Config {
	return pushapi.Config{Cloud: "public", Timeout: 30 * time.Second, Retry: DefaultRetry()}
}

// DefaultRetry returns the retry defaults: backoff from 500ms to 30s,
// Retry-After capped at 10m, no overall deadline.
func DefaultRetry() pushapi.RetryConfig {
	return pushapi.RetryConfig{
		InitialBackoff: 500 * time.Millisecond,
		MaxBackoff:     30 * time.Second,
		MaxRetryAfter:  10 * time.Minute,
	}
}

// DefaultBatch returns Power BI's request limits: 10,000 rows, 16,000,000
// bytes, and a linger of 1s.
func DefaultBatch() batcher.Config {
	return batcher.Config{MaxRows: maxRowsPerRequest, MaxBytes: maxBytesPerRequest, Linger: time.Second}
}

// DefaultLimits returns Power BI's documented per-dataset quotas.
func DefaultLimits() pushapi.Limits {
	return pushapi.Limits{
		RequestsPerMinute:         requestsPerMinute,
		RowsPerHour:               rowsPerHour,
		MaxInFlight:               maxInFlight,
		LargeTableRows:            largeTableRows,
		LargeTableRequestsPerHour: largeTableRequestsPer,
	}
}

// errorList gathers errors whose messages start with a relative key path.
type errorList []error

func (l *errorList) add(path, format string, args ...any) {
	*l = append(*l, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (l errorList) join() error { return errors.Join(l...) }

// validatePowerBI checks the powerbi section; paths are relative to it.
// With an embedded emulator the URLs and credentials are filled in at run
// time, so they may be left out.
func validatePowerBI(c pushapi.Config, embedded bool) error {
	var errs errorList
	if clouds := cloudNames(); !contains(clouds, c.Cloud) {
		errs.add("cloud", "must be one of %s, got %q", strings.Join(clouds, ", "), c.Cloud)
	}
	for _, u := range []struct {
		key, value string
		https      bool
	}{{"api_url", c.APIURL, false}, {"authority_url", c.AuthorityURL, true}} {
		if u.value == "" {
			continue
		}
		if embedded {
			errs.add(u.key, "set at run time by emulator.embedded: remove it, or set emulator.embedded: false")
			continue
		}
		if err := checkURL(u.value, u.https); err != nil {
			errs.add(u.key, "%v", err)
		}
	}
	if c.Timeout <= 0 {
		errs.add("timeout", "must be a positive duration, got %s", c.Timeout)
	}
	if err := validateAuth(c.Auth, embedded); err != nil {
		errs = append(errs, prefixErrors("auth", err)...)
	}
	if err := validateRetry(c.Retry); err != nil {
		errs = append(errs, prefixErrors("retry", err)...)
	}
	return errs.join()
}

// validateAuth checks the keys each auth method needs, and that no key of
// another method is set (a sign of a wrong method).
func validateAuth(c pushapi.AuthConfig, embedded bool) error {
	var errs errorList
	set := map[string]bool{
		"tenant_id":                    c.TenantID != "",
		"client_id":                    c.ClientID != "",
		"client_secret":                c.ClientSecret != "" || c.ClientSecretFile != "",
		"certificate_file":             c.CertificateFile != "",
		"send_x5c":                     c.SendX5C,
		"managed_identity_client_id":   c.ManagedIdentityClientID != "",
		"managed_identity_resource_id": c.ManagedIdentityResourceID != "",
		"token":                        c.Token != "" || c.TokenFile != "",
	}
	var required, allowed []string
	switch c.Method {
	case AuthClientSecret:
		required = []string{"tenant_id", "client_id", "client_secret"}
	case AuthClientCertificate:
		required = []string{"tenant_id", "client_id", "certificate_file"}
		allowed = []string{"send_x5c"}
	case AuthManagedIdentity:
		allowed = []string{"managed_identity_client_id", "managed_identity_resource_id"}
		if set["managed_identity_client_id"] && set["managed_identity_resource_id"] {
			errs.add("managed_identity_resource_id", "set either managed_identity_client_id or managed_identity_resource_id, not both")
		}
	case AuthStaticToken:
		required = []string{"token"}
	case "":
		if embedded {
			return nil
		}
		errs.add("method", "required: one of client_secret, client_certificate, managed_identity, static_token")
		return errs.join()
	default:
		errs.add("method", "must be one of client_secret, client_certificate, managed_identity, static_token, got %q", c.Method)
		return errs.join()
	}
	for _, k := range required {
		if !set[k] {
			hint := ""
			if k == "client_secret" || k == "token" {
				hint = fmt.Sprintf(" (or %s_file)", k)
			}
			errs.add(k, "required with method %s%s", c.Method, hint)
		}
	}
	for _, k := range []string{"tenant_id", "client_id", "client_secret", "certificate_file", "send_x5c",
		"managed_identity_client_id", "managed_identity_resource_id", "token"} {
		if set[k] && !contains(required, k) && !contains(allowed, k) {
			errs.add(k, "not used with method %s: remove it or change method", c.Method)
		}
	}
	if strings.Contains(c.TenantID, "/") {
		errs.add("tenant_id", "must be a tenant id or domain, not a URL (set authority_url for another authority)")
	}
	return errs.join()
}

// validateRetry checks the retry section.
func validateRetry(c pushapi.RetryConfig) error {
	var errs errorList
	if c.InitialBackoff <= 0 {
		errs.add("initial_backoff", "must be a positive duration, got %s", c.InitialBackoff)
	}
	if c.MaxBackoff < c.InitialBackoff {
		errs.add("max_backoff", "must be at least initial_backoff (%s), got %s", c.InitialBackoff, c.MaxBackoff)
	}
	if c.MaxRetryAfter <= 0 {
		errs.add("max_retry_after", "must be a positive duration, got %s", c.MaxRetryAfter)
	}
	if c.MaxElapsed < 0 {
		errs.add("max_elapsed", "must be 0 (retry until shutdown) or a positive duration, got %s", c.MaxElapsed)
	}
	return errs.join()
}

// validateBatch checks a batch section against Power BI's request limits.
func validateBatch(c batcher.Config) error {
	var errs errorList
	if c.MaxRows < 1 || c.MaxRows > maxRowsPerRequest {
		errs.add("max_rows", "must be 1..%d, got %d", maxRowsPerRequest, c.MaxRows)
	}
	if c.MaxBytes < 1024 || c.MaxBytes > maxBytesPerRequest {
		errs.add("max_bytes", "must be 1024..%d, got %d", maxBytesPerRequest, c.MaxBytes)
	}
	if c.Linger <= 0 || c.Linger > time.Hour {
		errs.add("linger", "must be a duration in (0, 1h], got %s", c.Linger)
	}
	return errs.join()
}

// validateLimits checks a limits section. Values above Power BI's quotas
// are allowed (for the emulator with quotas raised), values below 1 are not.
func validateLimits(c pushapi.Limits) error {
	var errs errorList
	for _, f := range []struct {
		key   string
		value int
	}{
		{"requests_per_minute", c.RequestsPerMinute},
		{"rows_per_hour", c.RowsPerHour},
		{"max_in_flight", c.MaxInFlight},
		{"large_table_rows", c.LargeTableRows},
		{"large_table_requests_per_hour", c.LargeTableRequestsPerHour},
	} {
		if f.value < 1 {
			errs.add(f.key, "must be at least 1, got %d", f.value)
		}
	}
	if c.InitialTableRows < 0 {
		errs.add("initial_table_rows", "must be 0 or more, got %d", c.InitialTableRows)
	}
	return errs.join()
}

// validateTarget checks a target section; servicePrincipal says whether the
// auth method is an app identity, which cannot use My workspace.
func validateTarget(t pushapi.Target, method string) error {
	var errs errorList
	switch {
	case t.DatasetID == "" && t.DatasetName == "":
		errs.add("dataset_id", "required: set dataset_id or dataset_name")
	case t.DatasetID != "" && t.DatasetName != "":
		errs.add("dataset_name", "set either dataset_id or dataset_name, not both")
	}
	if t.WorkspaceID != "" && !isUUID(t.WorkspaceID) {
		errs.add("workspace_id", "must be a workspace id (a UUID such as f089354e-8366-4e18-aea3-4cb4a3a50b48), got %q", t.WorkspaceID)
	}
	if t.WorkspaceID == "" && (method == AuthClientSecret || method == AuthClientCertificate || method == AuthManagedIdentity) {
		errs.add("workspace_id", "required with auth method %s: service principals cannot use My workspace", method)
	}
	if t.Table == "" {
		errs.add("table", "required")
	} else if msg := checkTableName(t.Table); msg != "" {
		errs.add("table", "%s", msg)
	}
	return errs.join()
}

// checkTableName applies Power BI's table name pattern: 1..100 characters,
// no ASCII punctuation other than space, #, -, @, ^, _ and ~.
func checkTableName(name string) string {
	if n := len([]rune(name)); n > 100 {
		return fmt.Sprintf("must be at most 100 characters, got %d", n)
	}
	for _, r := range name {
		ok := r == '\t' || r == '\n' || r == '\r' || r == ' ' || r == '#' || r == '-' ||
			(r >= '0' && r <= '9') || (r >= '@' && r <= 'Z') || r == '^' || r == '_' ||
			(r >= 'a' && r <= 'z') || r >= '~'
		if !ok {
			return fmt.Sprintf("%q is not allowed in a Power BI table name", r)
		}
	}
	return ""
}

// checkURL reports whether s is an absolute http(s) URL (https only when
// httpsOnly).
func checkURL(s string, httpsOnly bool) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && (httpsOnly || u.Scheme != "http")) {
		if httpsOnly {
			return fmt.Errorf("must be an https URL such as https://login.microsoftonline.com (MSAL accepts only https authorities), got %q", s)
		}
		return fmt.Errorf("must be an http or https URL such as https://api.powerbi.com, got %q", s)
	}
	return nil
}

// isUUID reports whether s has the 8-4-4-4-12 hex form of a UUID.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
				return false
			}
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// prefixErrors splits a joined error and puts section+"." before each
// message.
func prefixErrors(section string, err error) errorList {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out errorList
		for _, e := range j.Unwrap() {
			out = append(out, prefixErrors(section, e)...)
		}
		return out
	}
	return errorList{fmt.Errorf("%s.%w", section, err)}
}
