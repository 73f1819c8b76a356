package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pushd/pushd/internal/framing"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Kafka reads events from Kafka topics as a member of a consumer group, with
// at-least-once delivery: it commits a partition's offset only up to the
// first event not yet acknowledged, and only from a periodic commit (every
// KafkaConfig.CommitInterval), never per message.
//
// Each record value becomes one Event, passed through unparsed: a value that
// is not JSON is found by the schema mapper and dead-lettered with its
// position, then acknowledged, so a bad record never stops the source.
//
// # Rebalances
//
// kafka-go's ConsumerGroup runs the group protocol; the source follows its
// generations (kafka_fetch.go): each one's assignment goes to groupState
// (for Ready, Partitions and the member's quota share, KafkaOptions.OnShare)
// and each assigned partition gets a fetcher. This is what happens on a
// rebalance (read from kafka-go v0.4.51 consumergroup.go); in particular
// nothing is committed at a rebalance beyond the commits already under way:
//
//   - The generation ends when a heartbeat returns REBALANCE_IN_PROGRESS (or
//     fails). Its fetchers stop, and the records fetched but not yet
//     returned by Read are dropped; a commit already sent completes with the
//     old generation id, which the broker accepts while the group prepares
//     the rebalance.
//   - The member rejoins, gets its new assignment and fetches the group's
//     committed offsets; each assigned partition restarts there. Records
//     this process fetched after that offset come again: their earlier
//     copies stay tracked, and the partition's commit waits until every copy
//     is acknowledged (see offsetTracker), so nothing unacknowledged is
//     committed and acknowledged work is not lost.
//   - A commit issued while no generation is active waits (up to the commit
//     timeout) for the next one and is then sent with the new generation id.
//     Offsets of a partition that moved to another member may so be committed
//     by this member after the move: they cover only acknowledged events, so
//     this can cause redelivery after a later restart, never a loss.
//
// Events acknowledged but not committed when a rebalance or crash happens
// are delivered again: at least once, with duplicates bounded by what was in
// flight plus one commit interval.
//
// # Backpressure
//
// At most KafkaOptions.MaxUnacked events are out unacknowledged; Read blocks
// while that many are, so fetching stops (at most KafkaOptions.QueueCapacity
// records wait for Read, plus a run of 256 per partition and the unread
// rest of one fetch of MaxBytes per partition in its connection's buffers)
// and the group's lag grows instead of memory.
type Kafka struct {
	cg      *kafka.ConsumerGroup
	queue   *runQueue
	tracker *offsetTracker
	log     *slog.Logger
	metrics *KafkaMetrics
	group   string
	state   *groupState

	// sem holds one token per unacknowledged event.
	sem chan struct{}

	// genSeq numbers the generations this member took part in (the
	// fetchers' runs carry it); gen is the current one, nil while the
	// group rebalances, and genReady is closed once there is one.
	genSeq   atomic.Uint64
	genMu    sync.Mutex
	gen      *kafka.Generation
	genReady chan struct{}

	// Fetch settings (see KafkaConfig).
	minBytes, maxBytes int
	maxWait            time.Duration

	commitInterval time.Duration
	commitTimeout  time.Duration
	// commitMu serializes commits, so that offsets reach the broker in the
	// order they were computed.
	commitMu sync.Mutex

	// partsWanted is set by the first call of Partitions: from then on the
	// loop asks the brokers for the offsets of each new assignment
	// (wantEnds asks it once at that first call).
	partsWanted atomic.Bool
	wantEnds    chan struct{}

	lagInterval time.Duration
	lagRefresh  bool          // the lag metric is refreshed every lagInterval
	lagClient   *kafka.Client // asks the brokers for partitions' offsets
	transport   *kafka.Transport

	// The per-event series, looked up once: the unacked gauge, and
	// messages_total per configured topic (topics is read-only after
	// NewKafka; a topic outside it, which the group protocol should not
	// assign, goes through counterMu and others).
	unackedGauge prometheus.Gauge
	topics       map[string]prometheus.Counter
	counterMu    sync.Mutex
	others       map[string]prometheus.Counter

	// The quota share: onShare is told it after each assignment, from the
	// partition counts of topics (the last known when the brokers cannot
	// say).
	onShare         func(share float64)
	dialer          *kafka.Dialer
	brokers         []string
	topicNames      []string
	partitionCounts map[string]int

	closing   chan struct{} // closed when Close starts
	groupStop context.CancelFunc
	groupDone chan struct{} // closed when runGroup returns
	loopStop  context.CancelFunc
	loopDone  chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ Source = (*Kafka)(nil)

// ErrDeadLettered, given to an Ack (wrapped or not), says the event was not
// delivered to its table but written to the dead letter. Sources count it as
// a success (the event is done and must not come again); the HTTP source
// reports it in its dead_lettered count.
var ErrDeadLettered = errors.New("event dead-lettered")

// ackFailed reports whether an acknowledgement error means "not delivered".
func ackFailed(err error) bool {
	return err != nil && !errors.Is(err, ErrDeadLettered)
}

// KafkaOptions holds what a KafkaConfig does not: wiring, the in-flight
// bound, and group timings that tests shorten.
type KafkaOptions struct {
	// Logger receives the source's logs and kafka-go's (at debug level, and
	// its errors at warn). Nil discards them.
	Logger *slog.Logger
	// Metrics, when not nil, is updated by the source.
	Metrics *KafkaMetrics
	// MaxUnacked bounds the events read but not yet acknowledged (default
	// 10000). Read blocks while the bound is reached.
	MaxUnacked int
	// HeartbeatInterval is how often the group member heartbeats (default:
	// a tenth of the session timeout, at most 3s). A member learns of a
	// rebalance only on its next heartbeat.
	HeartbeatInterval time.Duration
	// JoinGroupBackoff is the wait before rejoining the group after an
	// error (default 5s, kafka-go's).
	JoinGroupBackoff time.Duration
	// CommitTimeout bounds one commit, including the wait for a new group
	// generation during a rebalance (default: the session timeout plus the
	// rebalance timeout).
	CommitTimeout time.Duration
	// LagInterval is how often the partitions' end offsets are asked from
	// the brokers to update the lag metric while fetching is paused
	// (default 30s; negative turns it off, leaving the lag as seen in
	// fetches). Only used with Metrics.
	LagInterval time.Duration
	// QueueCapacity bounds the records fetched and waiting for Read, in
	// runs of up to 256 (default 512; at least one run).
	QueueCapacity int
	// OnShare, when set, is called after every rebalance with the share
	// (0 < share <= 1) of all partitions of the configured topics assigned
	// to this member. The daemon gives it to the Power BI client, which
	// keeps to that share of the dataset's quotas.
	OnShare func(share float64)
}

// NewKafka validates cfg, builds the TLS and SASL settings, and joins the
// consumer group in the background; Read returns the first event once the
// group has assigned partitions to this member.
func NewKafka(cfg KafkaConfig, opts KafkaOptions) (*Kafka, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka source config: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxUnacked <= 0 {
		opts.MaxUnacked = 10000
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = min(cfg.SessionTimeout/10, 3*time.Second)
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = cfg.SessionTimeout + cfg.RebalanceTimeout
	}
	if opts.LagInterval == 0 {
		opts.LagInterval = 30 * time.Second
	}
	tlsConfig, err := KafkaTLS(cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("kafka source tls: %w", err)
	}
	mechanism, err := KafkaSASL(cfg.SASL)
	if err != nil {
		return nil, fmt.Errorf("kafka source sasl: %w", err)
	}
	start := kafka.FirstOffset
	if cfg.StartOffset == StartLatest {
		start = kafka.LastOffset
	}
	dialer := &kafka.Dialer{
		ClientID:      cfg.ClientID,
		Timeout:       10 * time.Second,
		DialFunc:      slackDialer(10 * time.Second),
		TLS:           tlsConfig,
		SASLMechanism: mechanism,
	}
	if opts.QueueCapacity <= 0 {
		opts.QueueCapacity = 2 * fetchRun
	}
	if opts.JoinGroupBackoff <= 0 {
		opts.JoinGroupBackoff = 5 * time.Second
	}
	group := cfg.GroupID
	state := &groupState{assigned: make(chan int, 1), parts: &assignment{}}
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:      group,
		Brokers: cfg.Brokers,
		Dialer:  dialer,
		Topics:  cfg.Topics,
		// kafka-go's Reader's balancers, so that members of older pushd
		// versions and this one agree in one group.
		GroupBalancers:    []kafka.GroupBalancer{kafka.RangeGroupBalancer{}, kafka.RoundRobinGroupBalancer{}},
		HeartbeatInterval: opts.HeartbeatInterval,
		SessionTimeout:    cfg.SessionTimeout,
		RebalanceTimeout:  cfg.RebalanceTimeout,
		JoinGroupBackoff:  opts.JoinGroupBackoff,
		StartOffset:       start,
		Logger:            kafkaLogger(log, slog.LevelDebug, group, state.observe),
		ErrorLogger:       kafkaLogger(log, slog.LevelWarn, group, state.observe),
	})
	if err != nil {
		return nil, fmt.Errorf("kafka source: consumer group %s: %w", group, err)
	}
	loopCtx, loopStop := context.WithCancel(context.Background())
	groupCtx, groupStop := context.WithCancel(context.Background())
	k := &Kafka{
		cg:              cg,
		queue:           newRunQueue(opts.QueueCapacity),
		genReady:        make(chan struct{}),
		minBytes:        cfg.MinBytes,
		maxBytes:        cfg.MaxBytes,
		maxWait:         cfg.MaxWait,
		tracker:         newOffsetTracker(),
		log:             log.With("group", group),
		metrics:         opts.Metrics,
		group:           group,
		state:           state,
		sem:             make(chan struct{}, opts.MaxUnacked),
		commitInterval:  cfg.CommitInterval,
		commitTimeout:   opts.CommitTimeout,
		lagInterval:     opts.LagInterval,
		wantEnds:        make(chan struct{}, 1),
		others:          make(map[string]prometheus.Counter),
		onShare:         opts.OnShare,
		dialer:          dialer,
		brokers:         cfg.Brokers,
		topicNames:      cfg.Topics,
		partitionCounts: make(map[string]int),
		closing:         make(chan struct{}),
		groupStop:       groupStop,
		groupDone:       make(chan struct{}),
		loopStop:        loopStop,
		loopDone:        make(chan struct{}),
	}
	if m := opts.Metrics; m != nil {
		k.unackedGauge = m.unacked.WithLabelValues(group)
		k.topics = make(map[string]prometheus.Counter, len(cfg.Topics))
		for _, topic := range cfg.Topics {
			k.topics[topic] = m.messages.WithLabelValues(group, topic)
		}
	}
	k.transport = &kafka.Transport{
		ClientID:    cfg.ClientID,
		DialTimeout: 10 * time.Second,
		TLS:         tlsConfig,
		SASL:        mechanism,
	}
	k.lagClient = &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: 10 * time.Second, Transport: k.transport}
	k.lagRefresh = opts.Metrics != nil && opts.LagInterval > 0
	go k.loop(loopCtx)
	go k.runGroup(groupCtx)
	return k, nil
}

