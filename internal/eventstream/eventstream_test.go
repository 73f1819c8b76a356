package eventstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushd/pushd/internal/eventstream"
	"github.com/pushd/pushd/internal/eventstream/eventstreamtest"
	"github.com/pushd/pushd/internal/secret"
)

const connString = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=key_1;SharedAccessKey=S3cr3tK3y=;EntityPath=es_1"

func TestConfigValidate(t *testing.T) {
	base := func() eventstream.Config {
		c := eventstream.DefaultConfig()
		c.Auth.ConnectionString = connString
		return c
	}
	tests := []struct {
		name   string
		change func(c *eventstream.Config)
		want   []string // substrings, one per problem; none means valid
	}{
		{"server and topic from the connection string", func(*eventstream.Config) {}, nil},
		{"explicit server and topic", func(c *eventstream.Config) {
			c.BootstrapServer, c.Topic = "other.example:9093", "es_1"
		}, nil},
		{"entra_id refused", func(c *eventstream.Config) { c.Auth.Method = eventstream.AuthEntraID },
			[]string{"auth.method: entra_id is not supported: Fabric's Entra ID authentication needs SASL OAUTHBEARER, which kafka-go"}},
		{"unknown method", func(c *eventstream.Config) { c.Auth.Method = "sas" },
			[]string{`auth.method: must be connection_string, got "sas"`}},
		{"no connection string", func(c *eventstream.Config) { c.Auth.ConnectionString = ""; c.BootstrapServer = "h:9093"; c.Topic = "t" },
			[]string{"auth.connection_string: required"}},
		{"not a connection string", func(c *eventstream.Config) {
			c.Auth.ConnectionString = "S3cr3tK3y"
			c.BootstrapServer = "h:9093"
			c.Topic = "t"
		},
			[]string{"auth.connection_string: not a connection string"}},
		{"no key", func(c *eventstream.Config) {
			c.Auth.ConnectionString = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;EntityPath=es_1"
		}, []string{"auth.connection_string: connection string has no SharedAccessKey", "bootstrap_server: required", "topic: required"}},
		{"endpoint not sb", func(c *eventstream.Config) {
			c.Auth.ConnectionString = "Endpoint=https://ns/;SharedAccessKeyName=k;SharedAccessKey=S3cr3tK3y"
			c.BootstrapServer, c.Topic = "h:9093", "t"
		}, []string{"auth.connection_string: connection string's Endpoint must be sb://"}},
		{"topic differs from EntityPath", func(c *eventstream.Config) { c.Topic = "es_2" },
			[]string{`topic: "es_2" differs from the connection string's EntityPath "es_1"`}},
		{"bad server", func(c *eventstream.Config) { c.BootstrapServer = "ns.servicebus.windows.net" },
			[]string{"bootstrap_server: must be host:port"}},
		{"clear text", func(c *eventstream.Config) { c.TLS.Enabled = false },
			[]string{"tls.enabled: must be true"}},
		{"compression", func(c *eventstream.Config) { c.Compression = "brotli" },
			[]string{`compression: must be none, gzip, snappy, lz4 or zstd, got "brotli"`}},
		{"batch over 1 MB", func(c *eventstream.Config) { c.Batch.MaxBytes = 2 << 20 },
			[]string{"batch.max_bytes: must be at most 1048576"}},
		{"batch rows", func(c *eventstream.Config) { c.Batch.MaxRows = 0 },
			[]string{"batch.max_rows: must be 1..10000, got 0"}},
		{"message over 1 MB", func(c *eventstream.Config) { c.MaxMessageBytes = 1<<20 + 1 },
			[]string{"max_message_bytes: must be 1..1048576"}},
		{"in flight", func(c *eventstream.Config) { c.MaxInFlight = 0 }, []string{"max_in_flight: must be 1..100, got 0"}},
		{"retry", func(c *eventstream.Config) { c.Retry.MaxBackoff = time.Millisecond }, []string{"retry: needs 0 < initial_backoff <= max_backoff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.change(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				d := c.WithDefaults()
				if d.BootstrapServer == "" || d.Topic != "es_1" {
					t.Errorf("defaults: server %q topic %q", d.BootstrapServer, d.Topic)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			if strings.Contains(err.Error(), "S3cr3tK3y") {
				t.Errorf("the message shows the key: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if got := strings.Count(err.Error(), "\n") + 1; got != len(tt.want) {
				t.Errorf("%d problems, want %d: %q", got, len(tt.want), err)
			}
		})
	}
	if d := base().WithDefaults(); d.BootstrapServer != "ns.servicebus.windows.net:9093" {
		t.Errorf("default bootstrap_server = %q, want the Endpoint host on port 9093", d.BootstrapServer)
	}
}

func start(t testing.TB, partitions int32, opts ...kfake.Opt) *eventstreamtest.Endpoint {
	t.Helper()
	e, err := eventstreamtest.Start(t.TempDir(), partitions, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func newTarget(t *testing.T, cfg eventstream.Config, reg prometheus.Registerer) *eventstream.Target {
	t.Helper()
	var m *eventstream.Metrics
	if reg != nil {
		m = eventstream.NewMetrics(reg)
	}
	tg, err := eventstream.New(cfg, eventstream.Options{Name: "p/fabric", Metrics: m,
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.Close() })
	return tg
}

func rows(n int) []json.RawMessage {
	out := make([]json.RawMessage, n)
	for i := range out {
		out[i] = json.RawMessage(fmt.Sprintf(`{"device":"dev-%d","seq":%d,"ok":true}`, i%7, i))
	}
	return out
}

func TestSendOverTLSWithConnectionString(t *testing.T) {
	e := start(t, 3)
	cfg := e.Config()
	cfg.KeyColumn = "device"
	cfg.Compression = eventstream.CompressionGzip
	reg := prometheus.NewRegistry()
	tg := newTarget(t, cfg, reg)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if n, err := tg.Check(ctx); err != nil || n != 3 {
		t.Fatalf("Check = %d, %v; want 3 partitions", n, err)
	}
	want := rows(500)
	for i := 0; i < len(want); i += 100 {
		if err := tg.Send(ctx, want[i:i+100]); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	got, err := e.Messages(ctx, len(want))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	partitionOf := map[string]int32{}
	for _, m := range got {
		var v struct{ Device string }
		if err := json.Unmarshal(m.Value, &v); err != nil {
			t.Fatalf("message %s is not a row: %v", m.Value, err)
		}
		if string(m.Key) != v.Device {
			t.Errorf("key %q, want the device column %q", m.Key, v.Device)
		}
		if p, ok := partitionOf[v.Device]; ok && p != m.Partition {
			t.Errorf("key %s in partitions %d and %d", v.Device, p, m.Partition)
		}
		partitionOf[v.Device] = m.Partition
		seen[string(m.Value)] = true
	}
	for _, r := range want {
		if !seen[string(r)] {
			t.Errorf("row %s not produced", r)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d messages, want %d", len(got), len(want))
	}
	if v := testutil.ToFloat64(metric(t, reg, "pushd_eventstream_messages_total", "accepted")); v != 500 {
		t.Errorf("accepted metric = %v, want 500", v)
	}
}

// metric finds one series of a counter by its result label.
func metric(t *testing.T, g prometheus.Gatherer, name, result string) prometheus.Collector {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result || result == "" {
					return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, m.GetCounter().GetValue)
				}
			}
		}
	}
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return 0 })
}

