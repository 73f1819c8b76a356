package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
	"github.com/twmb/franz-go/pkg/kfake"
)

// newClusterPartitions is newCluster with the topic in n partitions.
func newClusterPartitions(t testing.TB, n int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(int32(n), topic),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// shareOf is a process's pushd_powerbi_quota_share_ratio (0 when absent).
func shareOf(t testing.TB, p *proc) float64 {
	return sum(p.metrics(t), "pushd_powerbi_quota_share_ratio")
}

// waitShares waits until each process reports the share want.
func waitShares(t testing.TB, want float64, ps ...*proc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok := true
		var got []float64
		for _, p := range ps {
			s := shareOf(t, p)
			got = append(got, s)
			ok = ok && s > want-0.001 && s < want+0.001
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("shares %v, want %v each", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKafkaThreeProcessesShareTheQuota: three pushd processes of one group
// on six partitions write one dataset whose quota is scaled down to 60
// requests per 6s, with a backlog on every partition. Each takes a third of
// the quota (two partitions of six), and together they use at least 90% of
// it with no 429; one stops mid-run, the other two take half each after
// the rebalance, still with no 429, and every event lands.
func TestKafkaThreeProcessesShareTheQuota(t *testing.T) {
	t.Parallel()
	const (
		group = "e2e-quota-share"
		// A request holds its place in the window from its send until a
		// window after its answer (see pushapi's window), so each window
		// loses a round trip, and on a loaded machine under -race (this
		// test's processes, kfake and the emulator share 2 cores with the
		// other tests) that includes waiting for a core: 3s windows lost
		// 7-10% in CI, so the window is 6s, at the same 10 requests a
		// second (98% used here).
		quota  = 60
		window = 6 * time.Second
		n      = 30_000 // 300 requests of 100 rows: about 5 windows
	)
	c := newClusterPartitions(t, 6)
	emu, ca, id := testEmulator(t, func(c *emulator.Config) {
		c.Limits.RequestsPerWindow = quota
		c.Limits.RequestWindow = window
	})
	s := setup{emu: emu, ca: ca, dir: t.TempDir()}
	const maxUnacked = 2_000
	opts := pipelineOptions{
		source:     kafkaSource(c, group, 200*time.Millisecond),
		batch:      "{max_rows: 100, linger: 50ms}",
		limits:     fmt.Sprintf("{requests_per_minute: %d, request_window: %s, large_table_rows: -1}", quota, window),
		maxUnacked: maxUnacked,
	}
	var ps []*proc
	for _, name := range []string{"a", "b", "c"} {
		ps = append(ps, startPushd(t, name, s.writeConfig(t, name, opts)))
	}
	for _, p := range ps {
		p.waitReady(t)
	}
	waitShares(t, 1.0/3, ps...)
	produce(t, c, telemetry(t, n), 1)

	// Two windows at a third each, measured at the emulator from the
	// first request after the first full window.
	start := time.Now()
	time.Sleep(3 * window)
	stopAt := time.Now()
	if code, _ := ps[2].stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("pushd c exited %d after SIGTERM, want 0", code)
	}
	used := 0
	from, to := start.Add(window), stopAt
	for _, p := range emu.Stats().Datasets[id].Posts {
		if p.Status == http.StatusOK && !p.Arrived.Before(from) && p.Arrived.Before(to) {
			used++
		}
	}
	allowed := quota * to.Sub(from).Seconds() / window.Seconds()
	t.Logf("three processes: %d requests in %s, %.1f%% of the %.0f allowed", used, to.Sub(from).Round(time.Millisecond), 100*float64(used)/allowed, allowed)
	if float64(used) < 0.9*allowed {
		t.Errorf("three processes used %d of %.0f allowed requests (%.1f%%), want >= 90%%", used, allowed, 100*float64(used)/allowed)
	}

	waitShares(t, 0.5, ps[:2]...)
	counts := waitLanded(t, emu, id, n, 3*time.Minute)
	for _, p := range ps[:2] {
		if code, _ := p.stop(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("pushd %s exited %d after SIGTERM, want 0", p.name, code)
		}
	}
	st := emu.Stats().Datasets[id]
	if st.Throttled != 0 {
		t.Fatalf("%d answers 429, want 0", st.Throttled)
	}
	dups, strays := duplicates(counts, n)
	if missing := missingSeqs(counts, n); len(missing) > 0 || strays != 0 {
		t.Fatalf("%d events never landed (first %v), %d strays", len(missing), first(missing, 10), strays)
	}
	t.Logf("%d events landed through %d requests, 0 answers 429, %d duplicates from the rebalance", n, st.PostRows, dups)
	// The README's bound: the events in flight in the members that lose
	// partitions to the rebalance (any of the three), max_unacked_events
	// each, and what they acknowledged in one commit interval (200ms: at
	// most 2 requests of 100 rows at this quota).
	if dups > 3*(maxUnacked+200) {
		t.Fatalf("%d duplicates, more than max_unacked_events (%d) and one commit interval for each of the 3 members", dups, maxUnacked)
	}
}

// TestHTTPTwoProcessesShareTheQuota: two HTTP-source pushd with
// limits.share 0.5 write one dataset whose quota is scaled down to 10
// requests per 2s, each under a steady stream of clients: no 429, and
// every event answered 200 landed. The same run with share 1 draws 429s,
// which shows the test can fail.
func TestHTTPTwoProcessesShareTheQuota(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		share     string
		want429s  bool
		eventsPer int
	}{
		{share: "0.5", eventsPer: 1_000},
		{share: "1", want429s: true, eventsPer: 1_000},
	} {
		t.Run("share "+tc.share, func(t *testing.T) {
			emu, ca, id := testEmulator(t, func(c *emulator.Config) {
				c.Limits.RequestsPerWindow = 10
				c.Limits.RequestWindow = 2 * time.Second
			})
			s := setup{emu: emu, ca: ca, dir: t.TempDir()}
			opts := pipelineOptions{
				source: httpSource("        response_timeout: 60s\n"),
				batch:  "{max_rows: 50, linger: 20ms}",
				limits: "{requests_per_minute: 10, request_window: 2s, share: " + tc.share + "}",
			}
			events := telemetry(t, 2*tc.eventsPer)
			var wg sync.WaitGroup
			for i, name := range []string{"a", "b"} {
				d, _ := runDaemon(t, s.config(name, opts))
				url := "http://" + d.HTTPSourceAddr("telemetry") + "/v1/events"
				mine := events[i*tc.eventsPer : (i+1)*tc.eventsPer]
				for c := range 4 {
					wg.Go(func() {
						for start := c * 25; start < len(mine); start += 4 * 25 {
							body := append(bytes.Join(mine[start:start+25], []byte("\n")), '\n')
							status, _, resp := post(t, url, "application/x-ndjson", body)
							var counts struct{ Accepted int }
							if status != http.StatusOK || json.Unmarshal(resp, &counts) != nil || counts.Accepted != 25 {
								t.Errorf("pushd %s, client %d: %d %s, want 200 with 25 accepted", name, c, status, resp)
							}
						}
					})
				}
			}
			wg.Wait()
			st := emu.Stats().Datasets[id]
			counts := seqCounts(t, emu, id)
			if missing := missingSeqs(counts, 2*tc.eventsPer); len(missing) > 0 {
				t.Fatalf("%d events answered 200 never landed (first %v)", len(missing), first(missing, 10))
			}
			t.Logf("share %s: %d events through %d requests, %d answers 429", tc.share, 2*tc.eventsPer, st.PostRows, st.Throttled)
			if tc.want429s != (st.Throttled > 0) {
				t.Fatalf("share %s: %d answers 429, want429s %v", tc.share, st.Throttled, tc.want429s)
			}
		})
	}
}
