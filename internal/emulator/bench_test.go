package emulator

import (
	"bytes"
	"net/http"
	"testing"
)

// BenchmarkPostRows pushes 10,000-row requests through HTTP with quotas
// off; rows/s is the figure to watch.
func BenchmarkPostRows(b *testing.B) {
	for _, tc := range []struct {
		name    string
		discard bool
	}{{"store", false}, {"discard", true}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Limits = cfg.Limits.WithoutQuotas()
			cfg.DiscardRows = tc.discard
			cfg.HistoryLimit = -1
			s, err := Start(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			id, err := s.CreateDataset("", CreateDatasetRequest{Name: "bench", Tables: []Table{productTable()}}, RetentionBasicFIFO)
			if err != nil {
				b.Fatal(err)
			}
			var buf bytes.Buffer
			buf.WriteString(`{"rows":[`)
			for i := range 10_000 {
				if i > 0 {
					buf.WriteByte(',')
				}
				buf.WriteString(`{"ProductID":123456,"Name":"Adjustable Race","Category":"Components","IsCompete":true,"ManufacturedOn":"2024-05-01T10:11:12Z","Price":12.5}`)
			}
			buf.WriteString("]}")
			body := buf.Bytes()
			url := s.URL() + rowsPath(id, "Product")
			tok := s.IssueToken()
			c := s.Client()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			b.ReportMetric(float64(b.N)*10_000/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkParseRows is the parser alone on a 10,000-row body.
func BenchmarkParseRows(b *testing.B) {
	sc, err := newSchema(productTable())
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	buf.WriteString(`{"rows":[`)
	for i := range 10_000 {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"ProductID":123456,"Name":"Adjustable Race","Category":"Components","IsCompete":true,"ManufacturedOn":"2024-05-01T10:11:12Z","Price":12.5}`)
	}
	buf.WriteString("]}")
	body := buf.Bytes()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		p := rowsParser{b: body, sc: sc, maxRows: 10_000, maxStr: 4_000}
		rows, perr := p.parse()
		if perr != nil || len(rows) != 10_000 {
			b.Fatalf("parse: %v %d", perr, len(rows))
		}
	}
}
