package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateExplainsShares: pushd validate says what part of the
// dataset's quotas each pipeline takes when it is not the whole: the
// limits.share of an HTTP source, with what it allows, and a Kafka
// source's share of its partitions; a pipeline alone on its dataset gets
// no such line.
func TestValidateExplainsShares(t *testing.T) {
	path := filepath.Join(t.TempDir(), "share.yaml")
	cfg := `powerbi:
  auth: {method: static_token, token: abc}
pipelines:
  - name: sidecar
    source: {type: http, http: {listen: "127.0.0.1:0"}}
    target: {dataset_id: cfafbeb1-8037-4d0c-896e-a46fb27ff229, table: T}
    schema: {columns: [{name: v, type: String}]}
    limits: {share: 0.5}
  - name: stream
    source: {type: kafka, kafka: {brokers: ["127.0.0.1:9092"], topics: [events], group_id: pushd}}
    target: {dataset_id: dfafbeb1-8037-4d0c-896e-a46fb27ff229, table: T}
    schema: {columns: [{name: v, type: String}]}
  - name: alone
    source: {type: stdin}
    target: {dataset_id: efafbeb1-8037-4d0c-896e-a46fb27ff229, table: T}
    schema: {columns: [{name: v, type: String}]}
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, "", "validate", "-c", path)
	if code != exitOK {
		t.Fatalf("validate: exit %d: %s", code, stderr)
	}
	mustContain(t, "validate's output", stdout,
		"pipelines[0] (sidecar): quota share 0.5 (limits.share): 60 requests per 1m0s, 500000 rows per 1h0m0s, 2 in flight",
		"pipelines[1] (stream): quota share: the part of the dataset's quotas that this process's assigned partitions are of all partitions of its topics, recomputed at every rebalance of group pushd")
	if strings.Contains(stdout, "(alone)") {
		t.Errorf("a pipeline with the whole quota is explained:\n%s", stdout)
	}
}
