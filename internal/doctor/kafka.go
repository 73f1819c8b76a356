package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/pushd/pushd/internal/source"
)

// checkKafka connects to the first reachable broker with the source's TLS
// and SASL settings and checks that every topic exists. It reads the
// cluster's metadata for all topics, so that a broker with
// auto.create.topics.enable never creates a topic on doctor's behalf.
func checkKafka(ctx context.Context, kc source.KafkaConfig, key string) Check {
	tlsConf, err := source.KafkaTLS(kc.TLS)
	if err != nil {
		return Check{Status: Fail, Detail: err.Error(), Fix: fmt.Sprintf("check %s.tls: the files must exist and hold PEM certificates (and the matching key)", key)}
	}
	mech, err := source.KafkaSASL(kc.SASL)
	if err != nil {
		return Check{Status: Fail, Detail: err.Error(), Fix: fmt.Sprintf("check %s.sasl", key)}
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	d := &kafka.Dialer{ClientID: kc.ClientID, Timeout: timeout, DualStack: true, TLS: tlsConf, SASLMechanism: mech}
	var (
		conn   *kafka.Conn
		broker string
		errs   []string
		last   error
	)
	for _, b := range kc.Brokers {
		c, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			conn, broker = c, b
			break
		}
		last = err
		errs = append(errs, fmt.Sprintf("%s: %v", b, err))
	}
	if conn == nil {
		return Check{Status: Fail, Detail: "cannot connect to any broker: " + strings.Join(errs, "; "), Fix: dialFix(last, key)}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	parts, err := conn.ReadPartitions()
	if err != nil {
		return Check{Status: Fail, Detail: fmt.Sprintf("connected to %s but reading the topic list failed: %v", broker, err),
			Fix: fmt.Sprintf("the principal %s authenticates as needs Describe on the topics (Kafka ACLs)", describeAuth(kc))}
	}
	partitions := map[string]int{}
	for _, p := range parts {
		partitions[p.Topic]++
	}
	var missing, found []string
	for _, t := range kc.Topics {
		if n, ok := partitions[t]; ok {
			found = append(found, fmt.Sprintf("%s (%d partitions)", t, n))
		} else {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return Check{Status: Fail,
			Detail: fmt.Sprintf("connected to %s (%s) but topic(s) %s not found (the cluster has %s)", broker, describeAuth(kc), strings.Join(missing, ", "), topicList(partitions)),
			Fix:    fmt.Sprintf("create the topic(s) (e.g. kafka-topics.sh --bootstrap-server %s --create --topic %s --partitions 3), or correct %s.topics; if they exist, the principal needs Describe on them (ACLs). pushd never creates topics", broker, missing[0], key)}
	}
	return Check{Status: Pass, Detail: fmt.Sprintf("connected to %s (%s); topics %s", broker, describeAuth(kc), strings.Join(found, ", "))}
}

func describeAuth(kc source.KafkaConfig) string {
	var parts []string
	if kc.TLS.Enabled {
		parts = append(parts, "TLS")
	} else {
		parts = append(parts, "plaintext")
	}
	if kc.SASL.Mechanism != "" {
		parts = append(parts, "SASL "+kc.SASL.Mechanism+" as "+kc.SASL.Username)
	}
	return strings.Join(parts, ", ")
}

func topicList(partitions map[string]int) string {
	if len(partitions) == 0 {
		return "no topics"
	}
	names := make([]string, 0, len(partitions))
	for t := range partitions {
		names = append(names, t)
	}
	sort.Strings(names)
	if len(names) > 10 {
		names = append(names[:10], fmt.Sprintf("and %d more", len(partitions)-10))
	}
	return "topics " + strings.Join(names, ", ")
}

// dialFix says what to do when no broker could be reached.
func dialFix(err error, key string) string {
	var (
		recordHeader tls.RecordHeaderError
		unknownCA    x509.UnknownAuthorityError
		hostname     x509.HostnameError
	)
	switch {
	case errors.Is(err, kafka.SASLAuthenticationFailed):
		return fmt.Sprintf("the brokers refused the SASL credentials: check %s.sasl.mechanism, username and password (or password_file)", key)
	case errors.Is(err, kafka.UnsupportedSASLMechanism):
		return fmt.Sprintf("the brokers do not offer %s.sasl.mechanism: use one they enable (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", key)
	case errors.As(err, &recordHeader):
		return fmt.Sprintf("the broker did not answer TLS: set %s.tls.enabled: false for a plaintext listener, or use the TLS listener's port", key)
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("the broker's certificate is signed by an unknown CA: set %s.tls.ca_file to the CA bundle", key)
	case errors.As(err, &hostname):
		return fmt.Sprintf("the broker's certificate does not name the address dialled: use the name in the certificate in %s.brokers, or set %s.tls.server_name", key, key)
	}
	return fmt.Sprintf("check %s.brokers (host:port of the bootstrap servers), DNS, firewalls and network policies; from this host a TCP connection to the port must succeed (e.g. nc -vz host port). If the listener needs TLS or SASL, set %s.tls / %s.sasl", key, key, key)
}
