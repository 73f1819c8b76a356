// Package eventstream is pushd's second target: a Microsoft Fabric
// eventstream's custom endpoint, which speaks the Kafka protocol (the
// endpoint is an Event Hubs entity). Each mapped row is produced as one JSON
// message, a batch at a time with kafka-go's Client (one produce request per
// partition, its records read straight from the rows), acknowledged by the
// broker (RequiredAcks: all) before the events it came from are acked to
// their source.
//
// Authentication is SAS-key only: SASL PLAIN over TLS, with the user
// "$ConnectionString" and the endpoint's connection string as the password.
// Fabric also offers Entra ID (SASL OAUTHBEARER), but kafka-go v0.4 has no
// OAUTHBEARER mechanism (its sasl packages are plain and scram), so the
// entra_id method is refused by Validate rather than faked.
package eventstream

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/secret"
	"github.com/pushd/pushd/internal/source"
)

// Auth methods accepted in AuthConfig.Method.
const (
	// AuthConnectionString is SASL PLAIN with the user $ConnectionString and
	// the endpoint's SAS-key connection string as the password.
	AuthConnectionString = "connection_string"
	// AuthEntraID is SASL OAUTHBEARER with an Entra ID token. kafka-go has
	// no OAUTHBEARER mechanism: Validate refuses it.
	AuthEntraID = "entra_id"
)

// Compression codecs accepted in Config.Compression.
const (
	CompressionNone   = "none"
	CompressionGzip   = "gzip"
	CompressionSnappy = "snappy"
	CompressionLz4    = "lz4"
	CompressionZstd   = "zstd"
)

// Limits of the endpoint (an Event Hubs entity behind the Kafka protocol).
const (
	// LimitMessageBytes is the largest event Event Hubs accepts: 1 MB.
	LimitMessageBytes = 1 << 20
	// LimitBatchBytes is the largest produce batch pushd sends: Event Hubs
	// also caps a batch at 1 MB.
	LimitBatchBytes = 1 << 20
	// DefaultPort is the port of the Kafka endpoint of Event Hubs and Fabric.
	DefaultPort = "9093"
	// SASLUser is the SASL PLAIN user of connection-string authentication.
	SASLUser = "$ConnectionString"
)

// Config configures one fabric_eventstream target.
type Config struct {
	// BootstrapServer is the custom endpoint's "Bootstrap server",
	// host:9093. Default: the host of the connection string's Endpoint with
	// port 9093.
	BootstrapServer string `yaml:"bootstrap_server"`
	// Topic is the eventstream's entity name (Fabric's "Topic name", the
	// EntityPath of the connection string). Default: that EntityPath.
	Topic string     `yaml:"topic"`
	Auth  AuthConfig `yaml:"auth"`
	// TLS to the endpoint; on by default and required: the connection
	// string must not travel in clear text.
	TLS source.TLSConfig `yaml:"tls"`
	// KeyColumn, when set, names the column whose value is each message's
	// key (rows with the same key land in the same partition, in order).
	// Default: no key, one partition per batch in turn.
	KeyColumn string `yaml:"key_column"`
	// Compression of the produce batches: none (default), gzip, snappy, lz4
	// or zstd. Event Hubs documents gzip for Kafka clients.
	Compression string `yaml:"compression"`
	// Batch groups rows into produce requests (default 1,000 rows,
	// 1,048,576 bytes, linger 100ms).
	Batch batcher.Config `yaml:"batch"`
	// MaxMessageBytes is the largest message (key plus value) sent; a row
	// over it goes to the dead letter (default and maximum 1,048,576, the
	// endpoint's 1 MB).
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxInFlight is the number of batches sent at once (default 5).
	MaxInFlight int `yaml:"max_in_flight"`
	// Timeout bounds one produce attempt (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// Retry bounds retries of throttling and transient errors, with the
	// same rules as powerbi.retry (default backoff 500ms doubling to 30s,
	// full jitter; max_elapsed 0 retries until shutdown).
	Retry pushapi.RetryConfig `yaml:"retry"`
	// ClientID is sent to the endpoint (default "pushd").
	ClientID string `yaml:"client_id"`
}