// Read returns the next record as an event. It blocks while MaxUnacked
// events are unacknowledged, and until a record arrives or ctx ends. Fetch
// errors are logged and retried by the partition's fetcher (which connects
// again; the group rejoins by itself). After Close, Read returns an error
// wrapping ErrEndOfInput.
func (k *Kafka) Read(ctx context.Context) (Event, Ack, error) {
	select {
	case <-k.closing:
		return Event{}, nil, fmt.Errorf("kafka source closed: %w", ErrEndOfInput)
	default:
	}
	select {
	case k.sem <- struct{}{}: // the common case, without a three-way select
	default:
		select {
		case k.sem <- struct{}{}:
		case <-ctx.Done():
			return Event{}, nil, ctx.Err()
		case <-k.closing:
			return Event{}, nil, fmt.Errorf("kafka source closed: %w", ErrEndOfInput)
		}
	}
	msg, err := k.nextRecord(ctx)
	if err != nil {
		<-k.sem
		if ctx.Err() != nil {
			return Event{}, nil, ctx.Err()
		}
		return Event{}, nil, fmt.Errorf("kafka source closed: %w", ErrEndOfInput)
	}
	return k.event(msg)
}

// event tracks msg and turns it into an event with its ack.
// kafkaRecord is what the source keeps of a record until it is acked.
type kafkaRecord struct {
	meta    Metadata
	pending pendingOffset
}

