package schema_test

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/schema/schematest"
)

// FuzzMap checks that Map never panics, that every row is valid UTF-8 JSON
// with exactly the configured columns, that rows and failures account for
// every object, and that the result agrees with the reference mapper.
func FuzzMap(f *testing.F) {
	for _, e := range schematest.TelemetryEvents()[:20] {
		f.Add(e)
	}
	for _, v := range interesting {
		f.Add([]byte(`{"i":` + v + `,"d":` + v + `,"dec":` + v + `,"b":` + v + `,"t":` + v + `,"s":` + v + `,"r":"x"}`))
		f.Add([]byte(`[{"r":` + v + `,"n":{"arr":[0,` + v + `]},"x":{"y":` + v + `}},{"a.b":` + v + `,"r":1}]`))
	}
	for _, s := range []string{``, ` `, `[`, `{"r":`, `[1]`, `"x"`, `{"r":"x"}garbage`, `[{"r":"x"},]`, `{"r":"\ud800"}`} {
		f.Add([]byte(s))
	}
	cfg := crossConfig("seconds", "reject")
	m, err := schema.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	ref := newRef(f, cfg)
	f.Fuzz(func(t *testing.T, event []byte) {
		rows, mapErr := m.Map(event, nil, nil)
		var me *schema.MappingError
		if mapErr != nil && !errors.As(mapErr, &me) {
			t.Fatalf("error %v is not a *MappingError", mapErr)
		}
		for _, row := range rows {
			if !json.Valid(row) || !utf8.Valid(row) {
				t.Fatalf("invalid row %q from %q", row, event)
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(row, &obj); err != nil || len(obj) != len(cfg.Columns) {
				t.Fatalf("row %s does not hold the %d columns", row, len(cfg.Columns))
			}
		}
		if me != nil && me.Objects > 0 && len(rows)+len(me.Failures) != me.Objects {
			t.Fatalf("%d rows + %d failures != %d objects", len(rows), len(me.Failures), me.Objects)
		}
		want, err := ref.mapEvent(event)
		if errors.Is(err, errSkip) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		compare(t, ref, event, rows, mapErr, want)
	})
}
