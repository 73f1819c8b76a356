package source

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/pushd/pushd/internal/secret"
)

// Source types accepted in Config.Type.
const (
	TypeStdin = "stdin"
	TypeKafka = "kafka"
	TypeHTTP  = "http"
)

// Kafka start offsets accepted in KafkaConfig.StartOffset.
const (
	StartEarliest = "earliest"
	StartLatest   = "latest"
)

// SASL mechanisms accepted in SASLConfig.Mechanism.
const (
	SASLPlain       = "PLAIN"
	SASLSCRAMSHA256 = "SCRAM-SHA-256"
	SASLSCRAMSHA512 = "SCRAM-SHA-512"
)

// Config selects a pipeline's source and holds the settings of each kind.
// Only the section named by Type is used; setting another is an error.
type Config struct {
	// Type is stdin, kafka or http.
	Type  string      `yaml:"type"`
	Stdin StdinConfig `yaml:"stdin"`
	Kafka KafkaConfig `yaml:"kafka"`
	HTTP  HTTPConfig  `yaml:"http"`
}

// StdinConfig configures the NDJSON reader on standard input.
type StdinConfig struct {
	// MaxLineBytes is the longest line (one event) accepted (default 1 MiB).
	MaxLineBytes int `yaml:"max_line_bytes"`
}

// KafkaConfig configures the Kafka consumer-group source.
type KafkaConfig struct {
	// Brokers are the bootstrap addresses, host:port.
	Brokers []string `yaml:"brokers"`
	// Topics to consume, one or more.
	Topics []string `yaml:"topics"`
	// GroupID is the consumer group; offsets are committed under it.
	GroupID string `yaml:"group_id"`
	// ClientID is sent to the brokers (default "pushd").
	ClientID string `yaml:"client_id"`
	// StartOffset is where a group without committed offsets starts:
	// earliest (default) or latest.
	StartOffset string `yaml:"start_offset"`
	// CommitInterval is how often acknowledged offsets are committed
	// (default 1s). Offsets are never committed per message.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// MinBytes is the least data a fetch waits for (default 1).
	MinBytes int `yaml:"min_bytes"`
	// MaxBytes is the most data one fetch returns (default 1 MiB).
	MaxBytes int `yaml:"max_bytes"`
	// MaxWait is the longest a fetch waits for MinBytes (default 500ms).
	MaxWait time.Duration `yaml:"max_wait"`
	// SessionTimeout is the group session timeout (default 30s).
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// RebalanceTimeout is how long the group waits for members to rejoin
	// during a rebalance (default 30s).
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
	TLS              TLSConfig     `yaml:"tls"`
	SASL             SASLConfig    `yaml:"sasl"`
}

// TLSConfig configures TLS to the Kafka brokers. Certificates are always
// verified unless InsecureSkipVerify is set explicitly.
type TLSConfig struct {
	// Enabled turns TLS on; the other keys need it.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of CAs to trust instead of the system pool.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// mutual TLS; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the brokers' certificates.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns certificate verification off. Never the
	// default; for tests against self-signed brokers only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASLConfig configures SASL authentication to the Kafka brokers.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means no SASL.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password, or PasswordFile holding it (the loader reads the file into
	// Password).
	Password     secret.Value `yaml:"password"`
	PasswordFile string       `yaml:"password_file"`
}

// HTTPConfig configures the HTTP ingest source.
type HTTPConfig struct {
	// Listen is the address to serve on (default "127.0.0.1:8080"). An
	// address other than loopback needs a bearer token.
	Listen string `yaml:"listen"`
	// Path accepts POSTs of NDJSON or a JSON array (default "/v1/events").
	Path string `yaml:"path"`
	// BearerToken, or BearerTokenFile holding it (the loader reads the file
	// into BearerToken): when set, requests must carry
	// "Authorization: Bearer <token>".
	BearerToken     secret.Value `yaml:"bearer_token"`
	BearerTokenFile string       `yaml:"bearer_token_file"`
	// MaxBodyBytes is the largest request body accepted (default 16 MiB);
	// a larger one gets 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxBufferedBytes bounds the request bodies held at once, across
	// requests, from their first byte read until their last event is
	// acknowledged (default 16 MiB; at least MaxBodyBytes). A request that
	// does not fit gets 429 before its body is read when it declares its
	// length, else as soon as it passes the bound.
	MaxBufferedBytes int64 `yaml:"max_buffered_bytes"`
	// MaxEventsPerRequest caps the events in one request (0: no cap beyond
	// MaxBodyBytes and the pipeline's max_unacked_events); more gets 413,
	// as soon as the body is read that far.
	MaxEventsPerRequest int `yaml:"max_events_per_request"`
	// ResponseTimeout is how long a request waits for its events to be
	// accepted or dead-lettered before it is answered 503 with Retry-After
	// (default 60s).
	ResponseTimeout time.Duration `yaml:"response_timeout"`
	// IdempotencyTTL is how long the outcome of a request that carried an
	// Idempotency-Key is kept after its last answer (default 1h): a retry
	// with the key within it never sends an event twice.
	IdempotencyTTL time.Duration `yaml:"idempotency_ttl"`
	// IdempotencyMaxKeys bounds the keys kept (default 10000); past it the
	// oldest whose events are all settled are forgotten first.
	IdempotencyMaxKeys int `yaml:"idempotency_max_keys"`
	// BodyReadTimeout bounds reading one request's body (default 30s): a
	// caller slower than that gets 408, and cannot hold shutdown longer.
	BodyReadTimeout time.Duration `yaml:"body_read_timeout"`
}