func (k *Kafka) event(msg *kafka.Message) (Event, Ack, error) {
	// One allocation holds the record's metadata and its place in the
	// offset tracker; the ack closure keeps only that.
	rec := &kafkaRecord{meta: Metadata{
		Key:       msg.Key,
		Topic:     msg.Topic,
		Partition: msg.Partition,
		Offset:    msg.Offset,
		Timestamp: msg.Time,
	}}
	k.tracker.fetchedInto(&rec.pending, msg.Topic, msg.Partition, msg.Offset, msg.HighWaterMark)
	token, meta := &rec.pending, &rec.meta
	if len(msg.Headers) > 0 {
		meta.Headers = make(map[string]string, len(msg.Headers))
		for _, h := range msg.Headers {
			meta.Headers[h.Key] = string(h.Value)
		}
	}
	if k.metrics != nil {
		k.topicCounter(msg.Topic).Inc()
		k.unackedGauge.Inc()
	}
	ev := Event{Data: msg.Value, Meta: meta} // Where() formats the position from meta
	// A record is a stream of its own for the rule every source follows:
	// a leading BOM is stripped; invalid UTF-8 and an empty array go to
	// the dead letter (framing.Check).
	ev.Data = framing.StripBOM(ev.Data)
	if bad := framing.Check(ev.Data); bad != nil {
		ev.Err = fmt.Errorf("%s: %w", ev.Where(), bad)
	}
	// The ack keeps only the token (which knows the partition and offset)
	// and meta, not the whole record.
	ack := func(err error) {
		failed := ackFailed(err)
		if !k.tracker.ack(token, failed) {
			k.log.Error("kafka event acknowledged twice", "topic", meta.Topic, "partition", meta.Partition, "offset", meta.Offset)
			return
		}
		<-k.sem
		if m := k.metrics; m != nil {
			k.unackedGauge.Dec()
			if failed {
				m.ackErrors.WithLabelValues(k.group, meta.Topic).Inc()
			}
		}
		if failed {
			k.log.Warn("kafka event not delivered, its offset will not be committed", "topic", meta.Topic, "partition", meta.Partition, "offset", meta.Offset, "err", err)
		}
	}
	return ev, ack, nil
}

