package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

const testTopic = "events"

// newTestCluster starts an in-process Kafka cluster with one broker and the
// topic "events" in 3 partitions.
func newTestCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.SeedTopics(3, testTopic),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("starting kfake cluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// testKafkaConfig is a Kafka source config with timings short enough for
// tests.
func testKafkaConfig(c *kfake.Cluster, group string) KafkaConfig {
	cfg := DefaultConfig().Kafka
	cfg.Brokers = c.ListenAddrs()
	cfg.Topics = []string{testTopic}
	cfg.GroupID = group
	cfg.CommitInterval = 50 * time.Millisecond
	cfg.MaxWait = 100 * time.Millisecond
	cfg.SessionTimeout = 2 * time.Second
	cfg.RebalanceTimeout = 2 * time.Second
	return cfg
}

func testKafkaOptions(t *testing.T) KafkaOptions {
	return KafkaOptions{
		Logger:            testLogger(t),
		HeartbeatInterval: 100 * time.Millisecond,
		JoinGroupBackoff:  100 * time.Millisecond,
	}
}

// testLogger writes to the test log at warn and above (debug with -v and
// PUSHD_TEST_DEBUG=1).
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PUSHD_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newTestKafka(t *testing.T, cfg KafkaConfig, opts KafkaOptions) *Kafka {
	t.Helper()
	k, err := NewKafka(cfg, opts)
	if err != nil {
		t.Fatalf("NewKafka: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = k.Close(ctx)
	})
	return k
}

// produce writes perPartition records to each of the 3 partitions, with
// values {"p":P,"i":I}, starting at I = from.
func produce(t *testing.T, c *kfake.Cluster, from, perPartition int, opts ...kgo.Opt) {
	t.Helper()
	opts = append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("kgo client: %v", err)
	}
	defer cl.Close()
	var records []*kgo.Record
	for i := from; i < from+perPartition; i++ {
		for p := range int32(3) {
			records = append(records, &kgo.Record{
				Topic:     testTopic,
				Partition: p,
				Key:       fmt.Appendf(nil, "k%d", i),
				Value:     fmt.Appendf(nil, `{"p":%d,"i":%d}`, p, i),
				Headers:   []kgo.RecordHeader{{Key: "source", Value: []byte("test")}},
			})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
}

// committedOffsets returns the group's committed offset per partition.
func committedOffsets(t *testing.T, c *kfake.Cluster, group string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatalf("kgo client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetching committed offsets of %s: %v", group, err)
	}
	out := map[int32]int64{}
	for p, r := range resp[testTopic] {
		out[p] = r.At
	}
	return out
}

// waitCommitted waits until the group's committed offsets equal want.
func waitCommitted(t *testing.T, c *kfake.Cluster, group string, want map[int32]int64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var got map[int32]int64
	for time.Now().Before(deadline) {
		got = committedOffsets(t, c, group)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("committed offsets of %s = %v, want %v", group, got, want)
}

type readEvent struct {
	ev  Event
	ack Ack
}

// readN reads n events from s, failing the test after a generous deadline.
func readN(t *testing.T, s Source, n int) []readEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make([]readEvent, 0, n)
	for len(out) < n {
		ev, ack, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("Read after %d of %d events: %v", len(out), n, err)
		}
		out = append(out, readEvent{ev, ack})
	}
	return out
}

func positions(evs []readEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ev.Where()
	}
	sort.Strings(out)
	return out
}

func rangePositions(partition int, from, to int64) []string {
	var out []string
	for o := from; o < to; o++ {
		out = append(out, KafkaPosition(testTopic, partition, o))
	}
	return out
}

