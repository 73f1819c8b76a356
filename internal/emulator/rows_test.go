package emulator

import (
	"net/http"
	"strings"
	"testing"
)

// TestRowValues: values against column types, and body shapes.
func TestRowValues(t *testing.T) {
	long := strings.Repeat("x", 4000)
	for _, tc := range []struct {
		name   string
		body   string
		status int
		target string // details target of a 400
	}{
		{"example rows", `{"rows":[{"ProductID":1,"Name":"Adjustable Race","Category":"Components","IsCompete":true,"ManufacturedOn":"07/30/2014"}]}`, 200, ""},
		{"empty rows", `{"rows":[]}`, 200, ""},
		{"nulls everywhere", `{"rows":[{"ProductID":null,"Name":null,"IsCompete":null,"ManufacturedOn":null,"Price":null,"Cost":null}]}`, 200, ""},
		{"whitespace and escapes", " {\n \"rows\" : [ { \"Name\" : \"a\\\"b\\u00e9\" , \"Price\" : -1.5e3 } ] } ", 200, ""},
		{"rows key case-insensitive", `{"Rows":[{"ProductID":1}]}`, 200, ""},
		{"Int64 integral float", `{"rows":[{"ProductID":1e3}]}`, 200, ""},
		{"Int64 fraction", `{"rows":[{"ProductID":1.5}]}`, 400, "rows[0].ProductID"},
		{"Int64 max", `{"rows":[{"ProductID":9223372036854775807}]}`, 400, "rows[0].ProductID"},
		{"Int64 min", `{"rows":[{"ProductID":-9223372036854775808}]}`, 400, "rows[0].ProductID"},
		{"Int64 overflow", `{"rows":[{"ProductID":99999999999999999999}]}`, 400, "rows[0].ProductID"},
		{"Int64 string", `{"rows":[{"ProductID":"1"}]}`, 400, "rows[0].ProductID"},
		{"Double overflow", `{"rows":[{"Price":1e400}]}`, 400, "rows[0].Price"},
		{"Double max", `{"rows":[{"Price":1.7976931348623157e308}]}`, 400, "rows[0].Price"},
		{"Double bool", `{"rows":[{"Price":true}]}`, 400, "rows[0].Price"},
		{"Decimal ok", `{"rows":[{"Cost":12345.6789}]}`, 200, ""},
		{"Decimal too large", `{"rows":[{"Cost":1e29}]}`, 400, "rows[0].Cost"},
		{"Decimal at the top of the fixed decimal range", `{"rows":[{"Cost":922337203685477.5807}]}`, 200, ""},
		{"Decimal at the bottom of the fixed decimal range", `{"rows":[{"Cost":-922337203685477.5807}]}`, 200, ""},
		{"Decimal one step above the fixed decimal range", `{"rows":[{"Cost":922337203685477.5808}]}`, 400, "rows[0].Cost"},
		{"Decimal one step below the fixed decimal range", `{"rows":[{"Cost":-922337203685477.5808}]}`, 400, "rows[0].Cost"},
		{"Decimal rounding past the range", `{"rows":[{"Cost":922337203685477.58075}]}`, 400, "rows[0].Cost"},
		{"Decimal past the range in exponent form", `{"rows":[{"Cost":1e15}]}`, 400, "rows[0].Cost"},
		{"Boolean string", `{"rows":[{"IsCompete":"true"}]}`, 400, "rows[0].IsCompete"},
		{"DateTime ISO with zone", `{"rows":[{"ManufacturedOn":"2024-05-01T10:11:12.345+02:00"}]}`, 200, ""},
		{"DateTime ISO local", `{"rows":[{"ManufacturedOn":"2024-05-01T10:11:12"}]}`, 200, ""},
		{"DateTime date only", `{"rows":[{"ManufacturedOn":"2024-05-01"}]}`, 200, ""},
		{"DateTime February 30", `{"rows":[{"ManufacturedOn":"2023-02-30T00:00:00Z"}]}`, 400, "rows[0].ManufacturedOn"},
		{"DateTime leap day", `{"rows":[{"ManufacturedOn":"2024-02-29T23:59:59.1234567Z"}]}`, 200, ""},
		{"DateTime bad zone", `{"rows":[{"ManufacturedOn":"2024-02-01T10:00:00+25:00"}]}`, 400, "rows[0].ManufacturedOn"},
		{"DateTime garbage", `{"rows":[{"ManufacturedOn":"yesterday"}]}`, 400, "rows[0].ManufacturedOn"},
		{"DateTime number", `{"rows":[{"ManufacturedOn":1714557072}]}`, 400, "rows[0].ManufacturedOn"},
		{"String number", `{"rows":[{"Name":5}]}`, 400, "rows[0].Name"},
		{"String of 4000", `{"rows":[{"Name":"` + long + `"}]}`, 200, ""},
		{"String of 4001", `{"rows":[{"Name":"` + long + `y"}]}`, 400, "rows[0].Name"},
		{"String of 4000 two-byte chars", `{"rows":[{"Name":"` + strings.Repeat("é", 4000) + `"}]}`, 200, ""},
		{"String of 2001 astral chars (4002 UTF-16 units)", `{"rows":[{"Name":"` + strings.Repeat("😀", 2001) + `"}]}`, 400, "rows[0].Name"},
		{"object value", `{"rows":[{"Name":{"a":1}}]}`, 400, "rows[0].Name"},
		{"second row bad", `{"rows":[{"ProductID":1},{"ProductID":"x"}]}`, 400, "rows[1].ProductID"},
		{"row not an object", `{"rows":[1]}`, 400, "rows[0]"},
		{"not rows", `{"data":[]}`, 400, ""},
		{"rows not array", `{"rows":{}}`, 400, ""},
		{"extra key", `{"rows":[],"x":1}`, 400, ""},
		{"array body", `[{"ProductID":1}]`, 400, ""},
		{"truncated", `{"rows":[{"ProductID":1}`, 400, ""},
		{"trailing garbage", `{"rows":[]}x`, 400, ""},
		{"empty body", ``, 400, ""},
		{"bad escape", `{"rows":[{"Name":"\q"}]}`, 400, "rows[0].Name"},
		{"control character", "{\"rows\":[{\"Name\":\"a\x01\"}]}", 400, "rows[0].Name"},
		{"invalid UTF-8", "{\"rows\":[{\"Name\":\"\xff\"}]}", 400, "rows[0].Name"},
		{"unknown key ignored", `{"rows":[{"ProductID":1,"Color":"red","Nested":{"a":[1,{"b":"]"}]}}]}`, 200, ""},
		{"unknown key with bad JSON", `{"rows":[{"ProductID":1,"Color":{"a":}}]}`, 400, "rows[0].Color"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, nil)
			id := e.dataset("")
			r := e.do("POST", rowsPath(id, "Product"), tc.body)
			if tc.status == 200 {
				wantStatus(t, r, 200)
				return
			}
			wantError(t, r, tc.status, "BadRequest")
			if tc.target != "" && !strings.Contains(string(r.body), `"target":"`+tc.target+`"`) {
				t.Fatalf("details target is not %s: %s", tc.target, r.body)
			}
			if n := e.s.RowCount(id, "Product"); n != 0 {
				t.Fatalf("a refused request stored %d rows", n)
			}
		})
	}
}