// topicCounter returns the messages_total series of topic.
func (k *Kafka) topicCounter(topic string) prometheus.Counter {
	if c, ok := k.topics[topic]; ok {
		return c
	}
	k.counterMu.Lock()
	defer k.counterMu.Unlock()
	c, ok := k.others[topic]
	if !ok {
		c = k.metrics.messages.WithLabelValues(k.group, topic)
		k.others[topic] = c
	}
	return c
}

// loop commits every commit interval and refreshes the lag metric, until
// ctx ends.
func (k *Kafka) loop(ctx context.Context) {
	defer close(k.loopDone)
	commits := time.NewTicker(k.commitInterval)
	defer commits.Stop()
	var lagTick <-chan time.Time
	if k.lagRefresh {
		t := time.NewTicker(k.lagInterval)
		defer t.Stop()
		lagTick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-commits.C:
			cctx, cancel := context.WithTimeout(ctx, k.commitTimeout)
			if err := k.commit(cctx); err != nil && ctx.Err() == nil {
				k.log.Warn("kafka commit failed, retrying at the next interval", "err", err)
			}
			cancel()
		case n := <-k.state.assigned:
			k.assignment(n)
			if k.partsWanted.Load() {
				k.listEnds(ctx)
			}
		case <-k.wantEnds:
			k.listEnds(ctx)
		case <-lagTick:
			k.refreshLag(ctx)
		}
	}
}

