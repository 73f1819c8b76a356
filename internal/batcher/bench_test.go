package batcher

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/source"
)

// BenchmarkBatch adds pre-encoded telemetry rows (about 200 bytes, the shape
// the schema mapper makes from the sample events) with Power BI's limits,
// while a receiver settles each batch, as the senders do.
func BenchmarkBatch(b *testing.B) {
	rows := make([]json.RawMessage, 1024)
	for i := range rows {
		rows[i] = json.RawMessage(fmt.Sprintf(
			`{"device_id":"dev-%04d","site":"plant-%d","ts":"2026-05-09T07:%02d:%02d.123Z","temperature_c":%.2f,"humidity_pct":%.1f,"pressure_hpa":%.1f,"battery_v":%.3f,"ok":true}`,
			i, i%7, i%60, (i*7)%60, 20+float64(i%150)/10, 40+float64(i%300)/10, 1000+float64(i%400)/10, 3+float64(i%1000)/1000))
	}
	for _, bench := range []struct {
		name         string
		rowsPerEvent int
	}{{"event=1row", 1}, {"event=10rows", 10}} {
		b.Run(bench.name, func(b *testing.B) {
			out := make(chan *Batch, 4)
			bt, err := New(Config{MaxRows: LimitRows, MaxBytes: LimitBytes, Linger: time.Second}, out)
			if err != nil {
				b.Fatal(err)
			}
			settled := make(chan struct{})
			go func() {
				for batch := range out {
					batch.Done(nil)
				}
				close(settled)
			}()
			ack := func(error) {}
			ctx := b.Context()
			var tr *Tracker
			b.SetBytes(int64(len(rows[0])))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%bench.rowsPerEvent == 0 {
					if tr != nil {
						tr.Seal()
					}
					tr = NewTracker(source.Event{Position: "bench"}, ack)
				}
				if err := bt.Add(ctx, rows[i%len(rows)], tr); err != nil {
					b.Fatal(err)
				}
			}
			tr.Seal()
			if err := bt.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			close(out)
			<-settled
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			bt.Close()
		})
	}
}
