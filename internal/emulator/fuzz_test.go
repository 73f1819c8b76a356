package emulator

import (
	"encoding/json"
	"strings"
	"testing"

	clientschema "github.com/pushd/pushd/internal/schema"
)

// FuzzParseRows holds the emulator's one-pass POST rows parser against
// encoding/json and against pushd's client. As a request body: it never
// panics; a body that is not valid JSON is always refused (the service
// answers 400); an accepted body decodes as {"rows":[objects]} with as
// many rows as the parser returned, and each row it returns is one valid
// JSON object. As an event: the rows the client's mapper (internal/schema)
// makes of it, posted to a table of the same columns, are all accepted by
// the emulator: where both apply a value rule, they agree.
//
//	go test -run '^$' -fuzz FuzzParseRows -fuzztime 10s ./internal/emulator/
func FuzzParseRows(f *testing.F) {
	row := `{"ProductID":123456,"Name":"Adjustable Race","Category":"Components","IsCompete":true,"ManufacturedOn":"2024-05-01T10:11:12Z","Sales":12,"Price":12.5,"Cost":3.25}`
	for _, body := range []string{
		`{"rows":[` + row + `]}`,
		`{"rows":[` + row + `,` + row + `]}`,
		`{"rows":[]}`,
		` {"rows" : [ {"Name":null} ] } `,
		`{"rows":[{"Name":"a\u00e9\ud83d\ude00\"b"}]}`,
		`{"rows":[{"ProductID":9223372036854775807,"Price":1e308,"Cost":79228162514264337593543950335}]}`,
		`{"rows":[{"ProductID":-9223372036854775808}]}`,
		`{"rows":[{"ProductID":1.5}]}`,
		`{"rows":[{"ManufacturedOn":"2024-02-30T00:00:00Z"}]}`,
		`{"rows":[{"ManufacturedOn":"2024-05-01"}]}`,
		`{"rows":[{"Unknown":{"a":[1,2,{"b":null}]},"Name":"x"}]}`,
		`{"rows":[{"Name":"` + strings.Repeat("é", 40) + `"}]}`,
		`{"rows":[{"IsCompete":1}]}`,
		`{"rows":[1]}`,
		`{"rows":{}}`,
		`{"other":[]}`,
		`{"rows":[{"Name":"x"}],"rows":[]}`,
		`{"rows":[{"Name":"x",}]}`,
		`{"rows":[{"Name":"x"}]`,
		`{"rows":[{"Name":"\ud800"}]}`,
		"{\"rows\":[{\"Name\":\"\xff\"}]}",
		`[]`, ``, `null`, `{"rows":[{"Price":-0.0e-0}]}`, `{"rows":[{"Price":01}]}`,
	} {
		f.Add([]byte(body))
	}
	for _, event := range []string{
		`{"ProductID":"42","Name":12,"IsCompete":"yes","ManufacturedOn":1714558272,"Sales":"1e3","Price":"NaN","Cost":"922337203685477.58074"}`,
		`[{"ProductID":1.0,"ManufacturedOn":"07/30/2014"},{"Cost":-0.00005,"Price":1e-400,"ManufacturedOn":"2024-05-01T10:11:12.123456789+14:00"}]`,
		`{"Name":"` + strings.Repeat(`\ud83d\ude00`, 2001) + `","ManufacturedOn":253402300799}`,
	} {
		f.Add([]byte(event))
	}
	sc, err := newSchema(productTable())
	if err != nil {
		f.Fatal(err)
	}
	mappers := make([]*clientschema.Mapper, 2)
	for i, overflow := range []string{clientschema.OverflowReject, clientschema.OverflowTruncate} {
		cfg := clientschema.Config{EpochUnit: clientschema.EpochSeconds, StringOverflow: overflow}
		for _, c := range productTable().Columns {
			cfg.Columns = append(cfg.Columns, clientschema.Column{Name: c.Name, Type: c.DataType})
		}
		if mappers[i], err = clientschema.New(cfg); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		// The body as an event: every row pushd's client makes of it is
		// one the emulator (as the service) accepts, whole.
		for _, m := range mappers {
			rows, _ := m.Map(body, nil, nil)
			post := []byte(`{"rows":[`)
			for i, r := range rows {
				if i > 0 {
					post = append(post, ',')
				}
				post = append(post, r...)
			}
			post = append(post, "]}"...)
			p := rowsParser{b: post, sc: sc, maxRows: 10_000, maxStr: clientschema.MaxStringLength, reject: true}
			got, perr := p.parse()
			if perr != nil || len(got) != len(rows) {
				t.Fatalf("the client mapped %q to %s; the emulator refuses it: %v", body, post, perr)
			}
		}
		// The body as a request.
		p := rowsParser{b: body, sc: sc, maxRows: 10_000, maxStr: 20}
		rows, perr := p.parse()
		if perr != nil {
			if perr.msg == "" {
				t.Fatalf("refused %q without saying why", body)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not valid JSON: %q", body)
		}
		// The service matches the key "rows" case-insensitively, as
		// encoding/json does for a struct field.
		var doc struct{ Rows json.RawMessage }
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("accepted %q, which is not an object: %v", body, err)
		}
		var objs []map[string]json.RawMessage
		if err := json.Unmarshal(doc.Rows, &objs); err != nil {
			t.Fatalf("accepted %q, whose rows are not an array of objects: %v", body, err)
		}
		if len(objs) != len(rows) {
			t.Fatalf("accepted %q as %d rows, encoding/json sees %d", body, len(rows), len(objs))
		}
		for i, r := range rows {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(r, &obj); err != nil {
				t.Fatalf("row %d of %q is %q, not one JSON object: %v", i, body, r, err)
			}
		}
	})
}
