package pushapi

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"
)

// Power BI's documented push-dataset limits, the defaults of Limits.
const (
	// MaxRowsPerRequest is the most rows one PostRows request may carry.
	MaxRowsPerRequest = 10_000
	// DefaultRequestsPerMinute is the POST rows requests per minute per dataset.
	DefaultRequestsPerMinute = 120
	// DefaultRowsPerHour is the rows added per hour per dataset.
	DefaultRowsPerHour = 1_000_000
	// DefaultMaxInFlight is the pending POST rows requests per dataset.
	DefaultMaxInFlight = 5
	// DefaultLargeTableRows is the table size from which the hourly request
	// quota applies.
	DefaultLargeTableRows = 250_000
	// DefaultLargeTableRequestsPerHour is the POST rows requests per hour per
	// dataset once a table holds DefaultLargeTableRows rows.
	DefaultLargeTableRequestsPerHour = 120
	// FIFOMaxTableRows is the most rows a table of a basicFIFO dataset
	// holds: it fills to 200,000 rows, then Power BI drops the oldest and
	// keeps between 200,000 and 210,000 of the newest.
	FIFOMaxTableRows = 210_000
)

// Authentication methods accepted by AuthConfig.Method.
const (
	AuthClientSecret      = "client_secret"
	AuthClientCertificate = "client_certificate"
	AuthManagedIdentity   = "managed_identity"
	AuthStaticToken       = "static_token"
	// AuthWorkloadIdentity signs in as an app (or user-assigned identity)
	// with a federated token from a file: AKS workload identity.
	AuthWorkloadIdentity = "workload_identity"
)

// The environment variables the AKS workload identity webhook injects into
// a pod; workload_identity takes its defaults from them.
const (
	EnvClientID           = "AZURE_CLIENT_ID"
	EnvTenantID           = "AZURE_TENANT_ID"
	EnvFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	EnvAuthorityHost      = "AZURE_AUTHORITY_HOST"
)

// WithEnvironment returns c with, for the workload_identity method, every
// empty setting that the AKS workload identity webhook provides taken from
// getenv: auth.client_id (AZURE_CLIENT_ID), auth.tenant_id
// (AZURE_TENANT_ID), auth.federated_token_file (AZURE_FEDERATED_TOKEN_FILE)
// and authority_url (AZURE_AUTHORITY_HOST). Other methods are unchanged.
func (c Config) WithEnvironment(getenv func(string) string) Config {
	if c.Auth.ResolvedMethod() != AuthWorkloadIdentity {
		return c
	}
	fill := func(v *string, env string) {
		if *v == "" {
			*v = strings.TrimSpace(getenv(env))
		}
	}
	fill(&c.Auth.ClientID, EnvClientID)
	fill(&c.Auth.TenantID, EnvTenantID)
	fill(&c.Auth.FederatedTokenFile, EnvFederatedTokenFile)
	fill(&c.AuthorityURL, EnvAuthorityHost)
	// The webhook's host ends with a slash; the tenant is appended.
	c.AuthorityURL = strings.TrimRight(c.AuthorityURL, "/")
	return c
}

// DefaultLimits returns Power BI's documented push-dataset quotas.
func DefaultLimits() Limits {
	return Limits{
		RequestsPerMinute:         DefaultRequestsPerMinute,
		RowsPerHour:               DefaultRowsPerHour,
		MaxInFlight:               DefaultMaxInFlight,
		LargeTableRows:            DefaultLargeTableRows,
		LargeTableRequestsPerHour: DefaultLargeTableRequestsPerHour,
		RequestWindow:             time.Minute,
		RowsWindow:                time.Hour,
		LargeTableWindow:          time.Hour,
		Share:                     1,
	}
}

