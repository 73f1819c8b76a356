package reduce

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// benchRows maps n events of 1,000 devices, event times 50 µs apart (20,000
// a second), as a Kafka partition would deliver them.
func benchRows(b *testing.B, n int) []json.RawMessage {
	m := newMapper(b)
	rows := make([]json.RawMessage, n)
	for i := range rows {
		rows[i] = mapRow(b, m, fmt.Sprintf("device-%04d", i%1000), base+int64(i/20), float64(i%400)/10, int64(i%97))
	}
	return rows
}

// benchReduce measures the stage alone: rows in, windows out, acks held.
// Run on one core: go test -bench . -cpu 1 ./internal/reduce/
func benchReduce(b *testing.B, c Config) {
	rows := benchRows(b, 200_000)
	r := newReducer(b, c)
	h := &holder{}
	var out []Emission
	var err error
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(rows)
		if k == 0 && i > 0 {
			// Start over in later windows, so no row is late.
			out = r.Flush(out[:0])
			for _, e := range out {
				e.Acks.Done(nil)
			}
			r = newReducer(b, c)
		}
		ref := Ref{Holder: h, Ordered: true, Topic: "events", Partition: k % 4, Offset: int64(k)}
		out, err = r.Add(rows[k], ref, int64(i), out[:0])
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range out {
			e.Acks.Done(nil)
		}
	}
	b.StopTimer()
	// On a shared machine wall time says little: report events per second
	// of this process's CPU time as well.
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/(cpuTime(b)-cpu0).Seconds(), "events/cpu-s")
}

// cpuTime is the CPU time (user + system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkAggregate(b *testing.B) { benchReduce(b, aggConfig()) }

func BenchmarkLatest(b *testing.B) {
	c := DefaultConfig()
	c.Mode, c.Key, c.TimeColumn, c.Interval = ModeLatest, []string{"device"}, "ts", time.Second
	benchReduce(b, c)
}

func BenchmarkSample(b *testing.B) {
	c := DefaultConfig()
	c.Mode, c.Key, c.OneIn = ModeSample, []string{"device"}, 10
	benchReduce(b, c)
}