// commit commits, for every partition, the offset below which every fetched
// event is acknowledged, when it moved since the last commit.
func (k *Kafka) commit(ctx context.Context) error {
	k.commitMu.Lock()
	defer k.commitMu.Unlock()
	points := k.tracker.toCommit()
	if len(points) == 0 {
		return nil
	}
	offsets := make(map[string]map[int]int64)
	for _, p := range points {
		if offsets[p.topic] == nil {
			offsets[p.topic] = make(map[int]int64)
		}
		offsets[p.topic][p.partition] = p.next // the next offset to read
	}
	gen, err := k.generation(ctx)
	if err != nil {
		err = fmt.Errorf("waiting for the group to rebalance: %w", err)
	} else {
		err = gen.CommitOffsets(offsets)
	}
	if err != nil {
		if m := k.metrics; m != nil {
			m.commitErrors.WithLabelValues(k.group).Inc()
		}
		return fmt.Errorf("committing offsets of %d partitions for group %s: %w", len(points), k.group, err)
	}
	k.tracker.committed(points)
	if m := k.metrics; m != nil {
		m.commits.WithLabelValues(k.group).Inc()
		k.updateGauges()
	}
	if k.log.Enabled(ctx, slog.LevelDebug) {
		for _, p := range points {
			k.log.Debug("kafka offsets committed", "topic", p.topic, "partition", p.partition, "offset", p.next)
		}
	}
	return nil
}

// updateGauges sets the committed offset and lag of every partition seen.
func (k *Kafka) updateGauges() {
	m := k.metrics
	for _, s := range k.tracker.snapshot() {
		partition := strconv.Itoa(s.partition)
		if s.committed >= 0 {
			m.committed.WithLabelValues(k.group, s.topic, partition).Set(float64(s.committed))
		}
		base := s.committed
		if base < 0 {
			base = s.safeNext
		}
		if s.highWatermark >= 0 && base >= 0 {
			m.lag.WithLabelValues(k.group, s.topic, partition).Set(float64(max(s.highWatermark-base, 0)))
		}
	}
}

// refreshLag asks the brokers for the end offset of every partition seen, so
// that the lag metric grows while fetching is paused.
func (k *Kafka) refreshLag(ctx context.Context) {
	snap := k.tracker.snapshot()
	if len(snap) == 0 {
		return
	}
	topics := make(map[string][]kafka.OffsetRequest)
	for _, s := range snap {
		topics[s.topic] = append(topics[s.topic], kafka.LastOffsetOf(s.partition))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := k.lagClient.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: topics})
	if err != nil {
		k.log.Debug("kafka end offsets for lag unavailable", "err", err)
		return
	}
	for topic, parts := range resp.Topics {
		for _, p := range parts {
			if p.Error == nil && p.LastOffset >= 0 {
				k.tracker.observeHighWatermark(topic, p.Partition, p.LastOffset)
			}
		}
	}
	k.updateGauges()
}

// Close stops fetching, commits what is acknowledged, leaves the group and
// closes the connections, all within ctx. Events acknowledged after Close
// are not committed: they come again after a restart. Close may be called
// more than once.
func (k *Kafka) Close(ctx context.Context) error {
	k.closeOnce.Do(func() {
		close(k.closing)
		k.loopStop()
		<-k.loopDone
		var errs []error
		// The final commit is tried three times, as kafka-go's Reader
		// tried each commit: what it misses comes again after a restart.
		err := k.commit(ctx)
		for attempt := 1; err != nil && attempt < 3 && sleepCtx(ctx, backoffFor(attempt)); attempt++ {
			err = k.commit(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("final commit: %w", err))
		}
		// Leaving the group ends the generation, which waits for the
		// partitions' fetchers to stop.
		k.groupStop()
		done := make(chan error, 1)
		go func() {
			err := k.cg.Close()
			<-k.groupDone
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("leaving kafka group %s: %w", k.group, err))
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("leaving kafka group %s: %w", k.group, ctx.Err()))
		}
		if k.transport != nil {
			k.transport.CloseIdleConnections()
		}
		k.closeErr = errors.Join(errs...)
	})
	return k.closeErr
}