// WithDefaults returns l with every zero field set to its default. A
// negative LargeTableRows keeps its meaning: the 250,000-row rule is off
// (right for basicFIFO datasets, whose tables never exceed 210,000 rows).
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.RequestsPerMinute == 0 {
		l.RequestsPerMinute = d.RequestsPerMinute
	}
	if l.RowsPerHour == 0 {
		l.RowsPerHour = d.RowsPerHour
	}
	if l.MaxInFlight == 0 {
		l.MaxInFlight = d.MaxInFlight
	}
	if l.LargeTableRows == 0 {
		l.LargeTableRows = d.LargeTableRows
	}
	if l.LargeTableRequestsPerHour == 0 {
		l.LargeTableRequestsPerHour = d.LargeTableRequestsPerHour
	}
	if l.RequestWindow <= 0 {
		l.RequestWindow = d.RequestWindow
	}
	if l.RowsWindow <= 0 {
		l.RowsWindow = d.RowsWindow
	}
	if l.LargeTableWindow <= 0 {
		l.LargeTableWindow = d.LargeTableWindow
	}
	if l.Share == 0 {
		l.Share = d.Share
	}
	return l
}

// Validate reports every invalid field, naming its yaml key.
func (l Limits) Validate() error {
	var errs []error
	if l.RequestsPerMinute < 0 {
		errs = append(errs, fmt.Errorf("requests_per_minute: must be positive, got %d", l.RequestsPerMinute))
	}
	if l.RowsPerHour < 0 {
		errs = append(errs, fmt.Errorf("rows_per_hour: must be positive, got %d", l.RowsPerHour))
	}
	if l.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("max_in_flight: must be positive, got %d", l.MaxInFlight))
	}
	if l.LargeTableRequestsPerHour < 0 {
		errs = append(errs, fmt.Errorf("large_table_requests_per_hour: must be positive, got %d", l.LargeTableRequestsPerHour))
	}
	if l.RequestWindow < 0 || l.RowsWindow < 0 || l.LargeTableWindow < 0 {
		errs = append(errs, errors.New("request_window, rows_window, large_table_window: must not be negative"))
	}
	if l.Share < 0 || l.Share > 1 || math.IsNaN(l.Share) {
		errs = append(errs, fmt.Errorf("share: must be more than 0 and at most 1 (this process's part of the dataset's quotas), got %g", l.Share))
	}
	if l.InitialTableRows < 0 {
		errs = append(errs, fmt.Errorf("initial_table_rows: must not be negative, got %d", l.InitialTableRows))
	}
	switch l.Retention {
	case "", RetentionNone, RetentionBasicFIFO:
	default:
		errs = append(errs, fmt.Errorf("retention: must be basicFIFO or None (or left out: unknown, counted as None), got %q", l.Retention))
	}
	return errors.Join(errs...)
}

// DefaultRetryConfig returns the retry defaults named on RetryConfig.
func DefaultRetryConfig() RetryConfig {
	return RetryConfig{
		InitialBackoff: 500 * time.Millisecond,
		MaxBackoff:     30 * time.Second,
		MaxRetryAfter:  time.Hour,
	}
}

// WithDefaults returns r with every zero field set to its default
// (MaxElapsed stays 0: retry until the context ends).
func (r RetryConfig) WithDefaults() RetryConfig {
	d := DefaultRetryConfig()
	if r.InitialBackoff <= 0 {
		r.InitialBackoff = d.InitialBackoff
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = d.MaxBackoff
	}
	if r.MaxBackoff < r.InitialBackoff {
		r.MaxBackoff = r.InitialBackoff
	}
	if r.MaxRetryAfter <= 0 {
		r.MaxRetryAfter = d.MaxRetryAfter
	}
	return r
}

// DefaultConfig returns the public cloud with the default timeout and retry
// settings; Auth is left for the user.
func DefaultConfig() Config {
	return Config{Cloud: CloudPublic, Timeout: DefaultTimeout, Retry: DefaultRetryConfig()}
}