// AuthConfig says how pushd authenticates to the endpoint.
type AuthConfig struct {
	// Method is connection_string (default) or entra_id (refused: kafka-go
	// cannot do SASL OAUTHBEARER).
	Method string `yaml:"method"`
	// ConnectionString is the custom endpoint's SAS-key connection string
	// (Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...;
	// EntityPath=...), or ConnectionStringFile holding it.
	ConnectionString     secret.Value `yaml:"connection_string"`
	ConnectionStringFile string       `yaml:"connection_string_file"`
}

// DefaultConfig returns the defaults named on Config.
func DefaultConfig() Config {
	return Config{
		Auth:            AuthConfig{Method: AuthConnectionString},
		TLS:             source.TLSConfig{Enabled: true},
		Compression:     CompressionNone,
		Batch:           batcher.Config{MaxRows: 1000, MaxBytes: LimitBatchBytes, Linger: 100 * time.Millisecond},
		MaxMessageBytes: LimitMessageBytes,
		MaxInFlight:     5,
		Timeout:         30 * time.Second,
		Retry:           pushapi.DefaultRetryConfig(),
		ClientID:        "pushd",
	}
}

// ConnectionString is the parsed, non-secret part of a connection string.
type ConnectionString struct {
	// Host is the Endpoint's host (namespace.servicebus.windows.net).
	Host string
	// KeyName is the SharedAccessKeyName.
	KeyName string
	// EntityPath is the entity (topic), empty when the string has none.
	EntityPath string
}

// ParseConnectionString checks the form of an Event Hubs connection string
// and returns its non-secret parts. Errors never quote the string (it holds
// the key).
func ParseConnectionString(s string) (ConnectionString, error) {
	var cs ConnectionString
	fields := map[string]string{}
	for _, part := range strings.Split(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return cs, errors.New("not a connection string: expected key=value parts separated by ';' (Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...)")
		}
		fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	var missing []string
	for _, k := range []string{"Endpoint", "SharedAccessKeyName", "SharedAccessKey"} {
		if fields[strings.ToLower(k)] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return cs, fmt.Errorf("connection string has no %s (copy the whole string from the eventstream's custom endpoint, SAS Key Authentication tab)", strings.Join(missing, ", "))
	}
	u, err := url.Parse(fields["endpoint"])
	if err != nil || u.Scheme != "sb" || u.Hostname() == "" {
		return cs, errors.New("connection string's Endpoint must be sb://<namespace>.servicebus.windows.net/")
	}
	cs.Host = u.Hostname()
	cs.KeyName = fields["sharedaccesskeyname"]
	cs.EntityPath = fields["entitypath"]
	return cs, nil
}

// WithDefaults fills the bootstrap server and topic from the connection
// string when they are empty. It leaves c as it is when the string does not
// parse (Validate reports that).
func (c Config) WithDefaults() Config {
	cs, err := ParseConnectionString(c.Auth.ConnectionString.Reveal())
	if err != nil {
		return c
	}
	if c.BootstrapServer == "" {
		c.BootstrapServer = net.JoinHostPort(cs.Host, DefaultPort)
	}
	if c.Topic == "" {
		c.Topic = cs.EntityPath
	}
	return c
}

