package eventstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
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
// kafka-go's transport (its connections and metadata refresh), and one per
// partition while a keyed batch is produced.
//
// It produces with kafka-go's Client and Transport rather than its Writer:
// the Writer copies every row into a kafka.Message, looks the topic's
// metadata up for every message, allocates each partition batch at its
// full BatchSize and runs a goroutine and a timer per batch, which made the
// eventstream path cost twice the CPU of the Power BI path per event. Send
// already holds a whole batch, so it makes one produce request per
// partition whose records are read straight from the rows.
type Target struct {
	cfg         Config
	name        string
	log         *slog.Logger
	m           targetMetrics
	client      *kafka.Client
	transport   *kafka.Transport
	compression kafka.Compression
	dialer      *kafka.Dialer
	sleep       func(ctx context.Context, d time.Duration) error
	batch       atomic.Uint64 // numbers the batches, for the partition choice
	spare       spares        // buffers of finished Sends, for the next ones
}

// spares keeps the per-row buffers of finished Sends (a batch's errors and
// row indexes, 24 bytes a row: its largest allocations) for the next
// Sends, at most max_in_flight of them: without it each batch of 1,000
// rows left 24 KB of garbage, and the collector, which runs at the soft
// memory limit, ran that much more often.
type spares struct {
	mu   sync.Mutex
	bufs []*sendBuffers
}

// sendBuffers are the per-row buffers of one Send.
type sendBuffers struct {
	errs []error
	idx  []int
}

// take returns buffers for n rows: spare ones when they are large enough
// (errs all nil, idx empty), new ones otherwise.
func (s *spares) take(n int) *sendBuffers {
	s.mu.Lock()
	var b *sendBuffers
	if k := len(s.bufs); k > 0 {
		b = s.bufs[k-1]
		s.bufs[k-1] = nil
		s.bufs = s.bufs[:k-1]
	}
	s.mu.Unlock()
	if b == nil || cap(b.errs) < n {
		return &sendBuffers{errs: make([]error, n), idx: make([]int, 0, n)}
	}
	return &sendBuffers{errs: b.errs[:n], idx: b.idx[:0]}
}

// put keeps b for a later Send unless limit of them are kept already. The
// caller must no longer use b: errs is cleared here, so an error slice
// Send returned (RowErrors) must never be put.
func (s *spares) put(b *sendBuffers, limit int) {
	clear(b.errs)
	s.mu.Lock()
	if len(s.bufs) < limit {
		s.bufs = append(s.bufs, b)
	}
	s.mu.Unlock()
}

// New builds the client for cfg (with defaults from the connection string
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
		cfg:         cfg,
		name:        opts.Name,
		log:         opts.Logger.With("target", opts.Name),
		m:           opts.Metrics.target(opts.Name),
		sleep:       opts.Sleep,
		compression: codec(cfg.Compression),
		dialer: &kafka.Dialer{ClientID: cfg.ClientID, Timeout: cfg.Timeout, DualStack: true,
			TLS: tlsConf, SASLMechanism: mech},
		transport: &kafka.Transport{
			ClientID:    cfg.ClientID,
			DialTimeout: cfg.Timeout,
			TLS:         tlsConf,
			SASL:        mech,
			IdleTimeout: 4 * time.Minute, // Event Hubs closes idle connections at 240s
		},
	}
	t.client = &kafka.Client{Addr: kafka.TCP(cfg.BootstrapServer), Transport: t.transport, Timeout: cfg.Timeout}
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

// partitionOf returns the partition of a keyed row: its key's FNV-1a hash
// modulo the topic's partitions (rows with the same key stay in order in
// one partition).
func partitionOf(key []byte, partitions int) int {
	var h uint32 = 2166136261
	for _, c := range key {
		h = (h ^ uint32(c)) * 16777619
	}
	return int(h % uint32(partitions))
}

