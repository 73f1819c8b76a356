// Package eventstreamtest runs a stand-in for a Fabric eventstream's custom
// endpoint: a kfake Kafka cluster on loopback that speaks only TLS and
// accepts only SASL PLAIN with the user $ConnectionString and one
// connection string as the password, as the service does.
package eventstreamtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/pushd/pushd/internal/eventstream"
	"github.com/pushd/pushd/internal/secret"
)

// Topic is the entity name of the stand-in eventstream.
const Topic = "es_pushd_test"

// Endpoint is a running stand-in.
type Endpoint struct {
	Cluster *kfake.Cluster
	// Addr is the bootstrap server, 127.0.0.1:port.
	Addr string
	// ConnectionString is the one accepted password; its EntityPath is Topic.
	ConnectionString string
	// CAFile is the PEM file of the CA that signed the endpoint's certificate.
	CAFile string
	pool   *x509.CertPool
}

// Start runs an endpoint with partitions partitions, writing its CA
// certificate in dir. Extra kfake options come last.
func Start(dir string, partitions int32, opts ...kfake.Opt) (*Endpoint, error) {
	cert, caPEM, err := serverCert()
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "eventstream-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	cs := "Endpoint=sb://eventstream.test.servicebus.windows.net/;SharedAccessKeyName=key_pushd;SharedAccessKey=" +
		hex.EncodeToString(key) + ";EntityPath=" + Topic
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.SeedTopics(partitions, Topic),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", eventstream.SASLUser, cs),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("starting kfake: %w", err)
	}
	return &Endpoint{Cluster: c, Addr: c.ListenAddrs()[0], ConnectionString: cs, CAFile: caFile, pool: pool}, nil
}

// Close stops the endpoint.
func (e *Endpoint) Close() { e.Cluster.Close() }

// Config returns a target config for the endpoint.
func (e *Endpoint) Config() eventstream.Config {
	cfg := eventstream.DefaultConfig()
	cfg.BootstrapServer = e.Addr
	cfg.Auth.ConnectionString = secret.Value(e.ConnectionString)
	cfg.TLS.CAFile = e.CAFile
	return cfg
}

// Message is one message read back.
type Message struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
}

// Messages reads the topic from the start until it has read want messages
// or ctx ends; it returns what it read (an error with fewer than want).
func (e *Endpoint) Messages(ctx context.Context, want int) ([]Message, error) {
	cl, err := e.client(kgo.ConsumeTopics(Topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []Message
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("read %d of %d messages: %w", len(out), want, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return out, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, Message{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value})
		})
	}
	return out, nil
}

// DeleteTopic deletes the eventstream's topic (to test a missing one).
func (e *Endpoint) DeleteTopic(ctx context.Context) error {
	cl, err := e.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).DeleteTopics(ctx, Topic)
	if err != nil {
		return err
	}
	return resp.Error()
}

func (e *Endpoint) client(opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(e.Addr),
		kgo.DialTLSConfig(&tls.Config{RootCAs: e.pool, MinVersion: tls.VersionTLS12}),
		kgo.SASL(plain.Auth{User: eventstream.SASLUser, Pass: e.ConnectionString}.AsMechanism()),
	}, opts...)...)
}

// Count returns the number of messages in the topic (the sum of its
// partitions' high watermarks).
func (e *Endpoint) Count(ctx context.Context) (int64, error) {
	cl, err := e.client()
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, Topic)
	if err != nil {
		return 0, err
	}
	if err := ends.Error(); err != nil {
		return 0, err
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n, nil
}

// serverCert makes a self-signed P-256 certificate for
// 127.0.0.1 and localhost; it is its own CA.
func serverCert() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "eventstream stand-in"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
