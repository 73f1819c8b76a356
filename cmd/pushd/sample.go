package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"time"
)

// runSample writes synthetic IoT telemetry as NDJSON, the shape that
// configs/quickstart.yaml maps: demo data and benchmark input.
func runSample(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pushd sample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	count := fs.Int("n", 1000, "number of events to write")
	devices := fs.Int("devices", 50, "number of distinct devices")
	seed := fs.Uint64("seed", 1, "random seed (same seed, same events)")
	start := fs.String("start", "2026-11-28T00:00:00Z", "timestamp of the first event (RFC 3339)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pushd sample [-n N] [-devices D] [-seed S] [-start TIME]")
		fmt.Fprintln(stderr, "\nWrites N synthetic IoT telemetry events as NDJSON to stdout.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		return exitUsage
	}
	t0, err := time.Parse(time.RFC3339, *start)
	if err != nil || *count < 0 || *devices < 1 {
		fmt.Fprintln(stderr, "pushd sample: -start must be RFC 3339, -n >= 0, -devices >= 1")
		return exitUsage
	}
	w := bufio.NewWriterSize(stdout, 64<<10)
	writeSample(w, *count, *devices, *seed, t0)
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "pushd sample: writing events: %v\n", err)
		return exitFailed
	}
	return exitOK
}

var sampleAlarms = []string{"overheat", "low_battery", "door_open", "vibration"}

// writeSample writes n telemetry events. Every event has a unique seq, so a
// test can count each one in the emulator.
func writeSample(w *bufio.Writer, n, devices int, seed uint64, t0 time.Time) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var b []byte
	for i := 0; i < n; i++ {
		dev := rng.IntN(devices)
		ts := t0.Add(time.Duration(i) * 250 * time.Millisecond).UTC()
		b = b[:0]
		b = append(b, `{"device":{"id":"dev-`...)
		b = strconv.AppendInt(b, int64(dev), 10)
		b = append(b, `","site":"plant-`...)
		b = strconv.AppendInt(b, int64(dev%5+1), 10)
		b = append(b, `","firmware":"1.`...)
		b = strconv.AppendInt(b, int64(dev%4), 10)
		b = append(b, `.2"},"ts":"`...)
		b = ts.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
		b = append(b, `","seq":`...)
		b = strconv.AppendInt(b, int64(i+1), 10)
		b = append(b, `,"metrics":{"temperature_c":`...)
		b = strconv.AppendFloat(b, 15+rng.Float64()*20, 'f', 2, 64)
		b = append(b, `,"humidity_pct":`...)
		b = strconv.AppendFloat(b, 30+rng.Float64()*50, 'f', 1, 64)
		b = append(b, `,"pressure_hpa":`...)
		b = strconv.AppendFloat(b, 990+rng.Float64()*40, 'f', 1, 64)
		b = append(b, `,"battery_v":"`...) // a numeric string, as some firmware sends
		b = strconv.AppendFloat(b, 3.2+rng.Float64(), 'f', 2, 64)
		b = append(b, `"},"status":{"online":`...)
		b = strconv.AppendBool(b, rng.IntN(20) != 0)
		b = append(b, `,"alarms":[`...)
		if rng.IntN(10) == 0 {
			b = append(b, '"')
			b = append(b, sampleAlarms[rng.IntN(len(sampleAlarms))]...)
			b = append(b, '"')
		}
		b = append(b, `]},"location":{"lat":`...)
		b = strconv.AppendFloat(b, 52+float64(dev%10)*0.01, 'f', 4, 64)
		b = append(b, `,"lon":`...)
		b = strconv.AppendFloat(b, 4.3+float64(dev%7)*0.01, 'f', 4, 64)
		b = append(b, "}}\n"...)
		w.Write(b)
	}
}