// Close closes the connections to the endpoint. Send returns only once its
// rows are acknowledged, so there is nothing to flush.
func (t *Target) Close() error {
	t.transport.CloseIdleConnections()
	return nil
}

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
	bufs := t.spare.take(len(rows))
	errs := bufs.errs
	b := t.outgoing(rows, errs, bufs.idx)
	for attempt := 1; len(b.idx) > 0; attempt++ {
		last := t.attempt(ctx, b, errs)
		b.idx = pending(b.idx, errs)
		if len(b.idx) == 0 || ctx.Err() != nil {
			break
		}
		if err := t.diagnose(ctx, last); err != nil {
			for _, i := range b.idx {
				errs[i] = err
			}
			break
		}
		delay := t.backoff(attempt)
		if r := t.cfg.Retry; r.MaxElapsed > 0 && time.Since(start)+delay > r.MaxElapsed {
			wrapped := fmt.Errorf("%w: %d attempts in %s: %w", ErrRetriesExhausted, attempt, time.Since(start).Round(time.Millisecond), last)
			for _, i := range b.idx {
				errs[i] = wrapped
			}
			break
		}
		t.m.retries.Inc()
		if throttled(last) {
			t.m.throttled.Inc()
		}
		t.log.Warn("produce failed; retrying", "topic", t.cfg.Topic, "rows", len(b.idx), "attempt", attempt, "wait", delay, "err", last)
		if err := t.sleep(ctx, delay); err != nil {
			break
		}
	}
	err := t.outcome(ctx, errs)
	if _, kept := err.(RowErrors); !kept {
		// errs is not part of the answer; b.idx never is (the records of a
		// produce that may still be encoding have their own copy).
		t.spare.put(&sendBuffers{errs: errs, idx: b.idx}, t.cfg.MaxInFlight)
	}
	return err
}

// outgoing is one Send's batch: its rows, their keys and the rows still to
// produce.
type outgoing struct {
	rows []json.RawMessage
	keys [][]byte // keys[i] is rows[i]'s key (nil: none); nil without key_column
	idx  []int    // the rows still to produce, in order
	n    uint64   // the batch's number: the partition of its unkeyed rows
}

// outgoing takes the keys of rows and sets the error of each row that
// cannot be produced (a bad key, over max_message_bytes).
// idx is an empty slice with room for every row.
func (t *Target) outgoing(rows []json.RawMessage, errs []error, idx []int) *outgoing {
	b := &outgoing{rows: rows, idx: idx, n: t.batch.Add(1)}
	if t.cfg.KeyColumn != "" {
		b.keys = make([][]byte, len(rows))
	}
	for i, r := range rows {
		var key []byte
		var err error
		if b.keys != nil {
			key, err = t.key(r)
			b.keys[i] = key
		}
		if err == nil && len(key)+len(r) > t.cfg.MaxMessageBytes {
			err = fmt.Errorf("%w: %d bytes of key and value, over max_message_bytes %d", ErrMessageTooLarge, len(key)+len(r), t.cfg.MaxMessageBytes)
		}
		if err != nil {
			errs[i] = err
			continue
		}
		b.idx = append(b.idx, i)
	}
	return b
}

// attempt produces the rows of b.idx once and records each row's error in
// errs: permanent errors as they are, transient ones wrapped so that
// pending keeps the row. It returns the first error seen.
func (t *Target) attempt(ctx context.Context, b *outgoing, errs []error) error {
	actx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	began := time.Now()
	parts, err := t.assign(actx, b)
	switch {
	case err != nil:
		err = classify(err)
		for _, i := range b.idx {
			errs[i] = err
		}
	case len(parts) == 1:
		t.produce(actx, b.records(parts[0]), errs)
	default:
		var wg sync.WaitGroup
		for _, p := range parts {
			wg.Go(func() { t.produce(actx, b.records(p), errs) })
		}
		wg.Wait()
	}
	t.m.duration.Observe(time.Since(began).Seconds())
	var first error
	accepted, size := 0, 0
	for _, i := range b.idx {
		if errs[i] == nil {
			accepted++
			size += len(b.rows[i])
		} else if first == nil {
			first = errs[i]
		}
	}
	t.m.accepted.Add(float64(accepted))
	t.m.bytes.Add(float64(size))
	return first
}

// partitionRows are the rows of a batch bound for one partition.
type partitionRows struct {
	partition int
	idx       []int
}