func TestKafkaConsumesEveryPartitionAndCommits(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	produce(t, c, 0, 100)
	reg := prometheus.NewRegistry()
	opts := testKafkaOptions(t)
	opts.Metrics = NewKafkaMetrics(reg)
	k := newTestKafka(t, testKafkaConfig(c, "g-all"), opts)

	evs := readN(t, k, 300)
	var want []string
	for p := range 3 {
		want = append(want, rangePositions(p, 0, 100)...)
	}
	sort.Strings(want)
	if got := positions(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("positions read differ from the 300 produced")
	}
	// Metadata and data of one record.
	for _, e := range evs {
		m := e.ev.Meta
		if m.Partition != 1 || m.Offset != 7 {
			continue
		}
		if string(e.ev.Data) != `{"p":1,"i":7}` || string(m.Key) != "k7" || m.Topic != testTopic ||
			m.Headers["source"] != "test" || m.Timestamp.IsZero() {
			t.Fatalf("event at 1@7: data %s, meta %+v", e.ev.Data, m)
		}
	}
	if got := testutil.ToFloat64(opts.Metrics.unacked.WithLabelValues("g-all")); got != 300 {
		t.Fatalf("unacked gauge = %v, want 300", got)
	}
	for _, e := range evs {
		e.ack(nil)
	}
	waitCommitted(t, c, "g-all", map[int32]int64{0: 100, 1: 100, 2: 100})
	if got := testutil.ToFloat64(opts.Metrics.messages.WithLabelValues("g-all", testTopic)); got != 300 {
		t.Fatalf("messages_total = %v, want 300", got)
	}
	// The broker holds the commit before the source has its answer and
	// sets the gauges: wait for them.
	committed := opts.Metrics.committed.WithLabelValues("g-all", testTopic, "2")
	lag := opts.Metrics.lag.WithLabelValues("g-all", testTopic, "2")
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(committed) != 100 || testutil.ToFloat64(lag) != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("committed_offset{partition=2} = %v, lag = %v; want 100 and 0", testutil.ToFloat64(committed), testutil.ToFloat64(lag))
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, _, err := k.Read(ctx); !errors.Is(err, ErrEndOfInput) {
		t.Fatalf("Read after Close = %v, want ErrEndOfInput", err)
	}
}

// TestKafkaRestartRedeliversFromFirstUnacked acks out of order, with a
// failure and a dead letter, closes, and checks that a new member of the same
// group gets exactly the records from each partition's first unacked one.
func TestKafkaRestartRedeliversFromFirstUnacked(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	produce(t, c, 0, 30)
	const group = "g-restart"
	cfg := testKafkaConfig(c, group)

	first := newTestKafka(t, cfg, testKafkaOptions(t))
	for _, e := range readN(t, first, 90) {
		m := e.ev.Meta
		switch {
		case m.Partition == 0 && (m.Offset == 10 || m.Offset == 20):
			// never acked: in flight when the process stops
		case m.Partition == 1 && m.Offset == 5:
			e.ack(errors.New("posting rows: 503"))
		case m.Partition == 2 && m.Offset%2 == 0:
			e.ack(fmt.Errorf("mapping: %w", ErrDeadLettered))
		default:
			e.ack(nil)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitCommitted(t, c, group, map[int32]int64{0: 10, 1: 5, 2: 30})

	second := newTestKafka(t, cfg, testKafkaOptions(t))
	want := append(rangePositions(0, 10, 30), rangePositions(1, 5, 30)...)
	sort.Strings(want)
	got := readN(t, second, len(want))
	if fmt.Sprint(positions(got)) != fmt.Sprint(want) {
		t.Fatalf("redelivered %v\nwant %v", positions(got), want)
	}
	// Nothing else is pending: the next records are the new ones.
	produce(t, c, 30, 1)
	next := readN(t, second, 3)
	wantNext := []string{
		KafkaPosition(testTopic, 0, 30), KafkaPosition(testTopic, 1, 30), KafkaPosition(testTopic, 2, 30),
	}
	if fmt.Sprint(positions(next)) != fmt.Sprint(wantNext) {
		t.Fatalf("after the redelivery read %v, want %v", positions(next), wantNext)
	}
	for _, e := range append(got, next...) {
		e.ack(nil)
	}
	waitCommitted(t, c, group, map[int32]int64{0: 31, 1: 31, 2: 31})
}

func TestKafkaMaxUnackedBlocksRead(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	produce(t, c, 0, 5)
	opts := testKafkaOptions(t)
	opts.MaxUnacked = 4
	k := newTestKafka(t, testKafkaConfig(c, "g-bound"), opts)

	evs := readN(t, k, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, _, err := k.Read(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read with %d unacked = %v, want it to block until ctx ends", len(evs), err)
	}
	// One ack frees one slot, and only one.
	evs[2].ack(nil)
	evs[2].ack(nil) // a second ack of the same event frees nothing
	more := readN(t, k, 1)
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, _, err = k.Read(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read after one ack and one read = %v, want it to block", err)
	}
	for i, e := range append(evs, more...) {
		if i != 2 {
			e.ack(nil)
		}
	}
	readN(t, k, 4)
}

// TestKafkaGroupMembersSharePartitions runs two members in one group: each
// gets a share of the partitions, and together they deliver every record.
func TestKafkaGroupMembersSharePartitions(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	const group = "g-share"
	cfg := testKafkaConfig(c, group)
	members := []*Kafka{newTestKafka(t, cfg, testKafkaOptions(t)), newTestKafka(t, cfg, testKafkaOptions(t))}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	seen := map[string]int{}           // position -> deliveries
	byMember := []map[int]bool{{}, {}} // partitions each member read from
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			for {
				ev, ack, err := m.Read(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				seen[ev.Where()]++
				byMember[i][ev.Meta.Partition] = true
				mu.Unlock()
				ack(nil)
			}
		})
	}
	// Produce in rounds until both members have had records: the second
	// member's join rebalances the group at some point during the rounds.
	total := 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		produce(t, c, total, 20)
		total += 20
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		both := len(byMember[0]) > 0 && len(byMember[1]) > 0
		mu.Unlock()
		if both && total >= 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d records per partition one member still has none: %v", total, byMember)
		}
	}
	want := map[int32]int64{0: int64(total), 1: int64(total), 2: int64(total)}
	waitCommitted(t, c, group, want)
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	duplicates := 0
	for p := range 3 {
		for _, pos := range rangePositions(p, 0, int64(total)) {
			switch n := seen[pos]; {
			case n == 0:
				t.Errorf("%s never delivered", pos)
			case n > 1:
				duplicates += n - 1
			}
		}
	}
	t.Logf("%d records, members read partitions %v and %v, %d duplicates from the rebalance", 3*total, byMember[0], byMember[1], duplicates)
}