// DefaultConfig returns the defaults of every source kind. Type has no
// default: a pipeline must choose.
func DefaultConfig() Config {
	return Config{
		Stdin: StdinConfig{MaxLineBytes: 1 << 20},
		Kafka: KafkaConfig{
			ClientID:         "pushd",
			StartOffset:      StartEarliest,
			CommitInterval:   time.Second,
			MinBytes:         1,
			MaxBytes:         1 << 20,
			MaxWait:          500 * time.Millisecond,
			SessionTimeout:   30 * time.Second,
			RebalanceTimeout: 30 * time.Second,
		},
		HTTP: HTTPConfig{
			Listen:             "127.0.0.1:8080",
			Path:               "/v1/events",
			MaxBodyBytes:       16 << 20,
			MaxBufferedBytes:   16 << 20,
			ResponseTimeout:    60 * time.Second,
			BodyReadTimeout:    30 * time.Second,
			IdempotencyTTL:     time.Hour,
			IdempotencyMaxKeys: 10000,
		},
	}
}

// Validate reports every problem in c, joined; each message starts with the
// key path relative to the source section ("kafka.brokers: ...").
func (c Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	def := DefaultConfig()
	switch c.Type {
	case TypeStdin, TypeKafka, TypeHTTP:
	case "":
		add("type", "required: one of stdin, kafka, http")
	default:
		add("type", "must be one of stdin, kafka, http, got %q", c.Type)
	}
	// A section for another kind is a mistake (a typo in type, or a leftover).
	if c.Type != "" {
		if c.Type != TypeStdin && c.Stdin != def.Stdin {
			add("stdin", "only used with type stdin, but type is %s", c.Type)
		}
		if c.Type != TypeKafka && !reflect.DeepEqual(c.Kafka, def.Kafka) {
			add("kafka", "only used with type kafka, but type is %s", c.Type)
		}
		if c.Type != TypeHTTP && c.HTTP != def.HTTP {
			add("http", "only used with type http, but type is %s", c.Type)
		}
	}
	switch c.Type {
	case TypeStdin:
		errs = append(errs, prefixed("stdin", c.Stdin.Validate()))
	case TypeKafka:
		errs = append(errs, prefixed("kafka", c.Kafka.Validate()))
	case TypeHTTP:
		errs = append(errs, prefixed("http", c.HTTP.Validate()))
	}
	return errors.Join(errs...)
}

// Validate reports every problem in c, joined, with paths relative to the
// stdin section.
func (c StdinConfig) Validate() error {
	if c.MaxLineBytes < 1 {
		return fmt.Errorf("max_line_bytes: must be at least 1, got %d", c.MaxLineBytes)
	}
	return nil
}

// Validate reports every problem in c, joined, with paths relative to the
// kafka section.
func (c KafkaConfig) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if len(c.Brokers) == 0 {
		add("brokers", "required: at least one host:port")
	}
	for i, b := range c.Brokers {
		if err := checkHostPort(b, false); err != nil {
			add(fmt.Sprintf("brokers[%d]", i), "%v", err)
		}
	}
	if len(c.Topics) == 0 {
		add("topics", "required: at least one topic")
	}
	seen := make(map[string]int, len(c.Topics))
	for i, t := range c.Topics {
		switch {
		case t == "":
			add(fmt.Sprintf("topics[%d]", i), "must not be empty")
		case strings.ContainsAny(t, " /\\,"):
			add(fmt.Sprintf("topics[%d]", i), "%q is not a valid topic name", t)
		}
		if j, dup := seen[t]; dup && t != "" {
			add(fmt.Sprintf("topics[%d]", i), "%q already listed as topics[%d]", t, j)
		}
		seen[t] = i
	}
	if c.GroupID == "" {
		add("group_id", "required: offsets are committed under the consumer group")
	}
	if c.ClientID == "" {
		add("client_id", "must not be empty")
	}
	if c.StartOffset != StartEarliest && c.StartOffset != StartLatest {
		add("start_offset", "must be earliest or latest, got %q", c.StartOffset)
	}
	positive := func(path string, d time.Duration) {
		if d <= 0 {
			add(path, "must be a positive duration, got %s", d)
		}
	}
	positive("commit_interval", c.CommitInterval)
	positive("max_wait", c.MaxWait)
	positive("session_timeout", c.SessionTimeout)
	positive("rebalance_timeout", c.RebalanceTimeout)
	if c.MinBytes < 1 {
		add("min_bytes", "must be at least 1, got %d", c.MinBytes)
	}
	if c.MaxBytes < 1 {
		add("max_bytes", "must be at least 1, got %d", c.MaxBytes)
	} else if c.MaxBytes < c.MinBytes {
		add("max_bytes", "must be at least min_bytes (%d), got %d", c.MinBytes, c.MaxBytes)
	}
	errs = append(errs, prefixed("tls", c.TLS.Validate()), prefixed("sasl", c.SASL.Validate()))
	return errors.Join(errs...)
}

