package pushapi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCloudEndpoints(t *testing.T) {
	tests := []struct {
		cloud                 string
		api, authority, scope string
	}{
		{"", "https://api.powerbi.com", "https://login.microsoftonline.com", "https://analysis.windows.net/powerbi/api/.default"},
		{"public", "https://api.powerbi.com", "https://login.microsoftonline.com", "https://analysis.windows.net/powerbi/api/.default"},
		{"usgov", "https://api.powerbigov.us", "https://login.microsoftonline.com", "https://analysis.usgovcloudapi.net/powerbi/api/.default"},
		{"usgovhigh", "https://api.high.powerbigov.us", "https://login.microsoftonline.us", "https://high.analysis.usgovcloudapi.net/powerbi/api/.default"},
		{"usdod", "https://api.mil.powerbigov.us", "https://login.microsoftonline.us", "https://mil.analysis.usgovcloudapi.net/powerbi/api/.default"},
		{"China", "https://api.powerbi.cn", "https://login.chinacloudapi.cn", "https://analysis.chinacloudapi.cn/powerbi/api/.default"},
	}
	for _, tt := range tests {
		t.Run("cloud "+tt.cloud, func(t *testing.T) {
			e, err := CloudEndpoints(tt.cloud)
			if err != nil {
				t.Fatal(err)
			}
			if e != (Endpoints{tt.api, tt.authority, tt.scope}) {
				t.Errorf("CloudEndpoints(%q) = %+v", tt.cloud, e)
			}
		})
	}
	if _, err := CloudEndpoints("germany"); err == nil || !strings.Contains(err.Error(), "germany") {
		t.Errorf("unknown cloud: err = %v", err)
	}
}

func TestConfigEndpointsOverrides(t *testing.T) {
	e, err := Config{Cloud: "usgov", APIURL: "https://127.0.0.1:8443/", AuthorityURL: "https://127.0.0.1:8443"}.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	want := Endpoints{"https://127.0.0.1:8443", "https://127.0.0.1:8443", "https://analysis.usgovcloudapi.net/powerbi/api/.default"}
	if e != want {
		t.Errorf("Endpoints = %+v, want %+v", e, want)
	}
	if _, err := (Config{APIURL: "ftp://x"}).Endpoints(); err == nil || !strings.Contains(err.Error(), "api_url") {
		t.Errorf("bad api_url: err = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings; none means valid
	}{
		{"secret ok", Config{Auth: AuthConfig{TenantID: "t", ClientID: "c", ClientSecret: "s"}}, nil},
		{"managed identity by default", Config{}, nil},
		{"everything wrong at once", Config{Cloud: "mars", APIURL: "nope", Timeout: -1,
			Auth: AuthConfig{Method: AuthClientCertificate}},
			[]string{"cloud:", "api_url:", "timeout:", "auth.tenant_id", "auth.client_id", "auth.certificate_file"}},
		{"two managed identity selectors", Config{Auth: AuthConfig{Method: AuthManagedIdentity, ManagedIdentityClientID: "a", ManagedIdentityResourceID: "b"}},
			[]string{"auth.managed_identity_resource_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %v, lacks %q", err, w)
				}
			}
		})
	}
}

func TestLimitsDefaultsAndValidate(t *testing.T) {
	l := Limits{RequestsPerMinute: 10, RequestWindow: 2 * time.Second, LargeTableRows: -1}.WithDefaults()
	want := DefaultLimits()
	want.RequestsPerMinute, want.RequestWindow, want.LargeTableRows = 10, 2*time.Second, -1
	if l != want {
		t.Errorf("WithDefaults = %+v, want %+v", l, want)
	}
	err := Limits{RequestsPerMinute: -1, MaxInFlight: -2, RowsWindow: -time.Second}.Validate()
	for _, w := range []string{"requests_per_minute", "max_in_flight", "rows_window"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate = %v, lacks %q", err, w)
		}
	}
}

func TestNewHTTPClientCAFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	_ = os.WriteFile(bad, []byte("nothing"), 0o600)
	if _, err := NewHTTPClient(Config{CAFile: bad}); err == nil || !strings.Contains(err.Error(), "no PEM") {
		t.Errorf("bad ca_file: err = %v", err)
	}
	c, err := NewHTTPClient(Config{})
	if err != nil || c.Timeout != DefaultTimeout {
		t.Errorf("NewHTTPClient = %+v, %v", c, err)
	}
}

// TestURLWithCredentials checks that api_url and authority_url with a
// user:password@ part are refused, naming the key, and that no message
// repeats the password.
func TestURLWithCredentials(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"api_url with user and password", Config{APIURL: "https://alice:hunter2@api.example.com/v1"},
			[]string{"api_url: must not contain credentials", `"https://<redacted>@api.example.com/v1"`, "don't belong in the URL"}},
		{"authority_url with a user only", Config{AuthorityURL: "https://hunter2@login.example.com"},
			[]string{"authority_url: must not contain credentials", `"https://<redacted>@login.example.com"`}},
		{"unparseable URL with a password", Config{APIURL: "https://alice:hun%zzter2@api.example.com"},
			[]string{"api_url: invalid URL", `"https://<redacted>@api.example.com"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, err := range []error{tt.cfg.Validate(), endpointsErr(tt.cfg)} {
				if err == nil {
					t.Fatal("accepted")
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "hun%zz") {
					t.Errorf("error repeats the password: %q", err)
				}
			}
		})
	}
}

func endpointsErr(c Config) error {
	_, err := c.Endpoints()
	return err
}

func TestRedactURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"https://u:p@host:8443/path?q=a@b#x@y", "https://<redacted>@host:8443/path?q=a@b#x@y"},
		{"https://u:p@x@host", "https://<redacted>@host"},
		{"https://host/a@b", "https://host/a@b"},
		{"http://host", "http://host"},
		{"no scheme user:p@host", "no scheme user:p@host"},
		{"", ""},
	} {
		t.Run(tt.in, func(t *testing.T) {
			if got := RedactURL(tt.in); got != tt.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
