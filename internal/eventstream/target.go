package eventstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/pushd/pushd/internal/pipeline"
	"github.com/pushd/pushd/internal/source"
)

// Errors of Send, to classify with errors.Is.
var (
	// ErrMessageTooLarge marks a row over max_message_bytes, or one the
	// endpoint refused as too large: it goes to the dead letter.
	ErrMessageTooLarge = errors.New("message too large for the eventstream")
	// ErrRejected marks a row the endpoint refused for itself (invalid
	// record, timestamp or policy): it goes to the dead letter.
	ErrRejected = errors.New("message refused by the eventstream")
	// ErrRetriesExhausted marks rows still failing after retry.max_elapsed:
	// they go to the dead letter.
	ErrRetriesExhausted = errors.New("retries exhausted")
	// ErrRefused marks an error of the target itself (authentication,
	// authorisation, unknown topic at start): the pipeline stops rather
	// than dead-letter the stream.
	ErrRefused = errors.New("eventstream refused the client")
)

// RowErrors is returned by Send when the rows of a batch had different
// outcomes: entry i is row i's error, nil when it was accepted.
type RowErrors []error

func (e RowErrors) Error() string {
	n, first := 0, error(nil)
	for _, err := range e {
		if err != nil {
			n++
			if first == nil {
				first = err
			}
		}
	}
	return fmt.Sprintf("%d of %d messages not produced (first: %v)", n, len(e), first)
}

// RowError returns row i's error, nil when it was accepted.
func (e RowErrors) RowError(i int) error { return e[i] }

// Options are what a Target needs beyond its config.
type Options struct {
	// Name labels the target in logs and metrics (the pipeline's name and
	// the target's, e.g. "telemetry/fabric").
	Name    string
	Logger  *slog.Logger
	Metrics *Metrics
	// Sleep waits between retries; nil sleeps on the wall clock (tests
	// inject a fake).
	Sleep func(ctx context.Context, d time.Duration) error
}

// Target produces rows to one eventstream. Make it with New; its methods
// are safe for concurrent use. It starts no goroutine of its own beyond
// kafka-go's writer.
type Target struct {
	cfg    Config
	name   string
	log    *slog.Logger
	m      targetMetrics
	w      *kafka.Writer
	dialer *kafka.Dialer
	sleep  func(ctx context.Context, d time.Duration) error
	batch  atomic.Uint64 // numbers the batches, for the partition choice
}

