// Package sample makes synthetic IoT telemetry events: demo data for the
// quick start and input for tests and benchmarks. Every event has a unique
// "seq", so a test can count each one where it lands.
package sample

import (
	"io"
	"math/rand/v2"
	"strconv"
	"time"
)

var sampleAlarms = []string{"overheat", "low_battery", "door_open", "vibration"}

// Write writes n telemetry events as NDJSON, device ids drawn from
// devices, timestamps 250 ms apart from t0; the same seed gives the same
// events. Every event has a unique seq, so a
// test can count each one in the emulator.
func Write(w io.Writer, n, devices int, seed uint64, t0 time.Time) error {
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
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