// Validate reports every problem in c, joined, with paths relative to the
// tls section.
func (c TLSConfig) Validate() error {
	var errs []error
	if !c.Enabled {
		for _, k := range []struct {
			key string
			set bool
		}{
			{"ca_file", c.CAFile != ""},
			{"cert_file", c.CertFile != ""},
			{"key_file", c.KeyFile != ""},
			{"server_name", c.ServerName != ""},
			{"insecure_skip_verify", c.InsecureSkipVerify},
		} {
			if k.set {
				errs = append(errs, fmt.Errorf("%s: set, but enabled is false (set enabled: true to use TLS)", k.key))
			}
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		if c.CertFile == "" {
			errs = append(errs, errors.New("cert_file: required with key_file (a client certificate needs both)"))
		} else {
			errs = append(errs, errors.New("key_file: required with cert_file (a client certificate needs both)"))
		}
	}
	return errors.Join(errs...)
}

// Validate reports every problem in c, joined, with paths relative to the
// sasl section. A password given by PasswordFile counts as set.
func (c SASLConfig) Validate() error {
	var errs []error
	hasPassword := c.Password != "" || c.PasswordFile != ""
	switch c.Mechanism {
	case "":
		if c.Username != "" || hasPassword {
			errs = append(errs, errors.New("mechanism: required when username or password is set: one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"))
		}
		return errors.Join(errs...)
	case SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512:
	default:
		errs = append(errs, fmt.Errorf("mechanism: must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got %q", c.Mechanism))
	}
	if c.Username == "" {
		errs = append(errs, fmt.Errorf("username: required with mechanism %s", c.Mechanism))
	}
	if !hasPassword {
		errs = append(errs, fmt.Errorf("password: required with mechanism %s (or password_file)", c.Mechanism))
	}
	return errors.Join(errs...)
}

// Validate reports every problem in c, joined, with paths relative to the
// http section. A token given by BearerTokenFile counts as set.
func (c HTTPConfig) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if err := checkHostPort(c.Listen, true); err != nil {
		add("listen", "%v", err)
	} else if !IsLoopback(c.Listen) && c.BearerToken == "" && c.BearerTokenFile == "" {
		add("listen", "%s is not a loopback address: set bearer_token (or bearer_token_file) so that only your clients can post", c.Listen)
	}
	if !strings.HasPrefix(c.Path, "/") {
		add("path", "must start with /, got %q", c.Path)
	}
	if c.MaxBodyBytes < 1 {
		add("max_body_bytes", "must be at least 1, got %d", c.MaxBodyBytes)
	}
	if c.MaxBufferedBytes < c.MaxBodyBytes {
		add("max_buffered_bytes", "must be at least max_body_bytes (%d), got %d: a body that large could never be taken", c.MaxBodyBytes, c.MaxBufferedBytes)
	}
	if c.MaxEventsPerRequest < 0 {
		add("max_events_per_request", "must be 0 (no cap) or more, got %d", c.MaxEventsPerRequest)
	}
	if c.ResponseTimeout <= 0 {
		add("response_timeout", "must be a positive duration, got %s", c.ResponseTimeout)
	}
	if c.IdempotencyTTL <= 0 {
		add("idempotency_ttl", "must be a positive duration, got %s", c.IdempotencyTTL)
	}
	if c.IdempotencyMaxKeys < 1 {
		add("idempotency_max_keys", "must be at least 1, got %d", c.IdempotencyMaxKeys)
	}
	if c.BodyReadTimeout <= 0 {
		add("body_read_timeout", "must be a positive duration, got %s", c.BodyReadTimeout)
	}
	return errors.Join(errs...)
}

// IsLoopback reports whether the host of a host:port address is a loopback
// address or "localhost". An empty host (all interfaces) is not loopback.
func IsLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkHostPort reports whether addr is host:port with a port 1..65535 (0
// too when listening, meaning any free port). A listener's host may be empty
// (all interfaces); a broker's may not.
func checkHostPort(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, got %q", addr)
	}
	if host == "" && !listen {
		return fmt.Errorf("host must not be empty, got %q", addr)
	}
	n, err := strconv.Atoi(port)
	low := 1
	if listen {
		low = 0
	}
	if err != nil || n < low || n > 65535 {
		return fmt.Errorf("port must be a number %d..65535, got %q", low, addr)
	}
	return nil
}

// prefixed puts section+"." before the path of every error joined in err.
func prefixed(section string, err error) error {
	if err == nil {
		return nil
	}
	var leaves []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if e != nil {
				leaves = append(leaves, prefixed(section, e))
			}
		}
		return errors.Join(leaves...)
	}
	return fmt.Errorf("%s.%w", section, err)
}