// New builds the writer for cfg (with defaults from the connection string
// applied). It does not connect: call Check to connect, authenticate and
// see the topic.
func New(cfg Config, opts Options) (*Target, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsConf, err := source.KafkaTLS(cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	mech := plain.Mechanism{Username: SASLUser, Password: cfg.Auth.ConnectionString.Reveal()}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	t := &Target{
		cfg:   cfg,
		name:  opts.Name,
		log:   opts.Logger.With("target", opts.Name),
		m:     opts.Metrics.target(opts.Name),
		sleep: opts.Sleep,
		dialer: &kafka.Dialer{ClientID: cfg.ClientID, Timeout: cfg.Timeout, DualStack: true,
			TLS: tlsConf, SASLMechanism: mech},
	}
	t.w = &kafka.Writer{
		Addr:  kafka.TCP(cfg.BootstrapServer),
		Topic: cfg.Topic,
		// One partition per batch (or per key): kafka-go's partition
		// writers then send each batch whole instead of a message to each
		// partition.
		Balancer:     kafka.BalancerFunc(t.balance),
		MaxAttempts:  1, // Send retries, with pushd's backoff and metrics
		BatchSize:    cfg.Batch.MaxRows,
		BatchBytes:   LimitBatchBytes,
		BatchTimeout: time.Millisecond, // Send hands over whole batches: do not wait for more
		WriteTimeout: cfg.Timeout,
		ReadTimeout:  cfg.Timeout,
		RequiredAcks: kafka.RequireAll,
		Compression:  codec(cfg.Compression),
		Transport: &kafka.Transport{
			ClientID:    cfg.ClientID,
			DialTimeout: cfg.Timeout,
			TLS:         tlsConf,
			SASL:        mech,
			IdleTimeout: 4 * time.Minute, // Event Hubs closes idle connections at 240s
		},
	}
	return t, nil
}

func codec(name string) compress.Compression {
	switch name {
	case CompressionGzip:
		return kafka.Gzip
	case CompressionSnappy:
		return kafka.Snappy
	case CompressionLz4:
		return kafka.Lz4
	case CompressionZstd:
		return kafka.Zstd
	}
	return 0
}

// Config returns the target's config, with the defaults from the
// connection string applied.
func (t *Target) Config() Config { return t.cfg }

// Name returns the target's name.
func (t *Target) Name() string { return t.name }

// balance sends a keyed message by its key's hash and an unkeyed one to the
// partition of its batch (WriterData holds the batch number).
func (t *Target) balance(msg kafka.Message, partitions ...int) int {
	if len(msg.Key) > 0 {
		var h uint32 = 2166136261 // FNV-1a
		for _, c := range msg.Key {
			h = (h ^ uint32(c)) * 16777619
		}
		return partitions[h%uint32(len(partitions))]
	}
	n, _ := msg.WriterData.(uint64)
	return partitions[n%uint64(len(partitions))]
}

// Close flushes and closes the writer.
func (t *Target) Close() error { return t.w.Close() }

// Check connects to the bootstrap server, authenticates and reads the
// endpoint's topics; it fails unless the topic is among them. It returns
// the number of partitions of the topic.
func (t *Target) Check(ctx context.Context) (int, error) {
	conn, err := t.dialer.DialContext(ctx, "tcp", t.cfg.BootstrapServer)
	if err != nil {
		return 0, fmt.Errorf("connecting to %s as %s: %w", t.cfg.BootstrapServer, SASLUser, explain(err))
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// All topics: naming the one would let a broker that auto-creates
	// topics create it.
	parts, err := conn.ReadPartitions()
	if err != nil {
		return 0, fmt.Errorf("reading the topics of %s: %w", t.cfg.BootstrapServer, explain(err))
	}
	counts := map[string]int{}
	for _, p := range parts {
		counts[p.Topic]++
	}
	if n := counts[t.cfg.Topic]; n > 0 {
		return n, nil
	}
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	sort.Strings(names)
	return 0, fmt.Errorf("%w: topic %q not found on %s (it has: %s); topic must be the eventstream's entity name",
		ErrRefused, t.cfg.Topic, t.cfg.BootstrapServer, orNone(names))
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// explain turns an authentication failure into ErrRefused with a hint.
func explain(err error) error {
	var ke kafka.Error
	if errors.As(err, &ke) {
		switch ke {
		case kafka.SASLAuthenticationFailed:
			return fmt.Errorf("%w: authentication failed: check auth.connection_string (the SAS key may be wrong or regenerated): %w", ErrRefused, err)
		case kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed:
			return fmt.Errorf("%w: the connection string's key does not grant Send on this entity: %w", ErrRefused, err)
		case kafka.UnsupportedSASLMechanism, kafka.IllegalSASLState:
			return fmt.Errorf("%w: the endpoint refused SASL PLAIN: %w", ErrRefused, err)
		}
	}
	return err
}

// Send produces rows as one batch, one message each, and returns once the
// endpoint acknowledged them with all replicas (RequiredAcks: all), or they
// failed for good, or ctx ended. It retries throttling and transient
// errors, rows that failed alone, with capped exponential backoff and full
// jitter. It returns nil when every row was produced, RowErrors when only
// some were, or one error for all.
func (t *Target) Send(ctx context.Context, rows []json.RawMessage) error {
	start := time.Now()
	errs := make([]error, len(rows))
	msgs := make([]kafka.Message, 0, len(rows))
	idx := make([]int, 0, len(rows)) // msgs[j] is rows[idx[j]]
	batch := t.batch.Add(1)
	for i, r := range rows {
		key, err := t.key(r)
		if err == nil && len(key)+len(r) > t.cfg.MaxMessageBytes {
			err = fmt.Errorf("%w: %d bytes of key and value, over max_message_bytes %d", ErrMessageTooLarge, len(key)+len(r), t.cfg.MaxMessageBytes)
		}
		if err != nil {
			errs[i] = err
			continue
		}
		msgs = append(msgs, kafka.Message{Key: key, Value: r, WriterData: batch})
		idx = append(idx, i)
	}
	for attempt := 1; len(msgs) > 0; attempt++ {
		last := t.attempt(ctx, msgs, idx, errs)
		msgs, idx = pending(msgs, idx, errs)
		if len(msgs) == 0 {
			break
		}
		if ctx.Err() != nil {
			break
		}
		if err := t.diagnose(ctx, last); err != nil {
			for _, i := range idx {
				errs[i] = err
			}
			break
		}
		delay := t.backoff(attempt)
		if r := t.cfg.Retry; r.MaxElapsed > 0 && time.Since(start)+delay > r.MaxElapsed {
			wrapped := fmt.Errorf("%w: %d attempts in %s: %w", ErrRetriesExhausted, attempt, time.Since(start).Round(time.Millisecond), last)
			for _, i := range idx {
				errs[i] = wrapped
			}
			break
		}
		t.m.retries.Inc()
		if throttled(last) {
			t.m.throttled.Inc()
		}
		t.log.Warn("produce failed; retrying", "topic", t.cfg.Topic, "rows", len(msgs), "attempt", attempt, "wait", delay, "err", last)
		if err := t.sleep(ctx, delay); err != nil {
			break
		}
	}
	return t.outcome(ctx, errs)
}

// attempt writes msgs once and records each message's error in errs:
// permanent errors as they are, transient ones wrapped so that pending
// keeps the message. It returns the first error seen.
func (t *Target) attempt(ctx context.Context, msgs []kafka.Message, idx []int, errs []error) error {
	actx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	began := time.Now()
	err := t.w.WriteMessages(actx, msgs...)
	cancel()
	t.m.duration.Observe(time.Since(began).Seconds())
	if err == nil {
		n := 0
		for j, i := range idx {
			errs[i] = nil
			n += len(msgs[j].Value)
		}
		t.m.accepted.Add(float64(len(msgs)))
		t.m.bytes.Add(float64(n))
		return nil
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) && len(we) == len(msgs) {
		var first error
		for j, i := range idx {
			errs[i] = classify(we[j])
			if we[j] == nil {
				t.m.accepted.Inc()
				t.m.bytes.Add(float64(len(msgs[j].Value)))
			} else if first == nil {
				first = errs[i]
			}
		}
		return first
	}
	err = classify(err)
	for _, i := range idx {
		errs[i] = err
	}
	return err
}

// diagnose returns ErrRefused when the target itself refuses pushd: last
// says so, or last is a connection failure (kafka-go's writer reports a
// failed SASL handshake as a bare EOF) and a fresh dial is refused. Nil
// means last is worth retrying.
func (t *Target) diagnose(ctx context.Context, last error) error {
	if errors.Is(last, ErrRefused) {
		return last
	}
	var ke kafka.Error
	if errors.As(last, &ke) {
		return nil // the broker answered: the connection is fine
	}
	dctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	conn, err := t.dialer.DialContext(dctx, "tcp", t.cfg.BootstrapServer)
	if err != nil {
		if err := explain(err); errors.Is(err, ErrRefused) {
			return fmt.Errorf("connecting to %s as %s: %w", t.cfg.BootstrapServer, SASLUser, err)
		}
		return nil
	}
	_ = conn.Close()
	return nil
}

// transient wraps an error worth retrying; pending keeps its messages.
type transient struct{ err error }

func (e *transient) Error() string { return e.err.Error() }
func (e *transient) Unwrap() error { return e.err }

// classify sorts a produce error: a row's own fault (ErrMessageTooLarge,
// ErrRejected), the target's (ErrRefused), or transient.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		switch ke {
		case kafka.MessageSizeTooLarge, kafka.RecordListTooLarge:
			return fmt.Errorf("%w: the endpoint refused it: %w", ErrMessageTooLarge, err)
		case kafka.InvalidRecord, kafka.InvalidTimestamp, kafka.PolicyViolation:
			return fmt.Errorf("%w: %w", ErrRejected, err)
		case kafka.SASLAuthenticationFailed, kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed,
			kafka.UnsupportedSASLMechanism, kafka.IllegalSASLState, kafka.InvalidRequiredAcks, kafka.InvalidTopic:
			return explainRefused(err)
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &transient{err} // an attempt's timeout; the caller checks its own ctx
	}
	return &transient{err}
}

func explainRefused(err error) error {
	if e := explain(err); errors.Is(e, ErrRefused) {
		return e
	}
	return fmt.Errorf("%w: %w", ErrRefused, err)
}

// throttled reports whether err is the endpoint asking to slow down.
func throttled(err error) bool {
	var ke kafka.Error
	return errors.As(err, &ke) && (ke == kafka.ThrottlingQuotaExceeded || ke == kafka.RequestTimedOut)
}

// pending returns the messages whose last error is transient, in place.
func pending(msgs []kafka.Message, idx []int, errs []error) ([]kafka.Message, []int) {
	k := 0
	var tr *transient
	for j, i := range idx {
		if errors.As(errs[i], &tr) && errs[i] == error(tr) {
			msgs[k], idx[k] = msgs[j], i
			k++
		}
	}
	return msgs[:k], idx[:k]
}

// outcome unwraps transient errors (the rows were not produced; ctx ended
// or the target refused), counts the results and shapes Send's error.
func (t *Target) outcome(ctx context.Context, errs []error) error {
	failed, first := 0, error(nil)
	var tr *transient
	for i, err := range errs {
		if err == nil {
			continue
		}
		if errors.As(err, &tr) && err == error(tr) {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (last attempt: %v)", context.Cause(ctx), tr.err)
			} else {
				err = tr.err
			}
			errs[i] = err
		}
		switch {
		case errors.Is(err, ErrMessageTooLarge), errors.Is(err, ErrRejected), errors.Is(err, ErrRetriesExhausted):
			t.m.rejected.Inc()
		default:
			t.m.failed.Inc()
		}
		failed++
		if first == nil {
			first = err
		}
	}
	switch {
	case failed == 0:
		return nil
	case failed == len(errs) && allSame(errs):
		return first
	}
	return RowErrors(errs)
}

