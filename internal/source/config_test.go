package source

import (
	"strings"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	cases := map[string]bool{
		"127.0.0.1:8080": true,
		"127.9.9.9:1":    true,
		"[::1]:8080":     true,
		"localhost:80":   true,
		"LOCALHOST:80":   true,
		"0.0.0.0:8080":   false,
		":8080":          false,
		"[::]:8080":      false,
		"10.0.0.5:8080":  false,
		"example.com:80": false,
		"127.0.0.1":      false, // no port
	}
	for addr, want := range cases {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	kafka := func(edit func(*Config)) Config {
		c := DefaultConfig()
		c.Type = TypeKafka
		c.Kafka.Brokers = []string{"k1:9092"}
		c.Kafka.Topics = []string{"t"}
		c.Kafka.GroupID = "g"
		edit(&c)
		return c
	}
	cases := []struct {
		name string
		cfg  Config
		want []string // each a message the error must hold; none: valid
	}{
		{"defaults need a type", DefaultConfig(), []string{"type: required"}},
		{"stdin defaults are valid", func() Config { c := DefaultConfig(); c.Type = TypeStdin; return c }(), nil},
		{"http defaults are valid", func() Config { c := DefaultConfig(); c.Type = TypeHTTP; return c }(), nil},
		{"kafka minimal", kafka(func(*Config) {}), nil},
		{"broker without port", kafka(func(c *Config) { c.Kafka.Brokers = []string{"k1"} }), []string{"kafka.brokers[0]: must be host:port"}},
		{"broker port 0", kafka(func(c *Config) { c.Kafka.Brokers = []string{"k1:0"} }), []string{"kafka.brokers[0]: port must be a number 1..65535"}},
		{"duplicate topic", kafka(func(c *Config) { c.Kafka.Topics = []string{"a", "a"} }), []string{`kafka.topics[1]: "a" already listed as topics[0]`}},
		{"max below min bytes", kafka(func(c *Config) { c.Kafka.MinBytes = 10; c.Kafka.MaxBytes = 5 }), []string{"kafka.max_bytes: must be at least min_bytes (10), got 5"}},
		{"sasl password from file counts", kafka(func(c *Config) {
			c.Kafka.SASL = SASLConfig{Mechanism: SASLSCRAMSHA512, Username: "u", PasswordFile: "/p"}
		}), nil},
		{"sasl user without mechanism", kafka(func(c *Config) { c.Kafka.SASL.Username = "u" }), []string{"kafka.sasl.mechanism: required when username or password is set"}},
		{"tls complete", kafka(func(c *Config) {
			c.Kafka.TLS = TLSConfig{Enabled: true, CertFile: "c", KeyFile: "k", ServerName: "s", InsecureSkipVerify: true}
		}), nil},
		{"http open with token", func() Config {
			c := DefaultConfig()
			c.Type, c.HTTP.Listen, c.HTTP.BearerTokenFile = TypeHTTP, ":8080", "/t"
			return c
		}(), nil},
		{"http open without token", func() Config {
			c := DefaultConfig()
			c.Type, c.HTTP.Listen = TypeHTTP, ":8080"
			return c
		}(), []string{"http.listen: :8080 is not a loopback address"}},
		{"other kind's section set", func() Config {
			c := DefaultConfig()
			c.Type, c.Stdin.MaxLineBytes = TypeHTTP, 5
			return c
		}(), []string{"stdin: only used with type stdin, but type is http"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(c.want) {
				t.Errorf("got %d problems, want %d:\n%v", len(lines), len(c.want), err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