func TestWrongConnectionStringIsRefused(t *testing.T) {
	e := start(t, 1)
	cfg := e.Config()
	cfg.Auth.ConnectionString = secret.Value(strings.Replace(e.ConnectionString, "SharedAccessKey=", "SharedAccessKey=00", 1))
	tg := newTarget(t, cfg, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err := tg.Check(ctx)
	if !errors.Is(err, eventstream.ErrRefused) || !strings.Contains(err.Error(), "authentication failed: check auth.connection_string") {
		t.Fatalf("Check = %v, want ErrRefused naming auth.connection_string", err)
	}
	if strings.Contains(err.Error(), e.ConnectionString[60:]) {
		t.Errorf("error shows the key: %v", err)
	}
	if err := tg.Send(ctx, rows(3)); !errors.Is(err, eventstream.ErrRefused) {
		t.Fatalf("Send = %v, want ErrRefused (no retries forever)", err)
	}
}

func TestMissingTopic(t *testing.T) {
	e := start(t, 1)
	tg := newTarget(t, e.Config(), nil)
	if _, err := tg.Check(t.Context()); err != nil {
		t.Fatalf("Check of the right topic = %v", err)
	}
	if err := e.DeleteTopic(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err := tg.Check(t.Context())
	if !errors.Is(err, eventstream.ErrRefused) || !strings.Contains(err.Error(), `topic "es_pushd_test" not found`) {
		t.Fatalf("Check = %v, want topic not found", err)
	}
}

// produceFault answers the next n produce requests with code for every
// partition.
func produceFault(c *kfake.Cluster, n int32, code int16) *atomic.Int32 {
	var calls atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if calls.Add(1) > n {
			return nil, nil, false
		}
		c.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return &calls
}

func TestRetriesAndRowOutcomes(t *testing.T) {
	t.Run("throttling is retried until accepted", func(t *testing.T) {
		e := start(t, 1)
		reg := prometheus.NewRegistry()
		tg := newTarget(t, e.Config(), reg)
		calls := produceFault(e.Cluster, 3, kerr.ThrottlingQuotaExceeded.Code)
		if err := tg.Send(t.Context(), rows(10)); err != nil {
			t.Fatalf("Send = %v, want nil after retries", err)
		}
		if n := calls.Load(); n < 4 {
			t.Errorf("%d produce requests, want 3 refused and 1 accepted", n)
		}
		if v := testutil.ToFloat64(metric(t, reg, "pushd_eventstream_throttled_total", "")); v != 3 {
			t.Errorf("throttled metric = %v, want 3", v)
		}
		if n, _ := e.Count(t.Context()); n != 10 {
			t.Errorf("%d messages, want 10", n)
		}
	})
	t.Run("max_elapsed gives up with ErrRetriesExhausted", func(t *testing.T) {
		e := start(t, 1)
		cfg := e.Config()
		cfg.Retry.MaxElapsed = time.Nanosecond
		tg := newTarget(t, cfg, nil)
		produceFault(e.Cluster, 1000, kerr.NotEnoughReplicas.Code)
		if err := tg.Send(t.Context(), rows(2)); !errors.Is(err, eventstream.ErrRetriesExhausted) {
			t.Fatalf("Send = %v, want ErrRetriesExhausted", err)
		}
	})
	t.Run("a row over max_message_bytes fails alone", func(t *testing.T) {
		e := start(t, 1)
		cfg := e.Config()
		cfg.MaxMessageBytes = 100
		tg := newTarget(t, cfg, nil)
		in := rows(3)
		in[1] = json.RawMessage(`{"big":"` + strings.Repeat("x", 200) + `"}`)
		err := tg.Send(t.Context(), in)
		var re eventstream.RowErrors
		if !errors.As(err, &re) || re.RowError(0) != nil || re.RowError(2) != nil || !errors.Is(re.RowError(1), eventstream.ErrMessageTooLarge) {
			t.Fatalf("Send = %v, want row 1 alone too large", err)
		}
		if n, _ := e.Count(t.Context()); n != 2 {
			t.Errorf("%d messages, want the 2 others", n)
		}
	})
	t.Run("the endpoint refusing a message as too large", func(t *testing.T) {
		e := start(t, 1)
		tg := newTarget(t, e.Config(), nil)
		produceFault(e.Cluster, 1, kerr.MessageTooLarge.Code)
		if err := tg.Send(t.Context(), rows(1)); !errors.Is(err, eventstream.ErrMessageTooLarge) {
			t.Fatalf("Send = %v, want ErrMessageTooLarge", err)
		}
	})
	t.Run("ctx ending stops the retries", func(t *testing.T) {
		e := start(t, 1)
		tg := newTarget(t, e.Config(), nil)
		produceFault(e.Cluster, 1000, kerr.NotEnoughReplicas.Code)
		ctx, cancel := context.WithCancel(t.Context())
		go func() { time.Sleep(50 * time.Millisecond); cancel() }()
		err := tg.Send(ctx, rows(2))
		if !errors.Is(err, context.Canceled) || errors.Is(err, eventstream.ErrRetriesExhausted) {
			t.Fatalf("Send = %v, want context.Canceled", err)
		}
	})
}

// produceRequest is what TestProduceRequests sees of one produce request.
type produceRequest struct {
	acks       int16
	partitions []int32 // partition of each record batch
	records    []int32 // records in each
	codec      []int16 // compression codec of each (attributes & 7)
}

// recordProduces records every produce request the endpoint receives and
// lets it handle them.
func recordProduces(t *testing.T, c *kfake.Cluster) func() []produceRequest {
	var mu sync.Mutex
	var seen []produceRequest
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		r := produceRequest{acks: pr.Acks}
		for _, tp := range pr.Topics {
			for _, p := range tp.Partitions {
				var rb kmsg.RecordBatch
				if err := rb.ReadFrom(p.Records); err != nil {
					t.Errorf("partition %d: not a record batch: %v", p.Partition, err)
				}
				r.partitions = append(r.partitions, p.Partition)
				r.records = append(r.records, rb.NumRecords)
				r.codec = append(r.codec, rb.Attributes&7)
			}
		}
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
		return nil, nil, false
	})
	return func() []produceRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]produceRequest(nil), seen...)
	}
}