func allSame(errs []error) bool {
	for _, e := range errs[1:] {
		if e != errs[0] && e.Error() != errs[0].Error() {
			return false
		}
	}
	return true
}

// key returns the message key of row: the key column's value as text (a
// string without its quotes), nil without a key column or for a null.
func (t *Target) key(row json.RawMessage) ([]byte, error) {
	if t.cfg.KeyColumn == "" {
		return nil, nil
	}
	raw, err := field(row, t.cfg.KeyColumn)
	if err != nil || raw == nil || string(raw) == "null" {
		return nil, err
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%w: key column %s: %w", ErrRejected, t.cfg.KeyColumn, err)
		}
		return []byte(s), nil
	}
	return raw, nil
}

// field returns the raw value of the top-level key name in a JSON object,
// nil when absent. Rows are compact objects made by the schema mapper, so a
// scan over the top level finds it without decoding the row.
func field(row json.RawMessage, name string) (json.RawMessage, error) {
	bad := func() (json.RawMessage, error) {
		return nil, fmt.Errorf("%w: row is not a JSON object: %.40s", ErrRejected, row)
	}
	i := skipSpace(row, 0)
	if i >= len(row) || row[i] != '{' {
		return bad()
	}
	i++
	for {
		i = skipSpace(row, i)
		if i < len(row) && row[i] == '}' {
			return nil, nil
		}
		kEnd := skipString(row, i)
		if kEnd < 0 {
			return bad()
		}
		key := row[i:kEnd]
		i = skipSpace(row, kEnd)
		if i >= len(row) || row[i] != ':' {
			return bad()
		}
		i = skipSpace(row, i+1)
		vEnd := skipValue(row, i)
		if vEnd < 0 {
			return bad()
		}
		if keyIs(key, name) {
			return row[i:vEnd], nil
		}
		i = skipSpace(row, vEnd)
		switch {
		case i < len(row) && row[i] == ',':
			i++
		case i < len(row) && row[i] == '}':
			return nil, nil
		default:
			return bad()
		}
	}
}

