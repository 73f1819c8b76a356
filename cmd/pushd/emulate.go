package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pushd/pushd/internal/emulator"
)

// runEmulate is `pushd emulate`: a local Power BI push API and Entra ID
// token endpoint, served until SIGINT or SIGTERM.
func runEmulate(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return emulate(ctx, args, stdout, stderr)
}

// emulateFlags binds every flag to cfg and returns the extra options.
type emulateOptions struct {
	caOut          string
	clientCertFile string
	federated      emulator.FederatedCredential
	federatedKey   string
	trustedIssuer  string
	noQuotas       bool
	tokenOutage    bool
	logLevel       string
	// kafka, when set, is the address of a stand-in Kafka broker to serve
	// beside the emulator (kafkaTopics created with kafkaPartitions each).
	kafka           string
	kafkaTopics     string
	kafkaPartitions int
}

func emulateFlagSet(cfg *emulator.Config, o *emulateOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("pushd emulate", flag.ContinueOnError)
	l, f := &cfg.Limits, &cfg.Faults
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8090", "TCP address to listen on (port 0 picks a free port)")
	fs.BoolVar(&cfg.TLS, "tls", false, "serve HTTPS with a self-signed certificate made at start (MSAL accepts only https authorities)")
	fs.StringVar(&o.caOut, "ca-out", "", "write the self-signed certificate as PEM to this file, for clients to trust (with --tls)")
	fs.StringVar(&cfg.Tenant, "tenant", cfg.Tenant, "Entra tenant id the authority accepts")
	fs.StringVar(&cfg.ClientID, "client-id", cfg.ClientID, "client (application) id accepted by the token endpoint")
	fs.StringVar(&cfg.ClientSecret, "client-secret", cfg.ClientSecret, "client secret accepted for --client-id")
	fs.StringVar(&o.clientCertFile, "client-cert", "", "PEM file of certificates accepted for --client-id's certificate (client_assertion) sign-in")
	fs.StringVar(&o.federated.Issuer, "federated-issuer", "", "issuer (e.g. an AKS cluster's OIDC issuer URL) of federated tokens --client-id may sign in with (workload identity; needs --federated-subject and --federated-key)")
	fs.StringVar(&o.federated.Subject, "federated-subject", "", "subject of the federated tokens trusted, e.g. system:serviceaccount:NAMESPACE:NAME (matched exactly)")
	fs.StringVar(&o.federated.Audience, "federated-audience", emulator.AzureADTokenExchange, "audience the federated tokens must carry")
	fs.StringVar(&o.federatedKey, "federated-key", "", "PEM file with the public key(s) or certificate(s) that verify the federated tokens' signature (the issuer's JWKS)")
	fs.Func("client-subject-name", "certificate subject name (CN or DNS name) accepted for --client-id's subject name and issuer sign-in, with the chain (x5c) to --trusted-issuer (repeatable)", func(v string) error {
		cfg.ClientSubjectNames = append(cfg.ClientSubjectNames, v)
		return nil
	})
	fs.StringVar(&o.trustedIssuer, "trusted-issuer", "", "PEM file of CA certificates that subject name and issuer sign-in trusts")
	fs.Func("workspace", "a workspace (group id) the service principals and managed identities are members of (repeatable); when given, any other workspace and My workspace answer 403 to them", func(v string) error {
		cfg.Workspaces = append(cfg.Workspaces, v)
		return nil
	})
	fs.Func("user-assigned-identity", "a user-assigned managed identity the managed-identity endpoint knows, by client id or resource id (/subscriptions/...; repeatable); others are refused", func(v string) error {
		if strings.HasPrefix(v, "/") {
			cfg.UserAssignedIdentities = append(cfg.UserAssignedIdentities, emulator.ManagedIdentity{ResourceID: v})
		} else {
			cfg.UserAssignedIdentities = append(cfg.UserAssignedIdentities, emulator.ManagedIdentity{ClientID: v})
		}
		return nil
	})
	fs.BoolVar(&cfg.NoSystemAssignedIdentity, "no-system-assigned-identity", false, "the managed-identity endpoint has no system-assigned identity")
	fs.StringVar(&cfg.IdentityHeader, "identity-header", cfg.IdentityHeader, "X-IDENTITY-HEADER value the managed-identity endpoint demands (IDENTITY_HEADER)")
	fs.StringVar(&cfg.ManagedIdentityClientID, "managed-identity-client-id", cfg.ManagedIdentityClientID, "client id reported for the system-assigned managed identity")
	fs.DurationVar(&cfg.TokenLifetime, "token-lifetime", cfg.TokenLifetime, "lifetime of issued access tokens")

	fs.IntVar(&l.MaxRowsPerRequest, "max-rows-per-request", l.MaxRowsPerRequest, "most rows in one POST rows request (0 = unlimited)")
	fs.IntVar(&l.MaxBodyBytes, "max-body-bytes", l.MaxBodyBytes, "largest request body in bytes; larger gets 413 (0 = unlimited)")
	fs.IntVar(&l.MaxInFlight, "max-in-flight", l.MaxInFlight, "POST rows requests a dataset serves at once (0 = unlimited)")
	fs.IntVar(&l.RequestsPerWindow, "requests-per-window", l.RequestsPerWindow, "POST rows requests per dataset per --request-window (0 = unlimited)")
	fs.DurationVar(&l.RequestWindow, "request-window", l.RequestWindow, "window of --requests-per-window")
	fs.IntVar(&l.RowsPerWindow, "rows-per-window", l.RowsPerWindow, "rows per dataset per --rows-window (0 = unlimited)")
	fs.DurationVar(&l.RowsWindow, "rows-window", l.RowsWindow, "window of --rows-per-window")
	fs.IntVar(&l.LargeTableRows, "large-table-rows", l.LargeTableRows, "table size from which --large-table-requests-per-window applies (0 = rule off)")
	fs.IntVar(&l.LargeTableRequestsPerWindow, "large-table-requests-per-window", l.LargeTableRequestsPerWindow, "POST rows requests per dataset per --large-table-window once a table is large (0 = rule off)")
	fs.DurationVar(&l.LargeTableWindow, "large-table-window", l.LargeTableWindow, "window of --large-table-requests-per-window")
	fs.IntVar(&l.FIFORows, "fifo-rows", l.FIFORows, "rows a basicFIFO table keeps, newest first (0 = unlimited)")
	fs.IntVar(&l.NoneRetentionMaxRows, "none-retention-max-rows", l.NoneRetentionMaxRows, "most rows a table of a retention-None dataset holds (0 = unlimited)")
	fs.IntVar(&l.MaxTables, "max-tables", l.MaxTables, "most tables per dataset (0 = unlimited)")
	fs.IntVar(&l.MaxColumns, "max-columns", l.MaxColumns, "most columns per table (0 = unlimited)")
	fs.IntVar(&l.MaxRelationships, "max-relationships", l.MaxRelationships, "most relationships per dataset (0 = unlimited)")
	fs.IntVar(&l.MaxStringLength, "max-string-length", l.MaxStringLength, "most characters in a string value (0 = unlimited)")
	fs.BoolVar(&o.noQuotas, "no-quotas", false, "switch the rate quotas off (in flight, requests and rows per window, large-table rule), for benchmarks")
	fs.StringVar(&cfg.UnknownColumns, "unknown-columns", cfg.UnknownColumns, "row keys that name no column: ignore (drop them) or reject (400)")
	fs.BoolVar(&cfg.DiscardRows, "discard-rows", false, "count accepted rows without storing them (benchmarks)")
	fs.BoolVar(&cfg.TablesWithoutColumns, "tables-without-columns", false, "GetTables lists tables by name only, without their columns (as Power BI may)")
	fs.BoolVar(&cfg.CreationRetired, "creation-retired", false, "refuse every dataset creation with FeatureDeprecatedError, as Power BI will after 31 October 2027")
	fs.IntVar(&cfg.HistoryLimit, "history-limit", cfg.HistoryLimit, "POST rows records kept per dataset in /emulator/v1/stats (negative = none)")

	fs.Float64Var(&f.ErrorRate, "error-rate", 0, "share (0..1) of POST rows requests answered 500 or 503")
	fs.DurationVar(&f.Latency, "latency", 0, "latency added to every POST rows request")
	fs.Float64Var(&f.CutRate, "cut-rate", 0, "share (0..1) of POST rows requests processed and then cut mid-response")
	fs.BoolVar(&f.AllRoutes, "fault-all-routes", false, "apply --error-rate, --latency and --cut-rate to every Power BI route, not only POST rows")
	fs.DurationVar(&f.ThrottleFor, "throttle-for", 0, "answer every POST rows 429 for this long from start")
	fs.DurationVar(&f.ThrottleRetryAfter, "throttle-retry-after", 0, "Retry-After sent while throttling (0 = the time left)")
	fs.BoolVar(&o.tokenOutage, "token-outage", false, "token endpoints answer 503 until changed through /emulator/v1/faults")
	fs.DurationVar(&f.TokenOutageFor, "token-outage-for", 0, "token endpoints answer 503 for this long from start")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the fault dice (0 = random)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug (every request), info, warn, error")
	fs.StringVar(&o.kafka, "kafka", "", "also serve an in-memory stand-in Kafka broker on this address (e.g. 127.0.0.1:9092), for trying the Kafka source; never for production")
	fs.StringVar(&o.kafkaTopics, "kafka-topics", "events", "comma-separated topics the stand-in broker creates at start (producers may create others)")
	fs.IntVar(&o.kafkaPartitions, "kafka-partitions", 3, "partitions of each topic the stand-in broker creates")
	return fs
}