// TestProduceRequests checks what reaches the endpoint: acks from all
// replicas, the configured codec, an unkeyed batch whole in one partition
// (the next batch in the next partition), a keyed one split by partition.
func TestProduceRequests(t *testing.T) {
	e := start(t, 3)
	cfg := e.Config()
	cfg.Compression = eventstream.CompressionGzip
	tg := newTarget(t, cfg, nil)
	seen := recordProduces(t, e.Cluster)
	for range 2 {
		if err := tg.Send(t.Context(), rows(50)); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	got := seen()
	if len(got) != 2 {
		t.Fatalf("%d produce requests for 2 unkeyed batches, want 2: %+v", len(got), got)
	}
	for i, r := range got {
		if r.acks != -1 || len(r.records) != 1 || r.records[0] != 50 || r.codec[0] != 1 {
			t.Errorf("request %d = %+v, want acks -1 (all) and one gzip batch (codec 1) of 50 records", i, r)
		}
	}
	if got[0].partitions[0] == got[1].partitions[0] {
		t.Errorf("both batches in partition %d, want one partition after the other", got[0].partitions[0])
	}

	cfg.KeyColumn, cfg.Compression = "device", eventstream.CompressionNone
	keyed := newTarget(t, cfg, nil)
	if err := keyed.Send(t.Context(), rows(70)); err != nil {
		t.Fatalf("keyed Send: %v", err)
	}
	total, parts := int32(0), map[int32]bool{}
	for _, r := range seen()[2:] {
		for i, p := range r.partitions {
			if parts[p] || r.codec[i] != 0 || r.acks != -1 {
				t.Errorf("request %+v: a second batch for partition %d, or compressed, or acks not all", r, p)
			}
			parts[p] = true
			total += r.records[i]
		}
	}
	if total != 70 || len(parts) < 2 {
		t.Errorf("keyed batch: %d records in partitions %v, want 70 over several (7 devices)", total, parts)
	}
}

// TestRecordErrors: the endpoint drops a batch for one record it names
// (produce v8 record errors); that row goes to the dead letter and the
// others of the batch are produced again.
func TestRecordErrors(t *testing.T) {
	e := start(t, 1)
	tg := newTarget(t, e.Config(), nil)
	var calls atomic.Int32
	e.Cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if calls.Add(1) > 1 {
			return nil, nil, false
		}
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		st := kmsg.NewProduceResponseTopic()
		st.Topic = pr.Topics[0].Topic
		sp := kmsg.NewProduceResponseTopicPartition()
		sp.Partition = pr.Topics[0].Partitions[0].Partition
		sp.ErrorCode = kerr.InvalidRecord.Code
		bad := kmsg.NewProduceResponseTopicPartitionErrorRecord()
		bad.RelativeOffset = 2
		msg := "record 2 is not valid"
		bad.ErrorMessage = &msg
		sp.ErrorRecords = append(sp.ErrorRecords, bad)
		st.Partitions = append(st.Partitions, sp)
		resp.Topics = append(resp.Topics, st)
		return resp, nil, true
	})
	err := tg.Send(t.Context(), rows(5))
	var re eventstream.RowErrors
	if !errors.As(err, &re) {
		t.Fatalf("Send = %v, want RowErrors", err)
	}
	for i := range 5 {
		rowErr := re.RowError(i)
		if i == 2 && (!errors.Is(rowErr, eventstream.ErrRejected) || !strings.Contains(rowErr.Error(), "record 2 is not valid")) {
			t.Errorf("row 2: %v, want ErrRejected with the endpoint's reason", rowErr)
		}
		if i != 2 && rowErr != nil {
			t.Errorf("row %d: %v, want produced on the retry", i, rowErr)
		}
	}
	if n, _ := e.Count(t.Context()); n != 4 {
		t.Errorf("%d messages, want the 4 others", n)
	}
}