// assign splits the rows of b.idx by partition: unkeyed rows all go to the
// partition of the batch (so a batch is one produce request), keyed rows to
// the partition of their key.
func (t *Target) assign(ctx context.Context, b *outgoing) ([]partitionRows, error) {
	n, err := t.partitions(ctx)
	if err != nil {
		return nil, err
	}
	own := int(b.n % uint64(n))
	if b.keys == nil {
		return []partitionRows{{own, b.idx}}, nil
	}
	// Counting sort by partition, keeping the rows' order within each.
	of := make([]int, len(b.idx))
	count := make([]int, n+1)
	for j, i := range b.idx {
		of[j] = own
		if len(b.keys[i]) > 0 {
			of[j] = partitionOf(b.keys[i], n)
		}
		count[of[j]+1]++
	}
	for p := 1; p <= n; p++ {
		count[p] += count[p-1]
	}
	sorted := make([]int, len(b.idx))
	var parts []partitionRows
	for p := range n {
		if count[p+1] > count[p] {
			parts = append(parts, partitionRows{p, sorted[count[p]:count[p+1]]})
		}
	}
	for j, i := range b.idx {
		sorted[count[of[j]]] = i
		count[of[j]]++
	}
	return parts, nil
}

// partitions returns the topic's number of partitions, from the metadata
// kafka-go's transport caches (and refreshes every few seconds).
func (t *Target) partitions(ctx context.Context) (int, error) {
	md, err := t.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{t.cfg.Topic}})
	if err != nil {
		return 0, err
	}
	for _, tp := range md.Topics {
		if tp.Name != t.cfg.Topic {
			continue
		}
		if tp.Error != nil {
			return 0, tp.Error
		}
		if len(tp.Partitions) > 0 {
			return len(tp.Partitions), nil
		}
	}
	return 0, kafka.UnknownTopicOrPartition
}

// produce sends the records in one produce request and records the outcome
// of each of their rows in errs.
func (t *Target) produce(ctx context.Context, r *records, errs []error) {
	res, err := t.client.Produce(ctx, &kafka.ProduceRequest{
		Topic:        t.cfg.Topic,
		Partition:    r.partition,
		RequiredAcks: kafka.RequireAll,
		Compression:  t.compression,
		Records:      r,
	})
	if err == nil {
		err = res.Error
	}
	if err == nil {
		for _, i := range r.idx {
			errs[i] = nil
		}
		return
	}
	all := classify(err)
	var named map[int]error // the records the endpoint blames (produce v8)
	if res != nil {
		named = res.RecordErrors
	}
	for j, i := range r.idx {
		switch rec, ok := named[j]; {
		case ok:
			errs[i] = classify(fmt.Errorf("%w: message %d of the batch: %v", err, j, rec))
		case len(named) > 0:
			// Dropped with the records the endpoint named: not its fault.
			errs[i] = &transient{fmt.Errorf("dropped with other messages of its batch: %w", err)}
		default:
			errs[i] = all
		}
	}
}

// records reads rows as the records of one produce request: kafka-go
// encodes each row straight into the request, without a copy in between.
type records struct {
	rows       []json.RawMessage
	keys       [][]byte
	partition  int
	idx        []int
	next       int
	rec        kafka.Record
	key, value bytesReader
}

// records has its own copy of the rows' indexes: a produce whose context
// ends returns at once, while kafka-go's connection may still be encoding
// the request from this reader, and Send then rewrites b.idx (pending) for
// the next attempt. The rows and keys themselves are never changed.
func (b *outgoing) records(p partitionRows) *records {
	return &records{rows: b.rows, keys: b.keys, partition: p.partition, idx: slices.Clone(p.idx)}
}

// ReadRecord returns the next row as a record; the record is valid until
// the next call (kafka.RecordReader's contract).
func (r *records) ReadRecord() (*kafka.Record, error) {
	if r.next >= len(r.idx) {
		return nil, io.EOF
	}
	i := r.idx[r.next]
	r.next++
	r.value.Reset(r.rows[i])
	r.rec = kafka.Record{Value: &r.value}
	if r.keys != nil && r.keys[i] != nil {
		r.key.Reset(r.keys[i])
		r.rec.Key = &r.key
	}
	return &r.rec, nil
}

// bytesReader is a kafka.Bytes over a slice it does not own.
type bytesReader struct{ bytes.Reader }

func (*bytesReader) Close() error { return nil }

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

// pending returns the rows of idx whose last error is transient, in place.
func pending(idx []int, errs []error) []int {
	k := 0
	var tr *transient
	for _, i := range idx {
		if errors.As(errs[i], &tr) && errs[i] == error(tr) {
			idx[k] = i
			k++
		}
	}
	return idx[:k]
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
		if !bytes.ContainsRune(raw, '\\') {
			return raw[1 : len(raw)-1], nil // no escapes: the text as it is in the row
		}
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
