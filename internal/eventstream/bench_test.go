package eventstream_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/pushd/pushd/internal/eventstream"
)

// BenchmarkSend produces batches of 1,000 telemetry-shaped rows (~200
// bytes) to the kfake stand-in over TLS and SASL, waiting for each batch's
// acknowledgement, as one sender of a pipeline does.
func BenchmarkSend(b *testing.B) {
	for _, bench := range []struct {
		name        string
		key         string
		compression string
	}{{"plain", "", eventstream.CompressionNone}, {"key", "device", eventstream.CompressionNone}, {"gzip", "", eventstream.CompressionGzip}, {"key+gzip", "device", eventstream.CompressionGzip}} {
		b.Run(bench.name, func(b *testing.B) {
			e := start(b, 4)
			cfg := e.Config()
			cfg.KeyColumn, cfg.Compression = bench.key, bench.compression
			tg, err := eventstream.New(cfg, eventstream.Options{Name: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			defer tg.Close()
			rows := make([]json.RawMessage, 1000)
			for i := range rows {
				rows[i] = json.RawMessage(fmt.Sprintf(`{"device":"dev-%04d","site":"plant-%d","ts":"2026-05-09T07:%02d:%02d.123Z","temperature_c":%.2f,"humidity_pct":%.1f,"pressure_hpa":%.1f,"battery_v":%.3f,"ok":true}`,
					i, i%7, i%60, (i*7)%60, 20+float64(i%150)/10, 40+float64(i%300)/10, 1000+float64(i%400)/10, 3+float64(i%1000)/1000))
			}
			b.ResetTimer()
			for range b.N {
				if err := tg.Send(b.Context(), rows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(rows))/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
