package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
)

// noQuotas switches the emulator's rate quotas off: these tests are about
// delivery, and pushapi's own tests cover pacing.
func noQuotas(c *emulator.Config) { c.Limits = c.Limits.WithoutQuotas() }

// raisedLimits lifts pushd's own limiter to match.
const raisedLimits = "{requests_per_minute: 1000000, rows_per_hour: 1000000000, large_table_rows: -1, max_in_flight: 5}"

// TestKafkaEveryEventOnceAndResume: 100,000 events over 3 partitions land
// exactly once under Power BI's real quotas; after a SIGTERM, 1,000 more
// events and a restart in the same group, only the new ones are fetched
// and delivered.
func TestKafkaEveryEventOnceAndResume(t *testing.T) {
	t.Parallel()
	const (
		n     = 100_000
		more  = 1_000
		group = "e2e-resume"
	)
	c := newCluster(t)
	emu, ca, id := testEmulator(t, nil) // the documented quotas: 120 requests a minute, 1M rows an hour
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	events := telemetry(t, n+more)
	produce(t, c, events[:n], 1)

	cfg := s.writeConfig(t, "resume", pipelineOptions{
		source: kafkaSource(c, group, 200*time.Millisecond),
		batch:  "{max_rows: 10000, linger: 50ms}",
	})
	first := startPushd(t, "first", cfg)
	waitLanded(t, emu, id, n, 3*time.Minute)
	if code, _ := first.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("first pushd exited %d after SIGTERM, want 0", code)
	}
	counts := seqCounts(t, emu, id)
	if dups, strays := duplicates(counts, n); dups != 0 || strays != 0 || len(counts) != n {
		t.Fatalf("first run: %d distinct events, %d duplicates, %d strays; want %d exactly once", len(counts), dups, strays, n)
	}
	committed := committedOffsets(t, c, group)
	var total int64
	for _, o := range committed {
		total += o
	}
	if len(committed) != 3 || total != n {
		t.Fatalf("committed offsets after SIGTERM = %v (sum %d), want all %d records of 3 partitions", committed, total, n)
	}

	produce(t, c, events[n:], n+1)
	second := startPushd(t, "second", cfg)
	waitLanded(t, emu, id, n+more, 3*time.Minute)
	fetched := sum(second.metrics(t), "pushd_kafka_messages_total")
	if code, _ := second.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("second pushd exited %d after SIGTERM, want 0", code)
	}
	counts = seqCounts(t, emu, id)
	if dups, strays := duplicates(counts, n+more); dups != 0 || strays != 0 || len(counts) != n+more {
		t.Fatalf("after the restart: %d distinct events, %d duplicates, %d strays; want %d exactly once", len(counts), dups, strays, n+more)
	}
	if fetched != more {
		t.Fatalf("the restarted process fetched %v records, want only the %d new ones", fetched, more)
	}
	st := emu.Stats().Datasets[id]
	t.Logf("%d events exactly once in %d requests (%d throttled); restart fetched %v records", n+more, st.PostRows, st.Throttled, fetched)
}

// inFlight reports the POST rows requests the emulator is serving now.
func inFlight(emu *emulator.Server, datasetID string) int {
	return emu.Stats().Datasets[datasetID].InFlight
}

