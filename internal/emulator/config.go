// Package emulator is a local stand-in for the Power BI push-dataset REST API
// and the Microsoft Entra ID token endpoints that MSAL for Go talks to. It runs
// in-process for tests and benchmarks (Start) and as `pushd emulate` for people
// and scripts.
//
// The emulator follows ../shared/reference/powerbi-push-api.md: the same
// routes, bodies, status codes, error JSON, per-dataset quotas and retention,
// with every limit and window configurable so that tests can run an hour's
// quota in seconds. Inspection and control endpoints live under /emulator/v1/,
// outside the Power BI surface.
package emulator

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults that work without any flag. They are not secrets: the emulator
// accepts them and prints them at start.
const (
	DefaultTenant         = "11111111-1111-4111-8111-111111111111"
	DefaultClientID       = "22222222-2222-4222-8222-222222222222"
	DefaultClientSecret   = "emulator-secret"
	DefaultIdentityHeader = "emulator-identity-header"
	// DefaultManagedIdentityClientID is the client id the managed-identity
	// endpoint reports for the system-assigned identity.
	DefaultManagedIdentityClientID = "33333333-3333-4333-8333-333333333333"
)

// Retention policies of a push dataset (query parameter defaultRetentionPolicy).
const (
	RetentionNone      = "None"
	RetentionBasicFIFO = "basicFIFO"
)

// What to do with a row key that names no column of the table
// (Config.UnknownColumns).
const (
	// UnknownColumnsIgnore drops unknown keys and stores the rest of the row.
	UnknownColumnsIgnore = "ignore"
	// UnknownColumnsReject answers the whole request 400 BadRequest.
	UnknownColumnsReject = "reject"
)

// Limits are Power BI's documented push-dataset limits. A zero value means
// "no limit" for that item, so a benchmark can switch quotas off; the
// defaults (DefaultLimits) are the documented values.
type Limits struct {
	// MaxRowsPerRequest is the most rows one POST rows may carry (10,000).
	MaxRowsPerRequest int
	// MaxBodyBytes is the largest POST rows body (16 MiB); larger gets 413.
	MaxBodyBytes int
	// MaxInFlight is how many POST rows requests a dataset serves at once (5).
	MaxInFlight int
	// RequestsPerWindow POST rows requests per dataset per RequestWindow
	// (120 per minute).
	RequestsPerWindow int
	RequestWindow     time.Duration
	// RowsPerWindow rows per dataset per RowsWindow (1,000,000 per hour).
	RowsPerWindow int
	RowsWindow    time.Duration
	// LargeTableRows: once the posted-to table holds this many rows or more,
	// the dataset may only make LargeTableRequestsPerWindow POST rows
	// requests per LargeTableWindow (250,000 rows; 120 per hour).
	LargeTableRows              int
	LargeTableRequestsPerWindow int
	LargeTableWindow            time.Duration
	// FIFORows is how many of the newest rows a basicFIFO table keeps (200,000).
	FIFORows int
	// NoneRetentionMaxRows is the most rows a table of a dataset with
	// retention None holds; beyond it POST rows is refused (5,000,000).
	NoneRetentionMaxRows int
	// MaxTables per dataset, MaxColumns per table, MaxRelationships per
	// dataset (75 each).
	MaxTables        int
	MaxColumns       int
	MaxRelationships int
	// MaxStringLength is the most characters (UTF-16 code units, as .NET
	// counts) in one string value (4,000).
	MaxStringLength int
}

// DefaultLimits returns the documented Power BI push-dataset limits.
func DefaultLimits() Limits {
	return Limits{
		MaxRowsPerRequest:           10_000,
		MaxBodyBytes:                16 << 20,
		MaxInFlight:                 5,
		RequestsPerWindow:           120,
		RequestWindow:               time.Minute,
		RowsPerWindow:               1_000_000,
		RowsWindow:                  time.Hour,
		LargeTableRows:              250_000,
		LargeTableRequestsPerWindow: 120,
		LargeTableWindow:            time.Hour,
		FIFORows:                    200_000,
		NoneRetentionMaxRows:        5_000_000,
		MaxTables:                   75,
		MaxColumns:                  75,
		MaxRelationships:            75,
		MaxStringLength:             4_000,
	}
}