// TestSendReusesItsRowBuffers: a batch's per-row buffers (errors and
// indexes, 24 bytes a row) serve the next batches instead of becoming
// garbage, and at most max_in_flight of them are kept.
func TestSendReusesItsRowBuffers(t *testing.T) {
	e := start(t, 2)
	cfg := e.Config()
	cfg.MaxInFlight = 3
	tg := newTarget(t, cfg, nil)
	if n, _ := eventstream.SpareBuffers(tg); n != 0 {
		t.Fatalf("%d spare buffers before any Send", n)
	}
	batch := rows(1000)
	for range 3 {
		if err := tg.Send(t.Context(), batch); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if n, room := eventstream.SpareBuffers(tg); n != 1 || room != 1000 {
			t.Fatalf("after a Send: %d spare buffers with room for %d rows, want the batch's 1 for 1000", n, room)
		}
	}
	if err := tg.Send(t.Context(), batch[:10]); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if n, room := eventstream.SpareBuffers(tg); n != 1 || room != 1000 {
		t.Errorf("after a small batch: %d spare buffers with room for %d rows, want the same 1 for 1000", n, room)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := tg.Send(t.Context(), batch); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}
	wg.Wait()
	if n, _ := eventstream.SpareBuffers(tg); n < 1 || n > cfg.MaxInFlight {
		t.Errorf("after 8 concurrent Sends: %d spare buffers, want 1..max_in_flight (%d)", n, cfg.MaxInFlight)
	}
	if got, _ := e.Count(t.Context()); got != 3*1000+10+8*1000 {
		t.Errorf("%d messages, want %d", got, 3*1000+10+8*1000)
	}
}

// TestRowErrorsOutliveLaterSends: the errors Send returns as RowErrors are
// the caller's; reusing their slice for the next batch would turn the
// failed rows into accepted ones before the pipeline dead-letters them.
func TestRowErrorsOutliveLaterSends(t *testing.T) {
	e := start(t, 1)
	cfg := e.Config()
	cfg.MaxMessageBytes = 100
	tg := newTarget(t, cfg, nil)
	in := rows(3)
	in[1] = json.RawMessage(`{"big":"` + strings.Repeat("x", 200) + `"}`)
	err := tg.Send(t.Context(), in)
	var re eventstream.RowErrors
	if !errors.As(err, &re) {
		t.Fatalf("Send = %v, want RowErrors", err)
	}
	for range 3 {
		if err := tg.Send(t.Context(), rows(3)); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if re.RowError(0) != nil || re.RowError(2) != nil || !errors.Is(re.RowError(1), eventstream.ErrMessageTooLarge) {
		t.Errorf("after later Sends the first batch's errors read %v, %v, %v; want nil, too large, nil", re.RowError(0), re.RowError(1), re.RowError(2))
	}
}