// keyIs reports whether the JSON string quoted equals name.
func keyIs(quoted []byte, name string) bool {
	if len(quoted) == len(name)+2 && string(quoted[1:len(quoted)-1]) == name {
		return true
	}
	if !strings.ContainsRune(string(quoted), '\\') {
		return false
	}
	var s string
	return json.Unmarshal(quoted, &s) == nil && s == name
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the JSON string starting at i, -1 if
// there is none.
func skipString(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the JSON value starting at i, -1 if it
// is cut short.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				if i = skipString(b, i); i < 0 {
					return -1
				}
				i--
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\t' && b[j] != '\r' {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// backoff is the capped exponential backoff of an attempt, with full
// jitter (the rule of pushapi's retries).
func (t *Target) backoff(attempt int) time.Duration {
	d := t.cfg.Retry.InitialBackoff
	for i := 1; i < attempt && d < t.cfg.Retry.MaxBackoff; i++ {
		d *= 2
	}
	return rand.N(min(d, t.cfg.Retry.MaxBackoff) + 1)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

var _ pipeline.Target = (*Target)(nil)

// Verdict tells the pipeline what a Send error means for its rows: too
// large or refused rows and exhausted retries go to the dead letter, a
// refusal of the client itself stops the pipeline, anything else (ctx
// ended) leaves the rows undelivered.
func (t *Target) Verdict(err error) pipeline.Verdict {
	v := pipeline.Verdict{Outcome: pipeline.OutcomeFailed, Rule: "rejected", Message: err.Error()}
	var ke kafka.Error
	if errors.As(err, &ke) {
		v.Code = ke.Title()
	}
	switch {
	case errors.Is(err, ErrMessageTooLarge):
		v.Outcome, v.Rule = pipeline.OutcomeDeadLetter, "size"
	case errors.Is(err, ErrRejected):
		v.Outcome = pipeline.OutcomeDeadLetter
	case errors.Is(err, ErrRetriesExhausted):
		v.Outcome, v.Rule = pipeline.OutcomeDeadLetter, "retries_exhausted"
	case errors.Is(err, ErrRefused):
		v.Outcome = pipeline.OutcomeFatal
	}
	return v
}