// Validate reports every problem of the Power BI section at once, naming the
// yaml key of each (relative to the section).
func (c Config) Validate() error {
	var errs []error
	if _, err := CloudEndpoints(c.Cloud); err != nil {
		errs = append(errs, fmt.Errorf("cloud: %w", err))
	}
	if c.APIURL != "" {
		if err := checkURL(c.APIURL); err != nil {
			errs = append(errs, fmt.Errorf("api_url: %w", err))
		}
	}
	if c.AuthorityURL != "" {
		if err := checkURL(c.AuthorityURL); err != nil {
			errs = append(errs, fmt.Errorf("authority_url: %w", err))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: must not be negative, got %s", c.Timeout))
	}
	if c.Retry.InitialBackoff < 0 || c.Retry.MaxBackoff < 0 || c.Retry.MaxRetryAfter < 0 || c.Retry.MaxElapsed < 0 {
		errs = append(errs, errors.New("retry: durations must not be negative"))
	}
	if err := c.Auth.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ResolvedMethod returns Method, or when it is empty the method implied by
// the fields set: token or token_file → static_token, certificate_file →
// client_certificate, client_secret(_file) → client_secret, else
// managed_identity.
func (a AuthConfig) ResolvedMethod() string {
	if a.Method != "" {
		return a.Method
	}
	switch {
	case a.Token != "" || a.TokenFile != "":
		return AuthStaticToken
	case a.CertificateFile != "":
		return AuthClientCertificate
	case a.ClientSecret != "" || a.ClientSecretFile != "":
		return AuthClientSecret
	}
	return AuthManagedIdentity
}

// Validate checks that the fields the method needs are set, naming each
// missing key (auth.<key>).
func (a AuthConfig) Validate() error {
	var errs []error
	need := func(ok bool, key, method string) {
		if !ok {
			errs = append(errs, fmt.Errorf("auth.%s: required for method %s", key, method))
		}
	}
	switch m := a.ResolvedMethod(); m {
	case AuthClientSecret:
		need(a.TenantID != "", "tenant_id", m)
		need(a.ClientID != "", "client_id", m)
		need(a.ClientSecret != "" || a.ClientSecretFile != "", "client_secret", m)
		if a.ClientSecret != "" && a.ClientSecretFile != "" {
			errs = append(errs, errors.New("auth.client_secret_file: set client_secret or client_secret_file, not both"))
		}
	case AuthClientCertificate:
		need(a.TenantID != "", "tenant_id", m)
		need(a.ClientID != "", "client_id", m)
		need(a.CertificateFile != "", "certificate_file", m)
	case AuthWorkloadIdentity:
		// Validate sees the environment's defaults (WithEnvironment).
		w := Config{Auth: a}.WithEnvironment(os.Getenv).Auth
		needEnv := func(ok bool, key, env string) {
			if !ok {
				errs = append(errs, fmt.Errorf("auth.%s: required for method %s (or set %s, as the AKS workload identity webhook does)", key, m, env))
			}
		}
		needEnv(w.TenantID != "", "tenant_id", EnvTenantID)
		needEnv(w.ClientID != "", "client_id", EnvClientID)
		needEnv(w.FederatedTokenFile != "", "federated_token_file", EnvFederatedTokenFile)
	case AuthManagedIdentity:
		if a.ManagedIdentityClientID != "" && a.ManagedIdentityResourceID != "" {
			errs = append(errs, errors.New("auth.managed_identity_resource_id: set managed_identity_client_id or managed_identity_resource_id, not both"))
		}
	case AuthStaticToken:
		need(a.Token != "" || a.TokenFile != "", "token", m)
		if a.Token != "" && a.TokenFile != "" {
			errs = append(errs, errors.New("auth.token_file: set token or token_file, not both"))
		}
	default:
		errs = append(errs, fmt.Errorf("auth.method: unknown method %q (want client_secret, client_certificate, workload_identity, managed_identity or static_token)", a.Method))
	}
	return errors.Join(errs...)
}