// printEmulateUsage lists every flag with its default, even zero ones.
func printEmulateUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "Usage: pushd emulate [flags]")
	fmt.Fprintln(w, "\nServes a local Power BI push API and Entra ID token endpoint until SIGINT or SIGTERM.")
	fmt.Fprintln(w, "Inspection: GET /emulator/v1/stats, GET /emulator/v1/datasets/{id}/tables/{table}/rows,")
	fmt.Fprintln(w, "POST /emulator/v1/reset, GET|POST /emulator/v1/faults.")
	fmt.Fprintln(w, "\nFlags:")
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		name := "--" + f.Name
		if typ != "" {
			name += " " + typ
		}
		fmt.Fprintf(w, "  %s\n    \t%s (default %s)\n", name, usage, def)
	})
}

func emulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := emulator.DefaultConfig()
	var o emulateOptions
	fs := emulateFlagSet(&cfg, &o)
	fs.SetOutput(stderr)
	fs.Usage = func() { printEmulateUsage(fs.Output(), fs) }
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			fs.SetOutput(stdout)
		}
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pushd emulate: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "pushd emulate: --log-level: %v\n", err)
		return exitUsage
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if o.noQuotas {
		cfg.Limits = cfg.Limits.WithoutQuotas()
	}
	cfg.Faults.TokenOutage = o.tokenOutage
	if o.clientCertFile != "" {
		certs, err := readCertificates(o.clientCertFile)
		if err != nil {
			fmt.Fprintf(stderr, "pushd emulate: --client-cert: %v\n", err)
			return exitUsage
		}
		cfg.ClientCertificates = certs
	}
	if o.federated.Issuer != "" || o.federated.Subject != "" || o.federatedKey != "" {
		if o.federated.Issuer == "" || o.federated.Subject == "" || o.federatedKey == "" {
			fmt.Fprintln(stderr, "pushd emulate: --federated-issuer, --federated-subject and --federated-key go together")
			return exitUsage
		}
		keys, err := emulator.ReadPublicKeys(o.federatedKey)
		if err != nil {
			fmt.Fprintf(stderr, "pushd emulate: --federated-key: %v\n", err)
			return exitUsage
		}
		o.federated.Keys = keys
		cfg.FederatedCredentials = append(cfg.FederatedCredentials, o.federated)
	}
	if o.trustedIssuer != "" {
		certs, err := readCertificates(o.trustedIssuer)
		if err != nil {
			fmt.Fprintf(stderr, "pushd emulate: --trusted-issuer: %v\n", err)
			return exitUsage
		}
		cfg.TrustedIssuers = certs
	}
	if o.caOut != "" && !cfg.TLS {
		fmt.Fprintln(stderr, "pushd emulate: --ca-out needs --tls")
		return exitUsage
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "pushd emulate: %v\n", err)
		return exitUsage
	}
	s, err := emulator.Start(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "pushd emulate: %v\n", err)
		return exitFailed
	}
	if o.caOut != "" {
		if err := os.WriteFile(o.caOut, s.CACertPEM(), 0o644); err != nil {
			fmt.Fprintf(stderr, "pushd emulate: writing --ca-out %s: %v\n", o.caOut, err)
			_ = s.Close()
			return exitFailed
		}
	}
	var kafka *kafkaStandIn
	if o.kafka != "" {
		kafka, err = startKafkaStandIn(o.kafka, strings.Split(o.kafkaTopics, ","), o.kafkaPartitions)
		if err != nil {
			fmt.Fprintf(stderr, "pushd emulate: %v\n", err)
			_ = s.Close()
			return exitFailed
		}
		defer kafka.Close()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "pushd emulator serving (SIGINT or SIGTERM stops it)\n")
	fmt.Fprintf(&b, "  base URL:        %s\n", s.URL())
	fmt.Fprintf(&b, "  Power BI API:    %s/v1.0/myorg\n", s.URL())
	fmt.Fprintf(&b, "  authority:       %s (as authority_url: %s; pushd appends the tenant)\n", s.Authority(), s.URL())
	fmt.Fprintf(&b, "  tenant:          %s\n", cfg.Tenant)
	fmt.Fprintf(&b, "  client id:       %s\n", cfg.ClientID)
	fmt.Fprintf(&b, "  client secret:   %s\n", cfg.ClientSecret)
	for _, f := range cfg.FederatedCredentials {
		fmt.Fprintf(&b, "  federated:       issuer %s, subject %s, audience %s\n", f.Issuer, f.Subject, f.Audience)
	}
	fmt.Fprintf(&b, "  managed identity: IDENTITY_ENDPOINT=%s IDENTITY_HEADER=%s\n", s.ManagedIdentityEndpoint(), cfg.IdentityHeader)
	if o.caOut != "" {
		fmt.Fprintf(&b, "  CA certificate:  %s\n", o.caOut)
	}
	fmt.Fprintf(&b, "  stats:           %s/emulator/v1/stats\n", s.URL())
	fmt.Fprintf(&b, "  live page:       %s/\n", s.URL())
	if kafka != nil {
		fmt.Fprintf(&b, "  Kafka stand-in:  %s (topics %s; in memory, for trying only)\n", kafka.Addr(), o.kafkaTopics)
	}
	writePowerBIBlock(&b, s, cfg, o.caOut)
	_, _ = io.WriteString(stdout, b.String())

	<-ctx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(shutdownCtx); err != nil {
		_ = s.Close()
	}
	fmt.Fprintln(stdout, "pushd emulator stopped")
	return exitOK
}

// readCertificates reads every CERTIFICATE block of a PEM file.
func readCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing a certificate in %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no CERTIFICATE block in %s", path)
	}
	return certs, nil
}

// writePowerBIBlock writes a powerbi section pointing at the emulator that
// can be pasted into a config as it is (authority_url is the base URL:
// pushd appends the tenant itself).
func writePowerBIBlock(b *strings.Builder, s *emulator.Server, cfg emulator.Config, caOut string) {
	fmt.Fprintf(b, "\nPaste into a config (configs/emulator.yaml has it already):\n")
	if !cfg.TLS {
		fmt.Fprintf(b, "# MSAL accepts only https authorities: start with --tls --ca-out FILE for client_secret sign-in.\n")
	}
	fmt.Fprintf(b, "powerbi:\n  api_url: %s\n  authority_url: %s\n", s.URL(), s.URL())
	if caOut != "" {
		fmt.Fprintf(b, "  ca_file: %s\n", caOut)
	}
	fmt.Fprintf(b, "  auth:\n    method: client_secret\n    tenant_id: %s\n    client_id: %s\n    client_secret: %s\n",
		cfg.Tenant, cfg.ClientID, cfg.ClientSecret)
}
