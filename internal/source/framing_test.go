package source

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// invalidInputCases are the inputs every source must treat alike: a BOM
// is stripped, invalid UTF-8 and an empty array become events with Err set
// (dead-lettered with their bytes, the stream going on), and valid events
// around them are untouched.
var invalidInputCases = []struct {
	name    string
	data    string // one event as a source receives it
	want    string // the event's data
	wantErr error
}{
	{"plain object", `{"a":1}`, `{"a":1}`, nil},
	{"byte order mark stripped", "\xEF\xBB\xBF{\"a\":1}", `{"a":1}`, nil},
	{"invalid UTF-8 kept as is", "{\"a\":\"\xff\"}", "{\"a\":\"\xff\"}", ErrInvalidUTF8},
	{"empty array", `[]`, `[]`, ErrEmptyArray},
	{"empty array with spaces", `[ ]`, `[ ]`, ErrEmptyArray},
	{"array of objects", `[{"a":1}]`, `[{"a":1}]`, nil},
}

func checkRuleEvent(t *testing.T, source string, ev Event, want string, wantErr error) {
	t.Helper()
	if string(ev.Data) != want {
		t.Errorf("%s: data %q, want %q", source, ev.Data, want)
	}
	switch {
	case wantErr == nil && ev.Err != nil:
		t.Errorf("%s: Err %v, want none", source, ev.Err)
	case wantErr != nil && !errors.Is(ev.Err, wantErr):
		t.Errorf("%s: Err %v, want %v", source, ev.Err, wantErr)
	}
}

// TestInvalidInputRuleStdin: the rule on standard input (the BOM only
// counts at the start of the stream, so each case is its own stream).
func TestInvalidInputRuleStdin(t *testing.T) {
	for _, tt := range invalidInputCases {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStdin(strings.NewReader(tt.data+"\n{}\n"), 0, "stdin")
			evs := readN(t, s, 2)
			checkRuleEvent(t, "stdin", evs[0].ev, tt.want, tt.wantErr)
			checkRuleEvent(t, "stdin (next event)", evs[1].ev, "{}", nil)
		})
	}
}

// TestInvalidInputRuleHTTP: the rule on HTTP, for NDJSON bodies and JSON
// bodies (where the body is the event or holds it as an element). Before,
// invalid UTF-8 was accepted and turned into U+FFFD downstream, a BOM got
// 400 and an NDJSON "[]" was accepted as an event with no row.
func TestInvalidInputRuleHTTP(t *testing.T) {
	for _, tt := range invalidInputCases {
		t.Run(tt.name, func(t *testing.T) {
			h, url := newTestHTTP(t, testHTTPConfig(), HTTPOptions{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := runPipeline(ctx, h, func(ev Event) error {
				if ev.Err != nil {
					return ErrDeadLettered
				}
				return nil
			})
			wantDead := `"dead_lettered":0`
			if tt.wantErr != nil {
				wantDead = `"dead_lettered":1`
			}
			r := post(t, url, "application/x-ndjson", "", []byte(tt.data+"\n{}\n"))
			if r.code != 200 || !strings.Contains(r.body, wantDead) {
				t.Fatalf("ndjson: status %d body %s, want 200 with %s", r.code, r.body, wantDead)
			}
			evs := p.read()
			checkRuleEvent(t, "http ndjson", evs[0], tt.want, tt.wantErr)
			checkRuleEvent(t, "http ndjson (next event)", evs[1], "{}", nil)

			// As a JSON body: an object or array is the body (an array
			// holds events, so only objects are compared there).
			if strings.Contains(tt.want, "{") && !strings.HasPrefix(strings.TrimPrefix(tt.data, "\xEF\xBB\xBF"), "[") {
				r = post(t, url, "application/json", "", []byte(tt.data))
				if r.code != 200 || !strings.Contains(r.body, wantDead) {
					t.Fatalf("json: status %d body %s, want 200 with %s", r.code, r.body, wantDead)
				}
				evs = p.read()
				checkRuleEvent(t, "http json", evs[len(evs)-1], tt.want, tt.wantErr)
			}
		})
	}
}

// TestInvalidInputRuleKafka: the rule on Kafka records (each record is a
// stream of its own for the BOM).
func TestInvalidInputRuleKafka(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatalf("kgo client: %v", err)
	}
	defer cl.Close()
	var records []*kgo.Record
	for _, tt := range invalidInputCases {
		records = append(records, &kgo.Record{Topic: testTopic, Partition: 0, Value: []byte(tt.data)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
	k := newTestKafka(t, testKafkaConfig(c, "g-rule"), testKafkaOptions(t))
	evs := readN(t, k, len(invalidInputCases))
	for _, e := range evs {
		tt := invalidInputCases[e.ev.Meta.Offset]
		checkRuleEvent(t, "kafka "+tt.name, e.ev, tt.want, tt.wantErr)
		e.ack(nil)
	}
}