// WithoutQuotas returns l with the rate quotas switched off (in-flight,
// requests per window, rows per window, the large-table rule) and the
// validation limits kept, for benchmarks that measure pushd, not Power BI.
func (l Limits) WithoutQuotas() Limits {
	l.MaxInFlight = 0
	l.RequestsPerWindow = 0
	l.RowsPerWindow = 0
	l.LargeTableRows = 0
	l.LargeTableRequestsPerWindow = 0
	return l
}

// Validate reports negative limits and quotas without a window.
func (l Limits) Validate() error {
	var errs []error
	for _, c := range []struct {
		name string
		v    int
	}{
		{"max_rows_per_request", l.MaxRowsPerRequest}, {"max_body_bytes", l.MaxBodyBytes},
		{"max_in_flight", l.MaxInFlight}, {"requests_per_window", l.RequestsPerWindow},
		{"rows_per_window", l.RowsPerWindow}, {"large_table_rows", l.LargeTableRows},
		{"large_table_requests_per_window", l.LargeTableRequestsPerWindow},
		{"fifo_rows", l.FIFORows}, {"none_retention_max_rows", l.NoneRetentionMaxRows},
		{"max_tables", l.MaxTables}, {"max_columns", l.MaxColumns},
		{"max_relationships", l.MaxRelationships}, {"max_string_length", l.MaxStringLength},
	} {
		if c.v < 0 {
			errs = append(errs, fmt.Errorf("limits.%s: must be >= 0 (0 = unlimited), got %d", c.name, c.v))
		}
	}
	for _, c := range []struct {
		name  string
		quota int
		w     time.Duration
	}{
		{"request_window", l.RequestsPerWindow, l.RequestWindow},
		{"rows_window", l.RowsPerWindow, l.RowsWindow},
		{"large_table_window", l.LargeTableRequestsPerWindow, l.LargeTableWindow},
	} {
		if c.quota > 0 && c.w <= 0 {
			errs = append(errs, fmt.Errorf("limits.%s: must be > 0 when its quota is set, got %s", c.name, c.w))
		}
	}
	return errors.Join(errs...)
}

// Faults are injected failures for reliability tests. The zero value injects
// nothing. They are set at start (Config.Faults) and changed while running
// (Server.SetFaults or POST /emulator/v1/faults).
type Faults struct {
	// ErrorRate is the share (0..1) of requests answered 500 or 503 (half
	// each) before they are processed.
	ErrorRate float64
	// Latency is added to every request before it is processed (a POST rows
	// holds its in-flight slot meanwhile).
	Latency time.Duration
	// CutRate is the share (0..1) of requests that are processed (rows
	// stored) and whose connection is then cut mid-response, as when a
	// response is lost: the client cannot know the rows arrived.
	CutRate float64
	// AllRoutes applies ErrorRate, Latency and CutRate to every Power BI
	// route; by default they apply to POST rows only.
	AllRoutes bool
	// ThrottleUntil: until then every POST rows is answered 429.
	// ThrottleFor sets ThrottleUntil to now+ThrottleFor when the faults are
	// applied. ThrottleRetryAfter is the Retry-After sent (rounded up to whole
	// seconds); zero sends the time left until ThrottleUntil.
	ThrottleUntil      time.Time
	ThrottleFor        time.Duration
	ThrottleRetryAfter time.Duration
	// ThrottleIdentity, when set, makes the throttling above per user, as
	// the REST API's own throttling is: every Power BI route (any dataset,
	// any operation) answers 429 to the requests whose token was issued to
	// this subject (a client id, or the managed identity's), with a bare
	// {"message":"You have exceeded the amount of requests allowed ..."}
	// that names no dataset; other identities are served.
	ThrottleIdentity string
	// TokenOutage makes the token endpoints (client credentials and managed
	// identity) answer 503 until cleared; TokenOutageFor does so for a while
	// from when the faults are applied (kept as TokenOutageUntil).
	TokenOutage      bool
	TokenOutageFor   time.Duration
	TokenOutageUntil time.Time
}

