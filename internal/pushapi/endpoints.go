package pushapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Endpoints are the addresses of one Power BI cloud.
type Endpoints struct {
	// APIBase is the REST API root, e.g. https://api.powerbi.com.
	APIBase string
	// AuthorityHost is the Entra ID login root, e.g.
	// https://login.microsoftonline.com; the tenant id is appended to it.
	AuthorityHost string
	// Scope is the client-credentials scope (resource + "/.default").
	Scope string
}

// Cloud names accepted by CloudEndpoints and Config.Cloud.
const (
	CloudPublic    = "public"
	CloudUSGov     = "usgov"
	CloudUSGovHigh = "usgovhigh"
	CloudUSDoD     = "usdod"
	CloudChina     = "china"
)

// CloudEndpoints returns the endpoints of a Power BI cloud: public (also for
// ""), usgov (GCC), usgovhigh (GCC High), usdod (DoD) or china (21Vianet).
// Values follow Microsoft's national-cloud table.
func CloudEndpoints(cloud string) (Endpoints, error) {
	switch strings.ToLower(strings.TrimSpace(cloud)) {
	case "", CloudPublic:
		return Endpoints{
			APIBase:       "https://api.powerbi.com",
			AuthorityHost: "https://login.microsoftonline.com",
			Scope:         "https://analysis.windows.net/powerbi/api/.default",
		}, nil
	case CloudUSGov:
		return Endpoints{
			APIBase:       "https://api.powerbigov.us",
			AuthorityHost: "https://login.microsoftonline.com",
			Scope:         "https://analysis.usgovcloudapi.net/powerbi/api/.default",
		}, nil
	case CloudUSGovHigh:
		return Endpoints{
			APIBase:       "https://api.high.powerbigov.us",
			AuthorityHost: "https://login.microsoftonline.us",
			Scope:         "https://high.analysis.usgovcloudapi.net/powerbi/api/.default",
		}, nil
	case CloudUSDoD:
		return Endpoints{
			APIBase:       "https://api.mil.powerbigov.us",
			AuthorityHost: "https://login.microsoftonline.us",
			Scope:         "https://mil.analysis.usgovcloudapi.net/powerbi/api/.default",
		}, nil
	case CloudChina:
		return Endpoints{
			APIBase:       "https://api.powerbi.cn",
			AuthorityHost: "https://login.chinacloudapi.cn",
			Scope:         "https://analysis.chinacloudapi.cn/powerbi/api/.default",
		}, nil
	}
	return Endpoints{}, fmt.Errorf("unknown Power BI cloud %q (want public, usgov, usgovhigh, usdod or china)", cloud)
}

// Endpoints returns the cloud's endpoints with APIURL and AuthorityURL
// applied over them (trailing slashes removed).
func (c Config) Endpoints() (Endpoints, error) {
	e, err := CloudEndpoints(c.Cloud)
	if err != nil {
		return Endpoints{}, err
	}
	if c.APIURL != "" {
		if err := checkURL(c.APIURL); err != nil {
			return Endpoints{}, fmt.Errorf("api_url: %w", err)
		}
		e.APIBase = c.APIURL
	}
	if c.AuthorityURL != "" {
		if err := checkURL(c.AuthorityURL); err != nil {
			return Endpoints{}, fmt.Errorf("authority_url: %w", err)
		}
		e.AuthorityHost = c.AuthorityURL
	}
	e.APIBase = strings.TrimRight(e.APIBase, "/")
	e.AuthorityHost = strings.TrimRight(e.AuthorityHost, "/")
	return e, nil
}

// checkURL checks an API or authority URL. Its messages show the URL with
// any user:password@ part redacted, never the credentials.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL, credentials included
		}
		return fmt.Errorf("invalid URL %q: %w", RedactURL(s), err)
	}
	if u.User != nil {
		return fmt.Errorf("must not contain credentials (user:password@), got %q: credentials don't belong in the URL; set them under powerbi.auth", RedactURL(s))
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("invalid URL %q: want http(s)://host[:port]", s)
	}
	return nil
}

// RedactURL returns s with the userinfo of its authority (the
// "user:password@" after "scheme://") replaced by "<redacted>@". It works on
// the text, so it redacts even a URL that does not parse.
func RedactURL(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	rest := s[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return s
	}
	return s[:i+3] + "<redacted>" + rest[at:]
}

// NewHTTPClient returns the HTTP client pushd uses for Power BI and Entra ID:
// a private transport (never http.DefaultTransport), the configured request
// timeout, and CAFile's certificates trusted in addition to the system pool.
func NewHTTPClient(cfg Config) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate found", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// DefaultTimeout bounds one HTTP request when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second
