package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/daemon"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/logtest"
)

var (
	pasteBlock   = regexp.MustCompile(`(?s)\npowerbi:\n.*client_secret: \S+\n`)
	standInLine  = regexp.MustCompile(`Kafka stand-in:\s+(\S+)`)
	telemetryCol = "        - {name: DeviceId, type: String, from: device.id, required: true}\n        - {name: Seq, type: Int64, from: seq, required: true}\n"
)

// TestEmulatePrintsAPasteableBlockAndAKafkaStandIn: the powerbi block that
// `pushd emulate --tls --ca-out F --kafka ADDR` prints works as pasted
// (authority_url not doubled with the tenant), and its stand-in broker
// carries events from a Kafka producer through pushd into the emulator.
func TestEmulatePrintsAPasteableBlockAndAKafkaStandIn(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr logtest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- emulate(ctx, []string{"--listen", "127.0.0.1:0", "--tls", "--ca-out", caFile, "--kafka", "127.0.0.1:0", "--kafka-topics", "events", "--log-level", "warn"}, &stdout, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitForURL(t, &stdout, done)
	out := stdout.String()
	block := pasteBlock.FindString(out)
	broker := standInLine.FindStringSubmatch(out)
	if block == "" || broker == nil {
		t.Fatalf("no powerbi block or no Kafka stand-in in the banner:\n%s", out)
	}
	if strings.Contains(block, "/"+emulator.DefaultTenant) {
		t.Errorf("authority_url carries the tenant, which pushd appends again:\n%s", block)
	}

	// Produce the events with an independent Kafka client.
	const n = 300
	producer, err := kgo.NewClient(kgo.SeedBrokers(broker[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	for i := 1; i <= n; i++ {
		rec := &kgo.Record{Topic: "events", Value: []byte(fmt.Sprintf(`{"device":{"id":"d%d"},"seq":%d}`, i%7, i))}
		if err := producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatalf("producing to the stand-in: %v", err)
		}
	}

	text := block + `
metrics: {enabled: false}
pipelines:
  - name: walk
    source:
      type: kafka
      kafka: {brokers: ["` + broker[1] + `"], topics: [events], group_id: walkthrough, start_offset: earliest}
    target: {workspace_id: 0f6a3b4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b, dataset_name: Walk, table: Events}
    provision: {create: true}
    schema:
      columns:
` + telemetryCol + `    batch: {linger: 50ms}
    dead_letter: {path: ` + filepath.Join(dir, "dl.ndjson") + `}
`
	path := filepath.Join(dir, "walk.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCmd(t, "", "provision", "-c", path); code != exitOK {
		t.Fatalf("provision with the pasted block: exit %d\n%s\n%s", code, errOut, text)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	stats := emulatorStatsClient(t, caFile, pasteURL.FindStringSubmatch(block)[1])
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	result := make(chan daemon.Result, 1)
	go func() {
		res, _ := daemon.Run(runCtx, daemon.Options{Config: cfg})
		result <- res
	}()
	deadline := time.Now().Add(30 * time.Second)
	for stats().RowsAccepted < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	res := <-result
	if len(res.Pipelines) != 1 || res.Pipelines[0].Summary.RowsAccepted != n {
		t.Fatalf("result %+v: want %d rows accepted from the stand-in broker", res, n)
	}
	if got := stats().RowsAccepted; got != n {
		t.Fatalf("the emulator holds %d rows, want %d", got, n)
	}
}

var pasteURL = regexp.MustCompile(`api_url: (\S+)`)

// emulatorStatsClient returns a function reading the emulator's stats over
// HTTPS, trusting the CA it wrote.
func emulatorStatsClient(t *testing.T, caFile, base string) func() emulator.Stats {
	t.Helper()
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return func() emulator.Stats {
		var s emulator.Stats
		resp, err := client.Get(base + "/emulator/v1/stats")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
}