// Validate checks rates are shares and durations are not negative.
func (f Faults) Validate() error {
	var errs []error
	if f.ErrorRate < 0 || f.ErrorRate > 1 {
		errs = append(errs, fmt.Errorf("faults.error_rate: must be 0..1, got %v", f.ErrorRate))
	}
	if f.CutRate < 0 || f.CutRate > 1 {
		errs = append(errs, fmt.Errorf("faults.cut_rate: must be 0..1, got %v", f.CutRate))
	}
	for name, d := range map[string]time.Duration{
		"latency": f.Latency, "throttle_for": f.ThrottleFor,
		"throttle_retry_after": f.ThrottleRetryAfter, "token_outage_for": f.TokenOutageFor,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("faults.%s: must be >= 0, got %s", name, d))
		}
	}
	return errors.Join(errs...)
}

// Client is an application registered with the emulated Entra ID tenant.
type Client struct {
	// ID is the application (client) id.
	ID string
	// Secret, when set, is accepted as client_secret.
	Secret string
	// Certificates are accepted for client_assertion JWTs (RS256 or PS256,
	// located by their x5t / x5t#S256 thumbprint).
	Certificates []*x509.Certificate
	// SubjectNames are certificate subject names (CN or DNS name) accepted
	// for subject name and issuer sign-in: an assertion that carries its
	// chain (x5c) to one of Config.TrustedIssuers. Such a certificate is
	// refused without x5c, as its thumbprint is not registered.
	SubjectNames []string
	// Federated are the client's federated identity credentials: outside
	// issuers whose tokens it may sign in with (AKS workload identity).
	Federated []FederatedCredential
}