// Ready reports whether the source is a member of its consumer group with
// its partitions assigned (nil), or why not: not joined yet, the last group
// or fetch error while it is not a member, or closed. The daemon's /readyz
// calls it.
func (k *Kafka) Ready() error {
	select {
	case <-k.closing:
		return fmt.Errorf("kafka source of group %s is closed", k.group)
	default:
	}
	if k.state.joined.Load() {
		return nil
	}
	if msg := k.state.lastErr.Load(); msg != nil {
		return fmt.Errorf("kafka group %s: not a member: %s", k.group, *msg)
	}
	return fmt.Errorf("kafka group %s: joining, no partitions assigned yet", k.group)
}

// groupState follows the group membership for Ready and Partitions: the
// source tells it each generation's assignment (assign); kafka-go's
// ConsumerGroup reports its failures only in log lines, so the source's
// loggers feed those to observe (the formats are kafka-go v0.4.51's, from
// consumergroup.go; TestKafkaReady notices when they change).
type groupState struct {
	// assigned carries the count of partitions of each new assignment
	// (the latest only) to the source's loop.
	assigned chan int

	// parts is the assignment itself, for Partitions (nil in tests of
	// observe alone).
	parts *assignment

	joined  atomic.Bool
	lastErr atomic.Pointer[string]
}

// assign records a new generation's assignment: the member is joined.
func (s *groupState) assign(parts []assignedPartition) {
	s.join()
	if s.parts != nil {
		s.parts.set(parts, true)
	}
	if s.assigned != nil {
		select {
		case <-s.assigned: // a newer assignment replaces one not yet seen
		default:
		}
		s.assigned <- len(parts)
	}
}

// observe reads one kafka-go log call: a failed attempt to join the group.
func (s *groupState) observe(format string, args []any) {
	for _, prefix := range [...]string{
		"Unable to establish connection to consumer group coordinator",
		"Failed to join group",
		"Failed to sync group",
		"Failed to fetch offsets",
	} {
		if strings.HasPrefix(format, prefix) {
			s.failed(fmt.Sprintf(format, args...))
			return
		}
	}
}

func (s *groupState) join() {
	s.lastErr.Store(nil)
	s.joined.Store(true)
}

func (s *groupState) failed(msg string) {
	s.lastErr.Store(&msg)
	s.joined.Store(false)
}

// kafkaLogger adapts slog to kafka-go's printf logger: a constant message,
// kafka-go's text as an attribute. observe sees every call, logged or not.
func kafkaLogger(log *slog.Logger, level slog.Level, group string, observe func(format string, args []any)) kafka.Logger {
	return kafka.LoggerFunc(func(format string, args ...any) {
		observe(format, args)
		ctx := context.Background()
		if !log.Enabled(ctx, level) {
			return
		}
		log.Log(ctx, level, "kafka client", "group", group, "detail", strings.TrimSpace(fmt.Sprintf(format, args...)))
	})
}

// KafkaTLS builds the TLS settings for the brokers, or nil when TLS is off
// (the Kafka source and pushd doctor dial with the same settings).
// Certificates are verified unless InsecureSkipVerify is set.
func KafkaTLS(c TLSConfig) (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // only when the config says so explicitly
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate found", c.CAFile)
		}
		conf.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading cert_file %s and key_file %s: %w", c.CertFile, c.KeyFile, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// KafkaSASL builds the SASL mechanism, or nil when SASL is off. A password
// given only as PasswordFile is read here.
func KafkaSASL(c SASLConfig) (sasl.Mechanism, error) {
	if c.Mechanism == "" {
		return nil, nil
	}
	password := c.Password.Reveal()
	if password == "" && c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("reading password_file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	switch c.Mechanism {
	case SASLPlain:
		return plain.Mechanism{Username: c.Username, Password: password}, nil
	case SASLSCRAMSHA256, SASLSCRAMSHA512:
		algo := scram.SHA256
		if c.Mechanism == SASLSCRAMSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, c.Username, password)
		if err != nil {
			// The error can quote the credentials' normalisation; keep it out.
			return nil, fmt.Errorf("mechanism %s: username or password not usable with SCRAM", c.Mechanism)
		}
		return m, nil
	default:
		return nil, fmt.Errorf("mechanism: unsupported %q", c.Mechanism)
	}
}

