package source

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/secret"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// readsOne reports whether s delivers an event within wait.
func readsOne(t *testing.T, s Source, wait time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, ack, err := s.Read(ctx)
	if err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Read: %v", err)
		}
		return false
	}
	ack(nil)
	return true
}

func TestKafkaSASL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mechanism string
		producer  sasl.Mechanism
	}{
		{SASLPlain, plain.Auth{User: "pushd", Pass: "pw"}.AsMechanism()},
		{SASLSCRAMSHA256, scram.Auth{User: "pushd", Pass: "pw"}.AsSha256Mechanism()},
		{SASLSCRAMSHA512, scram.Auth{User: "pushd", Pass: "pw"}.AsSha512Mechanism()},
	}
	for _, tt := range tests {
		t.Run(tt.mechanism, func(t *testing.T) {
			t.Parallel()
			c := newTestCluster(t, kfake.EnableSASL(), kfake.Superuser(tt.mechanism, "pushd", "pw"))
			produce(t, c, 0, 1, kgo.SASL(tt.producer))

			cfg := testKafkaConfig(c, "g-sasl")
			cfg.SASL = SASLConfig{Mechanism: tt.mechanism, Username: "pushd", Password: secret.Value("pw")}
			if !readsOne(t, newTestKafka(t, cfg, testKafkaOptions(t)), 20*time.Second) {
				t.Fatal("no event with the right password")
			}

			// The password from a file works too.
			file := filepath.Join(t.TempDir(), "password")
			if err := os.WriteFile(file, []byte("pw\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.GroupID = "g-sasl-file"
			cfg.SASL.Password, cfg.SASL.PasswordFile = "", file
			if !readsOne(t, newTestKafka(t, cfg, testKafkaOptions(t)), 20*time.Second) {
				t.Fatal("no event with the password from password_file")
			}

			cfg.GroupID = "g-sasl-wrong"
			cfg.SASL.Password, cfg.SASL.PasswordFile = "wrong", ""
			if readsOne(t, newTestKafka(t, cfg, KafkaOptions{HeartbeatInterval: 100 * time.Millisecond}), 500*time.Millisecond) {
				t.Fatal("an event with a wrong password")
			}
		})
	}
}

// testPKI is a CA with a server certificate for "kafka.test" and a client
// certificate, written as PEM files in a temporary directory.
type testPKI struct {
	dir                   string
	caFile                string
	pool                  *x509.CertPool
	server                tls.Certificate
	clientCert, clientKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pushd test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, name string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			DNSNames:     []string{name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	writePEM := func(name, kind string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	serverDER, serverKey := issue(2, "kafka.test", x509.ExtKeyUsageServerAuth)
	clientDER, clientKey := issue(3, "pushd", x509.ExtKeyUsageClientAuth)
	clientKeyDER, err := x509.MarshalECPrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{
		dir:        dir,
		caFile:     writePEM("ca.pem", "CERTIFICATE", caDER),
		pool:       pool,
		server:     tls.Certificate{Certificate: [][]byte{serverDER}, PrivateKey: serverKey},
		clientCert: writePEM("client.pem", "CERTIFICATE", clientDER),
		clientKey:  writePEM("client-key.pem", "EC PRIVATE KEY", clientKeyDER),
	}
}

func TestKafkaTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	tests := []struct {
		name       string
		mutualTLS  bool
		tls        TLSConfig
		wantEvents bool
	}{
		{
			name:       "ca file and server name",
			tls:        TLSConfig{Enabled: true, CAFile: pki.caFile, ServerName: "kafka.test"},
			wantEvents: true,
		},
		{
			name: "certificate for another name is refused",
			tls:  TLSConfig{Enabled: true, CAFile: pki.caFile, ServerName: "other.test"},
		},
		{
			name: "unknown CA is refused",
			tls:  TLSConfig{Enabled: true, ServerName: "kafka.test"},
		},
		{
			name:       "insecure_skip_verify accepts it",
			tls:        TLSConfig{Enabled: true, InsecureSkipVerify: true},
			wantEvents: true,
		},
		{
			name:       "client certificate for mutual TLS",
			mutualTLS:  true,
			tls:        TLSConfig{Enabled: true, CAFile: pki.caFile, ServerName: "kafka.test", CertFile: pki.clientCert, KeyFile: pki.clientKey},
			wantEvents: true,
		},
		{
			name:      "mutual TLS without a client certificate is refused",
			mutualTLS: true,
			tls:       TLSConfig{Enabled: true, CAFile: pki.caFile, ServerName: "kafka.test"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			serverTLS := &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12}
			producerTLS := &tls.Config{RootCAs: pki.pool, ServerName: "kafka.test", MinVersion: tls.VersionTLS12}
			if tt.mutualTLS {
				serverTLS.ClientAuth = tls.RequireAndVerifyClientCert
				serverTLS.ClientCAs = pki.pool
				cert, err := tls.LoadX509KeyPair(pki.clientCert, pki.clientKey)
				if err != nil {
					t.Fatal(err)
				}
				producerTLS.Certificates = []tls.Certificate{cert}
			}
			c := newTestCluster(t, kfake.TLS(serverTLS))
			produce(t, c, 0, 1, kgo.DialTLSConfig(producerTLS))

			cfg := testKafkaConfig(c, "g-tls")
			cfg.TLS = tt.tls
			wait := 20 * time.Second
			if !tt.wantEvents {
				wait = 500 * time.Millisecond
			}
			opts := testKafkaOptions(t)
			if !tt.wantEvents {
				opts.Logger = nil // the refused handshakes are expected
			}
			if got := readsOne(t, newTestKafka(t, cfg, opts), wait); got != tt.wantEvents {
				t.Fatalf("read an event: %v, want %v", got, tt.wantEvents)
			}
		})
	}
}

func TestNewKafkaErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := DefaultConfig().Kafka
	base.Brokers = []string{"127.0.0.1:1"}
	base.Topics = []string{"events"}
	base.GroupID = "g"
	tests := []struct {
		name    string
		mutate  func(*KafkaConfig)
		wantErr string
	}{
		{"invalid config", func(c *KafkaConfig) { c.GroupID = "" }, "group_id: required"},
		{"missing ca file", func(c *KafkaConfig) { c.TLS = TLSConfig{Enabled: true, CAFile: filepath.Join(dir, "nope.pem")} }, "reading ca_file"},
		{"ca file without PEM", func(c *KafkaConfig) { c.TLS = TLSConfig{Enabled: true, CAFile: notPEM} }, "no PEM certificate"},
		{"bad client key pair", func(c *KafkaConfig) { c.TLS = TLSConfig{Enabled: true, CertFile: notPEM, KeyFile: notPEM} }, "loading cert_file"},
		{"missing password file", func(c *KafkaConfig) {
			c.SASL = SASLConfig{Mechanism: SASLPlain, Username: "u", PasswordFile: filepath.Join(dir, "nope")}
		}, "reading password_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			k, err := NewKafka(cfg, KafkaOptions{})
			if err == nil {
				_ = k.Close(context.Background())
				t.Fatalf("NewKafka succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewKafka = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestKafkaTLSDefaultsVerify(t *testing.T) {
	t.Parallel()
	conf, err := KafkaTLS(TLSConfig{Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	if conf.InsecureSkipVerify || conf.MinVersion < tls.VersionTLS12 || conf.RootCAs != nil {
		t.Fatalf("default TLS config %+v: want verification on, TLS 1.2+, system roots", conf)
	}
	if conf, _ := KafkaTLS(TLSConfig{}); conf != nil {
		t.Fatal("TLS config built with TLS disabled")
	}
}