// waitMidStream waits until at least rows rows landed and requests are in
// flight, failing if the stream ends first.
func waitMidStream(t *testing.T, emu *emulator.Server, datasetID string, rows, total int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		landed := emu.RowCount(datasetID, table)
		if landed >= total {
			t.Fatalf("all %d events landed before the stream could be interrupted", total)
		}
		if landed >= rows && inFlight(emu, datasetID) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s %d rows landed, want %d with requests in flight", landed, rows)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKafkaSIGKILLRedeliversOnlyInFlight kills pushd with SIGKILL while
// requests are in flight and starts it again: every event lands at least
// once, every duplicate comes from past the group's committed offset at the
// kill, and there are at most max_unacked_events + one batch of them.
//
// What comes again is what lay past the committed offsets at the kill:
// the events not yet acknowledged (at most max_unacked_events; those whose
// request was in flight land anyway, as a server finishes a request whose
// client died) and those acknowledged since the last commit. The second
// part depends on the rate against the commit interval, so the test keeps
// the stream slow enough (2 requests of 500 rows in flight for 200ms each,
// commits every 50ms) that max_unacked_events + one batch is a fair bound.
// At 5 requests of 500 rows in flight for 100ms (25,000 events/s), the
// same kill measured 3,000 duplicates: 2,000 in flight + 1,000 acknowledged
// and not yet committed.
func TestKafkaSIGKILLRedeliversOnlyInFlight(t *testing.T) {
	t.Parallel()
	const (
		n          = 20_000
		maxUnacked = 2_000
		maxRows    = 500
		group      = "e2e-sigkill"
	)
	c := newCluster(t)
	emu, ca, id := testEmulator(t, func(c *emulator.Config) {
		noQuotas(c)
		c.Faults.Latency = 200 * time.Millisecond
	})
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	produce(t, c, telemetry(t, n), 1)
	cfg := s.writeConfig(t, "sigkill", pipelineOptions{
		source:     kafkaSource(c, group, 50*time.Millisecond),
		batch:      "{max_rows: 500, linger: 50ms}",
		limits:     "{requests_per_minute: 1000000, rows_per_hour: 1000000000, large_table_rows: -1, max_in_flight: 2}",
		maxUnacked: maxUnacked,
	})

	victim := startPushd(t, "killed", cfg)
	waitMidStream(t, emu, id, 5_000, n)
	inFlightAtKill := inFlight(emu, id)
	if code, _ := victim.stop(t, syscall.SIGKILL); code != -1 {
		t.Fatalf("exit code after SIGKILL = %d, want -1 (killed by a signal)", code)
	}
	committed := committedOffsets(t, c, group)
	time.Sleep(300 * time.Millisecond) // requests cut by the kill end in the emulator
	landedAtKill := emu.RowCount(id, table)
	emu.SetFaults(emulator.Faults{}) // the restart need not be slow

	restarted := startPushd(t, "restarted", cfg)
	waitLanded(t, emu, id, n, 3*time.Minute)
	if code, _ := restarted.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("restarted pushd exited %d after SIGTERM, want 0", code)
	}

	rows := landedRows(t, emu, id)
	counts := map[int64]int{}
	for _, r := range rows {
		counts[r.Seq]++
	}
	if missing := missingSeqs(counts, n); len(missing) > 0 {
		t.Fatalf("%d events never landed (first %v)", len(missing), first(missing, 10))
	}
	dups, strays := duplicates(counts, n)
	if strays != 0 {
		t.Fatalf("%d rows with a seq that was never produced", strays)
	}
	// A duplicate's copies are all past the offset committed at the kill:
	// a committed event is never delivered again.
	for _, r := range rows {
		if counts[r.Seq] > 1 && r.Offset < committed[r.Partition] {
			t.Errorf("seq %d (partition %d offset %d) landed %d times, but offsets below %d were committed before the kill",
				r.Seq, r.Partition, r.Offset, counts[r.Seq], committed[r.Partition])
		}
	}
	var committedTotal int64
	for _, o := range committed {
		committedTotal += o
	}
	t.Logf("SIGKILL with %d requests in flight: %d rows had landed, %d offsets committed; after the restart %d rows for %d events: %d duplicates (bound %d)",
		inFlightAtKill, landedAtKill, committedTotal, len(rows), n, dups, maxUnacked+maxRows)
	if dups > maxUnacked+maxRows {
		t.Fatalf("%d duplicates, want at most max_unacked_events + one batch = %d", dups, maxUnacked+maxRows)
	}
}

