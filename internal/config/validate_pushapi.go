package config

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/pushapi"
)

// Power BI's limits for one POST rows request: the defaults and bounds of
// the batch section.
const (
	maxRowsPerRequest  = 10000
	maxBytesPerRequest = 16000000
)

// defaultBatch returns Power BI's request limits: 10,000 rows, 16,000,000
// bytes, and a linger of 1s (the same values as batcher.DefaultConfig).
func defaultBatch() batcher.Config {
	return batcher.Config{MaxRows: maxRowsPerRequest, MaxBytes: maxBytesPerRequest, Linger: time.Second}
}

// errorList gathers errors whose messages start with a relative key path.
type errorList []error

func (l *errorList) add(path, format string, args ...any) {
	*l = append(*l, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (l errorList) join() error { return errors.Join(l...) }

// validatePowerBI checks the powerbi section with pushapi's own Validate,
// plus what only the whole config knows or pushapi does not check: URLs
// that an embedded emulator sets, an https authority for MSAL, keys the
// auth method does not use, and backoff bounds in order. Paths are relative
// to the section.
func validatePowerBI(c pushapi.Config, embedded bool) error {
	errs := errorList{c.Validate()}
	for _, u := range []struct{ key, value string }{{"api_url", c.APIURL}, {"authority_url", c.AuthorityURL}} {
		if u.value != "" && embedded {
			errs.add(u.key, "set at run time by emulator.embedded: remove it, or set emulator.embedded: false")
		}
	}
	method := c.Auth.ResolvedMethod()
	msal := method == pushapi.AuthClientSecret || method == pushapi.AuthClientCertificate || method == pushapi.AuthWorkloadIdentity
	if u, err := url.Parse(c.AuthorityURL); c.AuthorityURL != "" && err == nil && u.Scheme == "http" && msal {
		errs.add("authority_url", "must be https with auth method %s (MSAL accepts only https authorities), got %q", method, pushapi.RedactURL(c.AuthorityURL))
	}
	if err := unusedAuthKeys(c.Auth, method); err != nil {
		errs = append(errs, prefixErrors("auth", err)...)
	}
	if r := c.Retry; r.InitialBackoff > 0 && r.MaxBackoff > 0 && r.MaxBackoff < r.InitialBackoff {
		errs.add("retry.max_backoff", "must be at least retry.initial_backoff (%s), got %s", r.InitialBackoff, r.MaxBackoff)
	}
	return errs.join()
}

// unusedAuthKeys reports credentials set for a method that does not use
// them: a sign of a wrong method (or a leftover that would confuse the
// next reader).
func unusedAuthKeys(a pushapi.AuthConfig, method string) error {
	uses := map[string][]string{
		pushapi.AuthClientSecret:      {"tenant_id", "client_id", "client_secret", "client_secret_file"},
		pushapi.AuthClientCertificate: {"tenant_id", "client_id", "certificate_file", "send_x5c"},
		pushapi.AuthWorkloadIdentity:  {"tenant_id", "client_id", "federated_token_file"},
		pushapi.AuthManagedIdentity:   {"managed_identity_client_id", "managed_identity_resource_id"},
		pushapi.AuthStaticToken:       {"token", "token_file"},
	}
	used, known := uses[method]
	if !known {
		return nil // pushapi reports the unknown method
	}
	var errs errorList
	for _, k := range []struct {
		key string
		set bool
	}{
		{"tenant_id", a.TenantID != ""},
		{"client_id", a.ClientID != ""},
		{"client_secret", a.ClientSecret != ""},
		{"client_secret_file", a.ClientSecretFile != ""},
		{"certificate_file", a.CertificateFile != ""},
		{"send_x5c", a.SendX5C},
		{"federated_token_file", a.FederatedTokenFile != ""},
		{"managed_identity_client_id", a.ManagedIdentityClientID != ""},
		{"managed_identity_resource_id", a.ManagedIdentityResourceID != ""},
		{"token", a.Token != ""},
		{"token_file", a.TokenFile != ""},
	} {
		if k.set && !contains(used, k.key) {
			errs.add(k.key, "not used with auth method %s: remove it or change method", method)
		}
	}
	return errs.join()
}

// validateBatch checks a batch section: with batcher's own Validate when it
// has one, else against Power BI's request limits with the same messages.
func validateBatch(c batcher.Config) error {
	if v, ok := any(c).(interface{ Validate() error }); ok {
		return v.Validate()
	}
	var errs errorList
	if c.MaxRows < 1 || c.MaxRows > maxRowsPerRequest {
		errs.add("max_rows", "must be 1..%d, got %d", maxRowsPerRequest, c.MaxRows)
	}
	if c.MaxBytes < 1 || c.MaxBytes > maxBytesPerRequest {
		errs.add("max_bytes", "must be 1..%d, got %d", maxBytesPerRequest, c.MaxBytes)
	}
	if c.Linger <= 0 {
		errs.add("linger", "must be > 0, got %s", c.Linger)
	}
	return errs.join()
}

// validateTarget checks a target section.
func validateTarget(t pushapi.Target) error {
	var errs errorList
	switch {
	case t.DatasetID == "" && t.DatasetName == "":
		errs.add("dataset_id", "required: set dataset_id or dataset_name")
	case t.DatasetID != "" && t.DatasetName != "":
		errs.add("dataset_name", "set either dataset_id or dataset_name, not both")
	}
	if t.DatasetID != "" && !isUUID(t.DatasetID) {
		errs.add("dataset_id", "must be a dataset id (a UUID such as cfafbeb1-8037-4d0c-896e-a46fb27ff229; to name the dataset use dataset_name), got %q", t.DatasetID)
	}
	if t.WorkspaceID != "" && !isUUID(t.WorkspaceID) {
		errs.add("workspace_id", "must be a workspace id (a UUID such as f089354e-8366-4e18-aea3-4cb4a3a50b48), got %q", t.WorkspaceID)
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

// isServicePrincipal reports whether an auth method signs in as an app
// identity, which cannot use My workspace.
func isServicePrincipal(method string) bool {
	return method == pushapi.AuthClientSecret || method == pushapi.AuthClientCertificate ||
		method == pushapi.AuthWorkloadIdentity || method == pushapi.AuthManagedIdentity
}
