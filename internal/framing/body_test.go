package framing

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkBodyJSONArray frames a JSON body of 1,000 objects.
func BenchmarkBodyJSONArray(b *testing.B) {
	var body bytes.Buffer
	body.WriteByte('[')
	for i := range 1000 {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"device":"d-%d","temp":%d.5,"tags":["a","b"],"note":"x\"y"}`, i, i)
	}
	body.WriteByte(']')
	b.SetBytes(int64(body.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Body(bytes.NewReader(body.Bytes()), JSON, Bounds{MaxEvents: 10000}); err != nil {
			b.Fatal(err)
		}
	}
}