// TestKafkaSIGTERMUnderLoadLosesAndDuplicatesNothing sends SIGTERM while
// slow requests are in flight: pushd stops reading, sends what it holds,
// commits exactly what landed and exits 0 within shutdown_timeout; a
// restart delivers the rest, and every event lands exactly once.
func TestKafkaSIGTERMUnderLoadLosesAndDuplicatesNothing(t *testing.T) {
	t.Parallel()
	const (
		n        = 30_000
		group    = "e2e-sigterm"
		shutdown = 10 * time.Second
	)
	c := newCluster(t)
	emu, ca, id := testEmulator(t, func(c *emulator.Config) {
		noQuotas(c)
		c.Faults.Latency = 300 * time.Millisecond
	})
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	produce(t, c, telemetry(t, n), 1)
	cfg := s.writeConfig(t, "sigterm", pipelineOptions{
		source:          kafkaSource(c, group, 200*time.Millisecond),
		batch:           "{max_rows: 1000, linger: 50ms}",
		limits:          raisedLimits,
		maxUnacked:      5_000,
		shutdownTimeout: shutdown,
	})

	p := startPushd(t, "terminated", cfg)
	waitMidStream(t, emu, id, 5_000, n)
	inFlightAtTerm := inFlight(emu, id)
	code, took := p.stop(t, syscall.SIGTERM)
	if code != 0 || took >= shutdown {
		t.Fatalf("after SIGTERM pushd exited %d in %v, want 0 within shutdown_timeout %v", code, took, shutdown)
	}
	// What landed is exactly what was committed: per partition, the
	// offsets below the committed one, once each.
	committed := committedOffsets(t, c, group)
	rows := landedRows(t, emu, id)
	seen := map[int32]map[int64]int{}
	for _, r := range rows {
		if seen[r.Partition] == nil {
			seen[r.Partition] = map[int64]int{}
		}
		seen[r.Partition][r.Offset]++
	}
	var committedTotal int64
	for part := range int32(3) {
		at := committed[part]
		committedTotal += at
		if len(seen[part]) != int(at) {
			t.Errorf("partition %d: %d distinct offsets landed, %d committed", part, len(seen[part]), at)
		}
		for off, k := range seen[part] {
			if off >= at || k != 1 {
				t.Errorf("partition %d offset %d landed %d times with %d committed", part, off, k, at)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("SIGTERM with %d requests in flight: exit 0 after %v; %d rows landed, all committed, none twice", inFlightAtTerm, took.Round(time.Millisecond), len(rows))

	emu.SetFaults(emulator.Faults{})
	again := startPushd(t, "restarted", cfg)
	waitLanded(t, emu, id, n, 3*time.Minute)
	if code, _ := again.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("restarted pushd exited %d after SIGTERM, want 0", code)
	}
	counts := seqCounts(t, emu, id)
	if dups, strays := duplicates(counts, n); dups != 0 || strays != 0 || len(counts) != n {
		t.Fatalf("%d distinct events, %d duplicates, %d strays; want %d exactly once", len(counts), dups, strays, n)
	}
}

// TestKafkaTwoProcessesShareTheGroup runs two pushd processes in one group:
// each consumes a share of the partitions (their /metrics say how much) and
// together they deliver every event.
func TestKafkaTwoProcessesShareTheGroup(t *testing.T) {
	t.Parallel()
	const group = "e2e-share"
	c := newCluster(t)
	emu, ca, id := testEmulator(t, noQuotas)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	const maxUnacked = 2_000
	opts := pipelineOptions{
		source:     kafkaSource(c, group, 200*time.Millisecond),
		batch:      "{max_rows: 10000, linger: 50ms}",
		limits:     raisedLimits,
		maxUnacked: maxUnacked,
	}
	a := startPushd(t, "a", s.writeConfig(t, "a", opts))
	b := startPushd(t, "b", s.writeConfig(t, "b", opts))
	a.waitReady(t)
	b.waitReady(t)

	// Produce in rounds until both have fetched: should the group still be
	// settling when the first round arrives, a later one finds it settled.
	const round, most = 5_000, 60_000
	events := telemetry(t, most)
	total := 0
	var fetchedA, fetchedB float64
	began := time.Now()
	for {
		produce(t, c, events[total:total+round], total+1)
		total += round
		waitLanded(t, emu, id, total, 3*time.Minute)
		fetchedA = sum(a.metrics(t), "pushd_kafka_messages_total")
		fetchedB = sum(b.metrics(t), "pushd_kafka_messages_total")
		if fetchedA > 0 && fetchedB > 0 && total >= 20_000 {
			break
		}
		if total >= most {
			t.Fatalf("after %d events process a fetched %v and b %v: the group did not share", total, fetchedA, fetchedB)
		}
	}
	partitions := func(p *proc) []string {
		var out []string
		for k, v := range p.metrics(t) {
			if v > 0 && len(k) > len("pushd_kafka_committed_offset{") && k[:len("pushd_kafka_committed_offset{")] == "pushd_kafka_committed_offset{" {
				out = append(out, k[len("pushd_kafka_committed_offset"):])
			}
		}
		return out
	}
	t.Logf("process a fetched %v records (committed %v), b %v (committed %v)", fetchedA, partitions(a), fetchedB, partitions(b))
	for _, p := range []*proc{a, b} {
		if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("pushd %s exited %d after SIGTERM, want 0", p.name, code)
		}
	}
	if fetchedA+fetchedB < float64(total) {
		t.Fatalf("the processes fetched %v + %v records, fewer than the %d produced", fetchedA, fetchedB, total)
	}
	counts := seqCounts(t, emu, id)
	if missing := missingSeqs(counts, total); len(missing) > 0 {
		t.Fatalf("%d events never landed (first %v)", len(missing), first(missing, 10))
	}
	dups, strays := duplicates(counts, total)
	if strays != 0 {
		t.Fatalf("%d rows with a seq never produced", strays)
	}
	var committedTotal int64
	for _, o := range committedOffsets(t, c, group) {
		committedTotal += o
	}
	if committedTotal != int64(total) {
		t.Fatalf("the group committed %d offsets, want %d", committedTotal, total)
	}
	t.Logf("%d events delivered by two processes, %d duplicates (from a rebalance, if any)", total, dups)
	// The README's bound: a rebalance duplicates at most the events in
	// flight in the members that lose partitions (max_unacked_events each)
	// and those they acknowledged in one commit interval (at the run's
	// rate).
	perInterval := int(float64(total) / time.Since(began).Seconds() * 0.2)
	if bound := 2 * (maxUnacked + perInterval); dups > bound {
		t.Fatalf("%d duplicates, more than max_unacked_events (%d) and one commit interval (%d events) for each of the 2 members", dups, maxUnacked, perInterval)
	}
}

// TestKafkaThrottlingKeepsHeapFlat throttles every request for a minute
// (429 with Retry-After 5s) while 120,000 events wait in Kafka. pushd
// holds at most max_unacked_events (10,000) of them, so its heap stays
// under heapBound throughout, scraped from its /metrics; when the window
// ends every event lands, once.
func TestKafkaThrottlingKeepsHeapFlat(t *testing.T) {
	t.Parallel()
	const (
		n          = 120_000
		maxUnacked = 10_000
		group      = "e2e-throttle"
		window     = time.Minute
		// heapBound: the live heap measured while throttled is ~20 MiB
		// (10,000 events of ~330 bytes with their records, rows and
		// trackers, a batch body of ~3 MB, kafka-go's buffers, the
		// runtime), and with GOGC=100 the heap in use grows to about twice
		// the live heap between collections.
		heapBound = 40 << 20
	)
	c := newCluster(t)
	emu, ca, id := testEmulator(t, noQuotas)
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	produce(t, c, telemetry(t, n), 1)
	cfg := s.writeConfig(t, "throttle", pipelineOptions{
		source:     kafkaSource(c, group, 200*time.Millisecond),
		batch:      "{max_rows: 10000, linger: 50ms}",
		limits:     raisedLimits,
		maxUnacked: maxUnacked,
	})

	emu.SetFaults(emulator.Faults{ThrottleFor: window, ThrottleRetryAfter: 5 * time.Second})
	throttleEnds := emu.Faults().ThrottleUntil
	p := startPushd(t, "throttled", cfg)

	var peakHeap, peakRSS, peakUnacked float64
	var scrapes, rowsInWindow int
	done := false
	deadline := throttleEnds.Add(2 * time.Minute)
	for !done {
		m := p.metrics(t)
		scrapes++
		peakHeap = max(peakHeap, sum(m, "go_memstats_heap_inuse_bytes"))
		peakRSS = max(peakRSS, sum(m, "process_resident_memory_bytes"))
		peakUnacked = max(peakUnacked, sum(m, "pushd_kafka_unacked_messages"))
		landed := emu.RowCount(id, table)
		if time.Now().Before(throttleEnds) {
			rowsInWindow = landed
		}
		done = landed >= n
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rows landed 2 minutes after the throttling window", landed, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
	counts := waitLanded(t, emu, id, n, 3*time.Minute)
	if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd exited %d after SIGTERM, want 0", code)
	}
	st := emu.Stats().Datasets[id]
	t.Logf("throttled %v: %d 429s, %d rows landed in the window; %d scrapes: peak heap in use %.1f MiB (bound %d MiB), peak RSS %.1f MiB, peak unacked %v; all %d events landed afterwards",
		window, st.Throttled, rowsInWindow, scrapes, peakHeap/(1<<20), heapBound>>20, peakRSS/(1<<20), peakUnacked, n)
	if st.Throttled == 0 || rowsInWindow != 0 {
		t.Fatalf("%d requests throttled and %d rows landed within the window: the throttling did not hold the stream", st.Throttled, rowsInWindow)
	}
	if peakHeap == 0 || peakHeap > heapBound {
		t.Fatalf("peak heap in use %.1f MiB, want under %d MiB", peakHeap/(1<<20), heapBound>>20)
	}
	if peakUnacked > maxUnacked {
		t.Fatalf("peak unacked %v, above max_unacked_events %d", peakUnacked, maxUnacked)
	}
	if dups, strays := duplicates(counts, n); dups != 0 || strays != 0 {
		t.Fatalf("%d duplicates, %d strays; want every event once", dups, strays)
	}
}