// KafkaMetrics are the Kafka source's Prometheus metrics. Labels: group (the
// consumer group), topic, partition.
type KafkaMetrics struct {
	messages     *prometheus.CounterVec
	ackErrors    *prometheus.CounterVec
	fetchErrors  *prometheus.CounterVec
	commits      *prometheus.CounterVec
	commitErrors *prometheus.CounterVec
	unacked      *prometheus.GaugeVec
	committed    *prometheus.GaugeVec
	lag          *prometheus.GaugeVec
}

// NewKafkaMetrics creates the Kafka source metrics and registers them on
// reg (nil: not registered). One KafkaMetrics serves every Kafka source of
// a process.
func NewKafkaMetrics(reg prometheus.Registerer) *KafkaMetrics {
	m := &KafkaMetrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_kafka_messages_total",
			Help: "Records fetched from Kafka.",
		}, []string{"group", "topic"}),
		ackErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_kafka_ack_errors_total",
			Help: "Records acknowledged as not delivered; their offsets are not committed and they come again after a restart.",
		}, []string{"group", "topic"}),
		fetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_kafka_fetch_errors_total",
			Help: "Errors returned by fetches (retried).",
		}, []string{"group"}),
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_kafka_commits_total",
			Help: "Successful offset commits.",
		}, []string{"group"}),
		commitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_kafka_commit_errors_total",
			Help: "Failed offset commits (retried at the next interval).",
		}, []string{"group"}),
		unacked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_kafka_unacked_messages",
			Help: "Records read but not yet acknowledged.",
		}, []string{"group"}),
		committed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_kafka_committed_offset",
			Help: "Last offset committed by this process (the next to read), per partition.",
		}, []string{"group", "topic", "partition"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_kafka_lag_messages",
			Help: "Records in the partition after the committed offset (end offset minus committed offset), per partition seen by this process.",
		}, []string{"group", "topic", "partition"}),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.ackErrors, m.fetchErrors, m.commits, m.commitErrors, m.unacked, m.committed, m.lag)
	}
	return m
}

// Forget deletes the series of a consumer group that no pipeline of the
// process reads any more (its pipeline removed by a reload), its per-partition
// gauges included.
func (m *KafkaMetrics) Forget(group string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"group": group}
	for _, v := range []*prometheus.MetricVec{m.messages.MetricVec, m.ackErrors.MetricVec, m.fetchErrors.MetricVec,
		m.commits.MetricVec, m.commitErrors.MetricVec, m.unacked.MetricVec, m.committed.MetricVec, m.lag.MetricVec} {
		v.DeletePartialMatch(l)
	}
}

// minShare is the share of a member with no partition: it still sends the
// events it read before the rebalance, at one request per window.
const minShare = 1e-9

// assignment tells onShare the share of a new assignment of assigned
// partitions.
func (k *Kafka) assignment(assigned int) {
	share, total := k.share(assigned)
	k.log.Info("kafka partitions assigned", "partitions", assigned, "of", total, "share", share)
	if k.onShare != nil && share > 0 {
		k.onShare(share)
	}
}

// share is assigned over all partitions of the configured topics (0 when
// their count is not known), and that total.
func (k *Kafka) share(assigned int) (share float64, total int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, topic := range k.topicNames {
		n, err := k.partitionCount(ctx, topic)
		if err != nil {
			k.log.Warn("kafka partition count unavailable; quota share from the last known count", "topic", topic, "err", err)
		} else {
			k.partitionCounts[topic] = n
		}
		if k.partitionCounts[topic] == 0 {
			return 0, 0
		}
		total += k.partitionCounts[topic]
	}
	if assigned == 0 {
		return minShare, total
	}
	return min(1, float64(assigned)/float64(total)), total
}

// partitionCount asks the brokers, one after the other, for topic's
// partitions.
func (k *Kafka) partitionCount(ctx context.Context, topic string) (int, error) {
	var errs []error
	for _, broker := range k.brokers {
		parts, err := k.dialer.LookupPartitions(ctx, "tcp", broker, topic)
		if err == nil {
			return len(parts), nil
		}
		errs = append(errs, err)
	}
	return 0, errors.Join(errs...)
}