// Validate reports every problem at once, each naming its key relative to
// the target's section ("topic: required ..."). Call it on the config as
// loaded (secret files read); defaults from the connection string are
// applied first.
func (c Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	cs, csErr := c.validateAuth(add)
	c = c.WithDefaults()
	switch {
	case c.BootstrapServer == "":
		add("bootstrap_server", "required: the custom endpoint's Bootstrap server, host:9093 (or a connection string to take it from)")
	default:
		if _, port, err := net.SplitHostPort(c.BootstrapServer); err != nil {
			add("bootstrap_server", "must be host:port such as mynamespace.servicebus.windows.net:9093, got %q", c.BootstrapServer)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			add("bootstrap_server", "port must be 1..65535, got %q", port)
		}
	}
	switch {
	case c.Topic == "":
		add("topic", "required: the eventstream's entity name (Topic name on the custom endpoint page; EntityPath in the connection string)")
	case csErr == nil && cs.EntityPath != "" && cs.EntityPath != c.Topic:
		add("topic", "%q differs from the connection string's EntityPath %q: a SAS key of an entity grants only that entity", c.Topic, cs.EntityPath)
	}
	if !c.TLS.Enabled {
		add("tls.enabled", "must be true: the endpoint accepts only TLS, and the connection string must not travel in clear text")
	}
	if c.TLS.CertFile != "" || c.TLS.KeyFile != "" {
		add("tls.cert_file", "not used: the endpoint authenticates with SASL, not client certificates")
	}
	switch c.Compression {
	case CompressionNone, CompressionGzip, CompressionSnappy, CompressionLz4, CompressionZstd:
	default:
		add("compression", "must be none, gzip, snappy, lz4 or zstd, got %q", c.Compression)
	}
	errs = append(errs, prefix("batch", c.Batch.Validate()))
	if c.Batch.MaxBytes > LimitBatchBytes {
		add("batch.max_bytes", "must be at most %d (the endpoint's 1 MB batch limit), got %d", LimitBatchBytes, c.Batch.MaxBytes)
	}
	if c.MaxMessageBytes < 1 || c.MaxMessageBytes > LimitMessageBytes {
		add("max_message_bytes", "must be 1..%d (the endpoint's 1 MB event limit), got %d", LimitMessageBytes, c.MaxMessageBytes)
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 100 {
		add("max_in_flight", "must be 1..100, got %d", c.MaxInFlight)
	}
	if c.Timeout <= 0 {
		add("timeout", "must be a positive duration, got %s", c.Timeout)
	}
	if r := c.Retry; r.InitialBackoff <= 0 || r.MaxBackoff < r.InitialBackoff || r.MaxRetryAfter <= 0 || r.MaxElapsed < 0 {
		add("retry", "needs 0 < initial_backoff <= max_backoff, max_retry_after > 0 and max_elapsed >= 0, got %s, %s, %s, %s",
			r.InitialBackoff, r.MaxBackoff, r.MaxRetryAfter, r.MaxElapsed)
	}
	return errors.Join(errs...)
}

// validateAuth checks the auth section and returns the parsed connection
// string (its error too, so that topic checks can skip a bad one).
func (c Config) validateAuth(add func(key, format string, args ...any)) (ConnectionString, error) {
	switch c.Auth.Method {
	case AuthConnectionString:
	case AuthEntraID:
		add("auth.method", "entra_id is not supported: Fabric's Entra ID authentication needs SASL OAUTHBEARER, which kafka-go (pushd's Kafka client) does not implement; use connection_string (SAS key)")
		return ConnectionString{}, errors.New("no connection string")
	default:
		add("auth.method", "must be connection_string, got %q", c.Auth.Method)
		return ConnectionString{}, errors.New("no connection string")
	}
	if c.Auth.ConnectionString == "" {
		add("auth.connection_string", "required: set connection_string (e.g. ${FABRIC_CONNECTION_STRING}) or connection_string_file")
		return ConnectionString{}, errors.New("no connection string")
	}
	cs, err := ParseConnectionString(c.Auth.ConnectionString.Reveal())
	if err != nil {
		add("auth.connection_string", "%v", err)
	}
	return cs, err
}

// prefix puts key+"." before each message of a joined error.
func prefix(key string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, fmt.Errorf("%s.%w", key, e))
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s.%w", key, err)
}