// TestUnknownColumns: keys that are not columns are dropped by default and
// refused in reject mode.
func TestUnknownColumns(t *testing.T) {
	body := `{"rows":[{"n":1,"extra":"x"},{"extra":[1,2],"n":2},{"n":3}]}`
	t.Run("ignore", func(t *testing.T) {
		e := start(t, nil)
		id := e.dataset("")
		wantStatus(t, e.do("POST", rowsPath(id, "T"), body), http.StatusOK)
		rows := e.s.Rows(id, "T")
		want := []string{`{"n":1}`, `{"n":2}`, `{"n":3}`}
		for i, w := range want {
			if string(rows[i]) != w {
				t.Fatalf("row %d = %s, want %s", i, rows[i], w)
			}
		}
		if got := e.s.Stats().UnknownKeysDropped; got != 2 {
			t.Fatalf("unknown keys dropped = %d", got)
		}
	})
	t.Run("reject", func(t *testing.T) {
		e := start(t, func(c *Config) { c.UnknownColumns = UnknownColumnsReject })
		id := e.dataset("")
		r := e.do("POST", rowsPath(id, "T"), body)
		wantError(t, r, http.StatusBadRequest, "BadRequest")
		if !strings.Contains(string(r.body), "rows[0].extra") {
			t.Fatalf("body = %s", r.body)
		}
	})
}

// TestDiscardRows: counted, not kept; quotas still see the table size.
func TestDiscardRows(t *testing.T) {
	e := start(t, func(c *Config) { c.DiscardRows = true; c.Limits.FIFORows = 5 })
	id := e.dataset(RetentionBasicFIFO)
	wantStatus(t, e.post(id, 0, 8), http.StatusOK)
	if n, rows := e.s.RowCount(id, "T"), e.s.Rows(id, "T"); n != 5 || len(rows) != 0 {
		t.Fatalf("count %d, rows %d", n, len(rows))
	}
	if e.s.Stats().RowsAccepted != 8 {
		t.Fatalf("rows accepted %d", e.s.Stats().RowsAccepted)
	}
}
