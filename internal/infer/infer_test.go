package infer_test

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/infer"
	"github.com/pushd/pushd/internal/schema"
)

// col renders a column as "Name Type from [req]".
func col(c infer.Column) string {
	s := c.Name + " " + c.Type + " " + c.From
	if c.Required {
		s += " req"
	}
	return s
}

func TestInferRules(t *testing.T) {
	long := strings.Repeat("x", 4001)
	for _, tc := range []struct {
		name    string
		events  string
		want    []string
		skipped []string
		note    map[string]string // column -> note substring
	}{
		{"scalar kinds", `{"a":1,"b":1.5,"c":true,"d":"x","e":"2026-11-28T07:10:21.123Z","f":"2026-11-28"}`,
			[]string{"A Int64 a req", "B Double b req", "C Boolean c req", "D String d req", "E DateTime e req", "F DateTime f req"}, nil, nil},
		{"widening", `{"n":1,"m":1,"s":"x","t":"2026-11-28T00:00:00Z","b":true}
{"n":2.5,"m":"two","s":3,"t":"yesterday","b":"no"}`,
			[]string{"N Double n req", "M String m req", "S String s req", "T String t req", "B String b req"}, nil,
			map[string]string{"M": "mixed kinds"}},
		{"whole numbers out of Int64 range", `{"big":9223372036854775807,"e":1e3,"neg":-5}`,
			[]string{"Big Double big req", "E Double e req", "Neg Int64 neg req"}, nil, nil},
		{"required only when in every object", `{"a":1,"b":2}
{"a":3,"b":null}
{"a":4}`,
			[]string{"A Int64 a req", "B Int64 b"}, nil, nil},
		{"nested objects and arrays", `{"device":{"id":"d1","geo":{"lat":1.5}},"tags":["x","y"],"readings":[{"v":1},{"v":2,"w":3}],"empty":[]}
{"device":{"id":"d2"},"tags":[],"readings":[{"v":5}],"empty":[]}`,
			[]string{"DeviceId String device.id req", "DeviceGeoLat Double device.geo.lat", "Tags0 String tags.0", "Readings0V Int64 readings.0.v req"},
			[]string{"empty: always an empty array"}, nil},
		{"object in some events, value in others", `{"a":{"b":1}}
{"a":"flat"}`,
			[]string{"AB Int64 a.b"}, []string{"a: an object or array in some events and a value in others"}, nil},
		{"only nulls", `{"a":null,"b":1}`, []string{"A String a", "B Int64 b req"}, nil, map[string]string{"A": "only null values"}},
		{"numeric strings", `{"v":"3.71"}`, []string{"V String v req"}, nil, map[string]string{"V": "Double also works"}},
		{"names: case clashes and keys needing escapes", `{"cpu.usage":1,"Cpu":{"Usage":2},"@key":"k","ünï code":"u","_":3}`,
			[]string{`CpuUsage Int64 cpu\.usage req`, `CpuUsage2 Int64 Cpu.Usage req`, `Key String \@key req`, "ÜnïCode String ünï code req", "Column5 Int64 _ req"}, nil, nil},
		{"array events", `[{"a":1},{"a":2,"b":true}]
{"a":3}`,
			[]string{"A Int64 a req", "B Boolean b"}, nil, nil},
		{"long strings truncate", `{"s":"` + long + `"}`, []string{"S String s req"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := infer.Infer(strings.NewReader(tc.events), infer.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range res.Columns {
				got = append(got, col(c))
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("columns\n got %q\nwant %q", got, tc.want)
			}
			if strings.Join(res.Skipped, "|") != strings.Join(tc.skipped, "|") && !prefixes(res.Skipped, tc.skipped) {
				t.Errorf("skipped %q, want %q", res.Skipped, tc.skipped)
			}
			for name, want := range tc.note {
				found := false
				for _, c := range res.Columns {
					if c.Name == name {
						found = strings.Contains(c.Note, want)
					}
				}
				if !found {
					t.Errorf("column %s: no note containing %q", name, want)
				}
			}
			checkValidates(t, res, tc.events)
		})
	}
}

func prefixes(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[i]) {
			return false
		}
	}
	return true
}

