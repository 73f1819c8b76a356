package infer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Source types a starter config can read from (the values of source.type).
const (
	StarterStdin = "stdin"
	StarterKafka = "kafka"
	StarterHTTP  = "http"
)

// StarterOptions say what `pushd init` writes around the inferred schema.
type StarterOptions struct {
	// Source is StarterStdin, StarterKafka or StarterHTTP.
	Source string
	// Table is the target table (default "Events"); the pipeline and the
	// dataset are named after it.
	Table string
	// Input names where the sample came from, for the header.
	Input string
	// File is the config's file name, for the commands in the header
	// (default "pushd.yaml").
	File string
}

// pipelineNameUnsafe matches what a pipeline name may not hold.
var pipelineNameUnsafe = regexp.MustCompile(`[^a-z0-9_-]+`)

// WriteStarter writes a complete, commented config for one pipeline from
// opts.Source into a table with this schema. It runs as written on the
// embedded emulator (`pushd run -c FILE`), and says in its comments what to
// change for the real Power BI; batch and limits are left at their
// documented defaults, written out so that they can be found and changed.
func (r *Result) WriteStarter(w io.Writer, opts StarterOptions) error {
	src, ok := starterSources[opts.Source]
	if !ok {
		return fmt.Errorf("unknown source %q: want stdin, kafka or http", opts.Source)
	}
	table := opts.Table
	if table == "" {
		table = "Events"
	}
	name := strings.Trim(pipelineNameUnsafe.ReplaceAllString(strings.ToLower(table), "-"), "-")
	if name == "" {
		name = "events"
	}
	var schema bytes.Buffer
	if err := r.WriteYAML(&schema, YAMLOptions{Table: table, Input: opts.Input, InPlace: true}); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	file := opts.File
	if file == "" {
		file = "pushd.yaml"
	}
	fmt.Fprint(bw, strings.ReplaceAll(fmt.Sprintf(starterHeader, opts.Source, src.try), "pushd.yaml", file))
	fmt.Fprint(bw, starterPowerBI)
	fmt.Fprintf(bw, "pipelines:\n  - name: %s\n", name)
	fmt.Fprint(bw, src.section)
	fmt.Fprintf(bw, starterTarget, scalar(table), scalar(table))
	for line := range strings.Lines(schema.String()) {
		bw.WriteString("    " + line)
	}
	fmt.Fprintf(bw, starterTail, name)
	return bw.Flush()
}

type starterSource struct {
	try     string // how to feed it, for the header
	section string // the source section, indented for a pipeline
}

var starterSources = map[string]starterSource{
	StarterStdin: {
		try: "#      ./bin/pushd run -c pushd.yaml < events.ndjson\n",
		section: `    source:
      type: stdin                       # NDJSON on standard input; at its end pushd drains, sends and exits
`,
	},
	StarterKafka: {
		try: "#      ./bin/pushd run -c pushd.yaml    (reads the topic below; set PUSHD_KAFKA_BROKERS)\n",
		section: `    source:
      type: kafka
      kafka:
        brokers: ["${PUSHD_KAFKA_BROKERS:-127.0.0.1:9092}"]   # bootstrap servers
        topics: [events]                # the topic(s) to read
        group_id: pushd-events          # consumer group: replicas with the same id share the partitions
        start_offset: earliest          # a new group reads the topic from its start; latest: only new records
`,
	},
	StarterHTTP: {
		try: "#      ./bin/pushd run -c pushd.yaml &\n#      curl --data-binary @events.ndjson http://127.0.0.1:8080/v1/events\n",
		section: `    source:
      type: http
      http:
        listen: 127.0.0.1:8080          # loopback: only this host (or pod) can post
        path: /v1/events                # POST NDJSON or a JSON array; answered once the rows are delivered
`,
	},
}

const starterHeader = `# A starter config written by ` + "`pushd init --source %s`" + `.
#
# 1. Try it now, without a Power BI tenant: the emulator line below makes
#    pushd start a local Power BI emulator in-process and create the dataset there.
%s#    See the rows each event becomes, without sending anything:
#      ./bin/pushd schema preview -c pushd.yaml < events.ndjson
# 2. For the real Power BI: delete the emulator line, uncomment the powerbi
#    section, set the variables it names, set target.workspace_id, then
#      ./bin/pushd doctor -c pushd.yaml       (checks every step, prints the fix)
#      ./bin/pushd provision -c pushd.yaml    (creates the dataset and table)
# Every key is explained in the README's configuration reference; values left
# out take their documented defaults.

emulator: {embedded: true}              # a local Power BI in-process; delete for the real one

`

const starterPowerBI = `# powerbi:
#   auth:
#     method: client_secret             # client_secret | client_certificate | managed_identity | static_token
#     tenant_id: ${PUSHD_TENANT_ID}     # directory (tenant) id of the app registration
#     client_id: ${PUSHD_CLIENT_ID}     # application (client) id
#     client_secret: ${PUSHD_CLIENT_SECRET}   # or client_secret_file: /run/secrets/pushd-client-secret

metrics:
  listen: 127.0.0.1:9464                # Prometheus /metrics, /healthz, /readyz

shutdown_timeout: 30s                   # on SIGTERM: stop reading, send what is in hand within this, exit

`

const starterTarget = `    target:
      workspace_id: 00000000-0000-0000-0000-000000000000   # your workspace's id (service principals cannot use My workspace)
      dataset_name: %s
      table: %s
    provision:                          # used by pushd provision (and the embedded emulator)
      create: true                      # create the dataset and table when missing
      retention: basicFIFO              # keep the newest ~200,000 rows; None keeps up to 5,000,000
`

const starterTail = `    batch:                              # Power BI's limits per request; a batch is sent when full or after linger
      max_rows: 10000
      max_bytes: 16000000
      linger: 1s
    limits:                             # the dataset's quotas (Power BI's documented defaults)
      requests_per_minute: 120
      rows_per_hour: 1000000
      max_in_flight: 5
    max_unacked_events: 5000            # events in flight at most: throttling becomes lag, not memory
    dead_letter:
      path: dead-letter-%s.ndjson   # events that cannot be delivered, with the reason
`