// TestKafkaRebalanceCommitsAckedAndRedeliversUnacked holds acks in one
// member while a second joins: after the rebalance the second member starts
// its partitions at the first unacked offset, and the first member's late
// acks are still committed.
func TestKafkaRebalanceCommitsAckedAndRedeliversUnacked(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	produce(t, c, 0, 30)
	const group = "g-rebalance"
	cfg := testKafkaConfig(c, group)

	a := newTestKafka(t, cfg, testKafkaOptions(t))
	var held []readEvent
	for _, e := range readN(t, a, 90) {
		if e.ev.Meta.Offset < 10 {
			e.ack(nil)
		} else {
			held = append(held, e)
		}
	}
	waitCommitted(t, c, group, map[int32]int64{0: 10, 1: 10, 2: 10})

	// b joins; the group rebalances and b gets one or two partitions.
	b := newTestKafka(t, cfg, testKafkaOptions(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var bRead []readEvent
	gate := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, ack, err := b.Read(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			bRead = append(bRead, readEvent{ev, ack})
			open := false
			select {
			case <-gate:
				open = true
			default:
			}
			mu.Unlock()
			if open {
				ack(nil)
			}
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(bRead)
		mu.Unlock()
		if n >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second member read %d records, want at least 20", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// a acknowledges the rest late, after losing some partitions.
	for _, e := range held {
		e.ack(nil)
	}
	mu.Lock()
	close(gate) // from now on b's reader acks; what it read before is acked here
	for _, e := range bRead {
		e.ack(nil)
	}
	mu.Unlock()
	waitCommitted(t, c, group, map[int32]int64{0: 30, 1: 30, 2: 30})
	cancel()
	<-done

	mu.Lock()
	defer mu.Unlock()
	byPartition := map[int][]int64{}
	for _, e := range bRead {
		byPartition[e.ev.Meta.Partition] = append(byPartition[e.ev.Meta.Partition], e.ev.Meta.Offset)
	}
	if len(byPartition) == 0 || len(byPartition) == 3 {
		t.Fatalf("second member read partitions %v, want one or two of three", byPartition)
	}
	for p, offs := range byPartition {
		sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
		if offs[0] != 10 || offs[len(offs)-1] != 29 {
			t.Errorf("partition %d: second member read offsets %d..%d, want 10..29 (acked ones not again, unacked ones again)", p, offs[0], offs[len(offs)-1])
		}
	}
	t.Logf("second member read %d records from partitions %v", len(bRead), func() []int {
		var ps []int
		for p := range byPartition {
			ps = append(ps, p)
		}
		sort.Ints(ps)
		return ps
	}())
}

// TestKafkaLagGrowsWhilePaused blocks fetching with MaxUnacked and checks
// that the lag metric still follows what is produced (from ListOffsets).
func TestKafkaLagGrowsWhilePaused(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	produce(t, c, 0, 10)
	opts := testKafkaOptions(t)
	opts.Metrics = NewKafkaMetrics(prometheus.NewRegistry())
	opts.MaxUnacked = 1
	opts.LagInterval = 50 * time.Millisecond
	k := newTestKafka(t, testKafkaConfig(c, "g-lag"), opts)
	first := readN(t, k, 1)[0] // never acked: fetching stays paused
	partition := strconv.Itoa(first.ev.Meta.Partition)
	lag := opts.Metrics.lag.WithLabelValues("g-lag", testTopic, partition)

	produce(t, c, 10, 40) // 50 records in each partition now
	want := 50 - float64(first.ev.Meta.Offset)
	deadline := time.Now().Add(15 * time.Second)
	for testutil.ToFloat64(lag) != want {
		if time.Now().After(deadline) {
			t.Fatalf("lag of partition %s = %v, want %v", partition, testutil.ToFloat64(lag), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := testutil.ToFloat64(opts.Metrics.unacked.WithLabelValues("g-lag")); got != 1 {
		t.Fatalf("unacked = %v, want 1", got)
	}
}

// BenchmarkKafkaRead measures the source alone: fetch, track and ack
// records from an in-process cluster (run with -benchtime=Nx, N records).
func BenchmarkKafkaRead(b *testing.B) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, testTopic))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	value := []byte(`{"device":"sensor-0042","ts":"2026-01-02T03:04:05Z","temp":21.5,"humidity":40}`)
	for i := 0; i < b.N; i++ {
		cl.Produce(context.Background(), &kgo.Record{Topic: testTopic, Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	cl.Close()
	cfg := DefaultConfig().Kafka
	cfg.Brokers = c.ListenAddrs()
	cfg.Topics = []string{testTopic}
	cfg.GroupID = "bench"
	k, err := NewKafka(cfg, KafkaOptions{Metrics: NewKafkaMetrics(nil)})
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close(context.Background())
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(value)))
	var before syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &before); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, ack, err := k.Read(ctx)
		if err != nil {
			b.Fatal(err)
		}
		ack(nil)
	}
	b.StopTimer()
	// Wall time says little on a shared machine, or with more than one
	// core (goroutines waking each other cost CPU, not time): report the
	// process's CPU time per record as well (kfake's included).
	var after syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
		b.Fatal(err)
	}
	cpu := after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
}

// TestKafkaReady checks the readiness the daemon's /readyz reports: nil once
// the group has assigned partitions (before any record exists), an error
// naming the problem while the group cannot be joined, and after Close.
func TestKafkaReady(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	// An address nothing listens on: the coordinator cannot be reached.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name    string
		brokers []string
		// wantErr is "" when Ready must become nil, else a part of the
		// error it must come to report.
		wantErr string
	}{
		{name: "joined with partitions assigned", brokers: c.ListenAddrs()},
		{name: "coordinator unreachable", brokers: []string{deadAddr}, wantErr: "not a member: Unable to establish connection to consumer group coordinator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testKafkaConfig(c, "g-ready-"+strings.ReplaceAll(tc.name, " ", "-"))
			cfg.Brokers = tc.brokers
			k := newTestKafka(t, cfg, testKafkaOptions(t))
			if err := k.Ready(); err == nil {
				t.Fatal("Ready = nil right after NewKafka, before the group could be joined")
			}
			deadline := time.Now().Add(15 * time.Second)
			for {
				err := k.Ready()
				if tc.wantErr == "" && err == nil {
					break
				}
				if tc.wantErr != "" && err != nil && strings.Contains(err.Error(), tc.wantErr) {
					if !strings.Contains(err.Error(), cfg.GroupID) {
						t.Errorf("Ready = %q, want the group %s named", err, cfg.GroupID)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Ready = %v, want %q", err, tc.wantErr)
				}
				time.Sleep(20 * time.Millisecond)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = k.Close(ctx)
			if err := k.Ready(); err == nil || !strings.Contains(err.Error(), "closed") {
				t.Fatalf("Ready after Close = %v, want an error saying it is closed", err)
			}
		})
	}
}