// checkValidates splices the YAML into a config, loads it and maps every
// event with the loaded schema.
func checkValidates(t *testing.T, res *infer.Result, events string) {
	t.Helper()
	var out bytes.Buffer
	if err := res.WriteYAML(&out, infer.YAMLOptions{Table: "Telemetry"}); err != nil {
		t.Fatal(err)
	}
	var section strings.Builder
	for _, line := range strings.SplitAfter(out.String(), "\n") {
		if line != "" {
			section.WriteString("    " + line)
		}
	}
	text := `powerbi: {auth: {method: managed_identity}}
pipelines:
  - name: inferred
    source:
      type: stdin
    target:
      workspace_id: 0f6a3b4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b
      dataset_name: Inferred
      table: Telemetry
` + section.String()
	cfg, err := config.Options{LookupEnv: func(string) (string, bool) { return "", false }}.Parse([]byte(text), "inferred.yaml")
	if err != nil {
		t.Fatalf("config with the inferred schema is invalid:\n%v\n%s", err, text)
	}
	m, err := schema.New(cfg.Pipelines[0].Schema)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(events))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		n++
		if _, err := m.Map(sc.Bytes(), nil, nil); err != nil {
			t.Errorf("event %d does not map with the inferred schema: %v\n%s", n, err, out.String())
		}
	}
}

func TestInferSampleEvents(t *testing.T) {
	data, err := os.ReadFile("../../configs/sample-events.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	res, err := infer.Infer(bytes.NewReader(data), infer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 500 {
		t.Errorf("events = %d, want 500", res.Events)
	}
	want := map[string]string{
		"DeviceId":            "String device.id req",
		"Ts":                  "DateTime ts req",
		"Seq":                 "Int64 seq req",
		"MetricsTemperatureC": "Double metrics.temperature_c req",
		"MetricsBatteryV":     "String metrics.battery_v req",
		"StatusOnline":        "Boolean status.online req",
		"StatusAlarms0":       "String status.alarms.0",
		"LocationLat":         "Double location.lat req",
	}
	for _, c := range res.Columns {
		if w, ok := want[c.Name]; ok {
			if got := strings.TrimPrefix(col(c), c.Name+" "); got != w {
				t.Errorf("%s = %q, want %q", c.Name, got, w)
			}
			delete(want, c.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("columns missing: %v", want)
	}
	checkValidates(t, res, string(data))
}

func TestInferSampleLimit(t *testing.T) {
	res, err := infer.Infer(strings.NewReader("{\"a\":1}\n{\"a\":1.5}\n"), infer.Options{Sample: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 1 || res.Columns[0].Type != schema.TypeInt64 {
		t.Errorf("events %d, type %s: want 1 event read, Int64", res.Events, res.Columns[0].Type)
	}
}

func TestInferErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty input", "", "no events read"},
		{"not an object", `{"a":1}` + "\n" + `42`, "event 2: not a JSON object"},
		{"array of scalars", `[1,2]`, "element 0 of the array is not an object"},
		{"broken JSON", `{"a":`, "reading event 1"},
		{"no values", `{"a":{}}`, "no field with a value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := infer.Infer(strings.NewReader(tc.in), infer.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWriteYAMLQuotesAndAligns(t *testing.T) {
	res, err := infer.Infer(strings.NewReader(`{"a: b":1,"yes":true,"#x":"y"}`), infer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := res.WriteYAML(&out, infer.YAMLOptions{Table: "T", Input: "sample.ndjson"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# Inferred by `pushd schema infer` from 1 events (1 objects) of sample.ndjson.",
		"# For the table T",
		`from: "a: b",`,
		`{name: "Yes", type: Boolean, from: "yes",`,
		`from: "#x",`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	checkValidates(t, res, `{"a: b":1,"yes":true,"#x":"y"}`)
}