// Config configures a Server. Start with DefaultConfig.
type Config struct {
	// Listen is the TCP address to listen on (default "127.0.0.1:0": a free
	// loopback port).
	Listen string
	// TLS serves HTTPS with a self-signed certificate made at start; MSAL
	// accepts only https authorities.
	TLS bool
	// Tenant is the Entra tenant id the authority accepts (case-insensitive,
	// as MSAL lower-cases authorities).
	Tenant string
	// ClientID, ClientSecret and ClientCertificates register one client.
	ClientID           string
	ClientSecret       string
	ClientCertificates []*x509.Certificate
	// ClientSubjectNames are ClientID's subject names for subject name and
	// issuer sign-in (see Client.SubjectNames).
	ClientSubjectNames []string
	// TrustedIssuers are the CA certificates subject name and issuer
	// sign-in trusts.
	TrustedIssuers []*x509.Certificate
	// FederatedCredentials are ClientID's federated identity credentials.
	FederatedCredentials []FederatedCredential
	// Clients registers further clients.
	Clients []Client
	// IdentityHeader is the X-IDENTITY-HEADER value the App Service style
	// managed-identity endpoint (/msi/token) demands (IDENTITY_HEADER).
	IdentityHeader string
	// ManagedIdentityClientID is reported for the system-assigned identity.
	ManagedIdentityClientID string
	// NoSystemAssignedIdentity: the host has no system-assigned identity,
	// so a managed-identity request without a selector is refused.
	NoSystemAssignedIdentity bool
	// UserAssignedIdentities are the user-assigned identities the host has;
	// a request for any other is refused, as App Service refuses it.
	UserAssignedIdentities []ManagedIdentity
	// Workspaces, when set, are the only workspaces (group ids) that
	// application identities (service principals, managed identities) are
	// members of: another workspace answers 403, and "My workspace" answers
	// 403 "API is not accessible for application", as Power BI does. Tokens
	// from IssueToken (a user) see every workspace. Empty: every workspace
	// exists and every identity is a member of it.
	Workspaces []string
	// TokenLifetime of issued access tokens (default 1h).
	TokenLifetime time.Duration
	// Resources are the token audiences accepted in scope/resource (without
	// "/.default"); default: the Power BI resource of every cloud.
	Resources []string
	Limits    Limits
	Faults    Faults
	// UnknownColumns says what to do with row keys that name no column:
	// UnknownColumnsIgnore (default) or UnknownColumnsReject.
	UnknownColumns string
	// CreationRetired answers every dataset creation 400
	// FeatureDeprecatedError, as Power BI will once the creation of
	// real-time (push) semantic models is retired (announced for after
	// 31 October 2027); existing datasets keep working.
	CreationRetired bool
	// TablesWithoutColumns makes GetTables list each table by its name
	// only, as Power BI's GetTables may ({"value":[{"name":"Product"}]} in
	// its own example): a client must not take that for a table without
	// columns.
	TablesWithoutColumns bool
	// DiscardRows counts accepted rows without storing them (benchmarks);
	// Rows and the rows endpoint then return nothing.
	DiscardRows bool
	// HistoryLimit bounds the POST rows records kept per dataset in Stats
	// (default 100,000; negative keeps none).
	HistoryLimit int
	// Now is the clock (default time.Now); tests inject a fake one to run
	// windows without waiting.
	Now func() time.Time
	// Seed seeds the fault dice (0: random).
	Seed uint64
	// Logger receives request logs at debug level and lifecycle logs at info
	// (nil: discard).
	Logger *slog.Logger
}

// DefaultConfig returns a configuration that works with no flag: loopback on
// a free port, plain HTTP, the default tenant/client/secret, one-hour tokens
// and the documented Power BI limits.
func DefaultConfig() Config {
	return Config{
		Listen:                  "127.0.0.1:0",
		Tenant:                  DefaultTenant,
		ClientID:                DefaultClientID,
		ClientSecret:            DefaultClientSecret,
		IdentityHeader:          DefaultIdentityHeader,
		ManagedIdentityClientID: DefaultManagedIdentityClientID,
		TokenLifetime:           time.Hour,
		Resources:               DefaultResources(),
		Limits:                  DefaultLimits(),
		UnknownColumns:          UnknownColumnsIgnore,
		HistoryLimit:            100_000,
	}
}

// DefaultResources are the Power BI resource ids of the public and sovereign
// clouds (reference §5.3).
func DefaultResources() []string {
	return []string{
		"https://analysis.windows.net/powerbi/api",
		"https://analysis.usgovcloudapi.net/powerbi/api",
		"https://high.analysis.usgovcloudapi.net/powerbi/api",
		"https://mil.analysis.usgovcloudapi.net/powerbi/api",
		"https://analysis.chinacloudapi.cn/powerbi/api",
	}
}

// Validate names every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Tenant == "" {
		errs = append(errs, errors.New("tenant: must not be empty"))
	}
	if c.TokenLifetime < 0 {
		errs = append(errs, fmt.Errorf("token_lifetime: must be >= 0, got %s", c.TokenLifetime))
	}
	switch c.UnknownColumns {
	case "", UnknownColumnsIgnore, UnknownColumnsReject:
	default:
		errs = append(errs, fmt.Errorf("unknown_columns: must be %q or %q, got %q", UnknownColumnsIgnore, UnknownColumnsReject, c.UnknownColumns))
	}
	for i, w := range c.Workspaces {
		if !uuidPattern.MatchString(w) {
			errs = append(errs, fmt.Errorf("workspaces[%d]: must be a workspace id (a UUID), got %q", i, w))
		}
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Faults.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
