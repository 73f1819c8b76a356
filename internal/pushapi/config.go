package pushapi

import (
	"time"

	"github.com/pushd/pushd/internal/secret"
)

// Config says which Power BI cloud to talk to and how to authenticate.
type Config struct {
	// Cloud sets the API base, authority host and scope: public (default),
	// usgov, usgovhigh, usdod, china.
	Cloud string `yaml:"cloud"`
	// APIURL overrides the cloud's API base (e.g. the emulator's URL).
	APIURL string `yaml:"api_url"`
	// AuthorityURL overrides the cloud's authority host (e.g. the emulator's
	// URL); the tenant id is appended.
	AuthorityURL string `yaml:"authority_url"`
	// CAFile is an extra PEM CA bundle to trust (the emulator's --ca-out).
	CAFile string `yaml:"ca_file"`
	// Timeout of one HTTP request (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	Auth    AuthConfig    `yaml:"auth"`
	Retry   RetryConfig   `yaml:"retry"`
}

// AuthConfig selects how pushd obtains tokens.
type AuthConfig struct {
	// Method: client_secret, client_certificate, workload_identity,
	// managed_identity, static_token.
	Method string `yaml:"method"`
	// TenantID and ClientID name the app registration (or, for
	// workload_identity, the app or user-assigned identity that trusts the
	// federated token; AZURE_TENANT_ID and AZURE_CLIENT_ID by default).
	TenantID string `yaml:"tenant_id"`
	ClientID string `yaml:"client_id"`
	// ClientSecret, or ClientSecretFile holding it.
	ClientSecret     secret.Value `yaml:"client_secret"`
	ClientSecretFile string       `yaml:"client_secret_file"`
	// CertificateFile is a PEM file with the certificate and its unencrypted key.
	CertificateFile string `yaml:"certificate_file"`
	// SendX5C sends the certificate chain (for subject-name/issuer auth).
	SendX5C bool `yaml:"send_x5c"`
	// FederatedTokenFile holds the federated token workload_identity signs
	// in with (a Kubernetes service account token), re-read at every sign-in
	// because the kubelet rotates it; AZURE_FEDERATED_TOKEN_FILE by default.
	FederatedTokenFile string `yaml:"federated_token_file"`
	// ManagedIdentityClientID selects a user-assigned identity; empty means
	// system-assigned. ManagedIdentityResourceID is the alternative selector.
	ManagedIdentityClientID   string `yaml:"managed_identity_client_id"`
	ManagedIdentityResourceID string `yaml:"managed_identity_resource_id"`
	// Token is a static bearer token (e.g. from az account get-access-token),
	// or TokenFile holding it (re-read when it changes).
	Token     secret.Value `yaml:"token"`
	TokenFile string       `yaml:"token_file"`
}

// RetryConfig bounds retries of retryable failures (429, 5xx, timeouts).
type RetryConfig struct {
	InitialBackoff time.Duration `yaml:"initial_backoff"` // default 500ms
	MaxBackoff     time.Duration `yaml:"max_backoff"`     // default 30s
	// MaxRetryAfter caps a server's Retry-After (default 1h: Power BI's
	// per-user throttling asks for up to about an hour, e.g. 3,392 s).
	MaxRetryAfter time.Duration `yaml:"max_retry_after"`
	// MaxElapsed gives up on a batch after this long (0: never; the batch
	// is retried until shutdown, so nothing is dead-lettered for a outage).
	MaxElapsed time.Duration `yaml:"max_elapsed"`
}

// Limits are the per-dataset quotas pushd keeps under. Defaults are Power BI's.
type Limits struct {
	RequestsPerMinute int `yaml:"requests_per_minute"` // 120
	RowsPerHour       int `yaml:"rows_per_hour"`       // 1,000,000
	MaxInFlight       int `yaml:"max_in_flight"`       // 5
	// LargeTableRows is the row count from which LargeTableRequestsPerHour
	// applies (250,000), counted on the rows the table holds: the rows
	// pushd posted plus InitialTableRows, at most FIFOMaxTableRows in a
	// basicFIFO dataset (see Retention). A negative LargeTableRows turns
	// the rule off.
	LargeTableRows            int `yaml:"large_table_rows"`              // 250,000
	LargeTableRequestsPerHour int `yaml:"large_table_requests_per_hour"` // 120
	// InitialTableRows is how many rows the table holds when pushd starts
	// (Power BI does not say; 0 by default).
	InitialTableRows int `yaml:"initial_table_rows"`
	// Retention is the dataset's defaultRetentionPolicy, basicFIFO or None,
	// for datasets pushd did not create in this run ("" : unknown, counted
	// as None). When Power BI reports the policy (the answer to the
	// dataset's creation) that wins. A basicFIFO table keeps only its
	// newest ~200,000 rows, so the 250,000-row rule never applies to it.
	Retention string `yaml:"retention"`

	// The windows the quotas above are counted over, Power BI's by default;
	// shorter windows let tests run a scaled-down quota (e.g. 10 requests
	// per 2s against the emulator). RequestsPerMinute is then per
	// RequestWindow, RowsPerHour per RowsWindow, LargeTableRequestsPerHour
	// per LargeTableWindow.
	RequestWindow    time.Duration `yaml:"request_window"`     // 1m
	RowsWindow       time.Duration `yaml:"rows_window"`        // 1h
	LargeTableWindow time.Duration `yaml:"large_table_window"` // 1h

	// Share is the part of every quota above (and of MaxInFlight) this
	// process keeps to, when several processes write the dataset: 0 <
	// share <= 1, default 1 (the whole). Each quota is rounded down to at
	// least 1. A Kafka source sets the share itself, from the partitions
	// assigned to this process (Client.SetShare).
	Share float64 `yaml:"share"` // 1
}
