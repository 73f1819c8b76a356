package source

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
)

// countingBody is a request body that counts the bytes the handler took
// from it, and can stop (block) after a given count.
type countingBody struct {
	r       io.Reader
	read    atomic.Int64
	blockAt int64         // when > 0, Read blocks once this many bytes are read
	release chan struct{} // closed to let a blocked Read go on
}

func (c *countingBody) Read(p []byte) (int, error) {
	if c.blockAt > 0 {
		if left := c.blockAt - c.read.Load(); left > 0 {
			p = p[:min(int64(len(p)), left)]
		} else {
			<-c.release
		}
	}
	n, err := c.r.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// serve runs one request through h's handler in-process (no sockets, so the
// bytes taken from the body are exactly what the handler read).
func serve(h *HTTP, contentType string, body io.Reader, length int64) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/events", body)
	req.ContentLength = length
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestHTTPRefusesWhileReading: a 16 MiB body of tiny events is refused (413)
// as soon as it passes the events a request may hold, having read a small
// part of it and allocated little, whether its length is declared or not
// and whatever its format. Before the body was framed as it was read, the
// whole body was read and sliced first (hundreds of MB for 5.6 million
// events).
func TestHTTPRefusesWhileReading(t *testing.T) {
	const size = 16 << 20
	ndjson := bytes.Repeat([]byte("{}\n"), size/3)
	array := append(append([]byte("["), bytes.Repeat([]byte("{},"), size/3-1)...), "{}]"...)
	for _, tt := range []struct {
		name, contentType string
		body              []byte
		declared          bool
	}{
		{"ndjson with length", "application/x-ndjson", ndjson, true},
		{"ndjson chunked", "application/x-ndjson", ndjson, false},
		{"json array with length", "application/json", array, true},
		{"json array chunked", "application/json", array, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTestHTTP(t, testHTTPConfig(), HTTPOptions{MaxUnacked: 10000})
			body := &countingBody{r: bytes.NewReader(tt.body)}
			length := int64(-1)
			if tt.declared {
				length = int64(len(tt.body))
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			rec := serve(h, tt.contentType, body, length)
			runtime.ReadMemStats(&after)
			if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "max_unacked_events (10000)") {
				t.Fatalf("status %d body %s, want 413 naming max_unacked_events (10000)", rec.Code, rec.Body)
			}
			// 10,001 events of 3 bytes, plus one read buffer.
			if read := body.read.Load(); read > 256<<10 {
				t.Errorf("read %d bytes of a %d-byte body before refusing it, want at most 256 KiB", read, len(tt.body))
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
				t.Errorf("allocated %d bytes to refuse the body, want at most 4 MiB", alloc)
			}
			if got := h.budget.inUse(); got != 0 {
				t.Errorf("%d bytes of the budget still reserved after the answer", got)
			}
		})
	}
}

// TestHTTPDecidesBeforeReading: a request the pipeline cannot take is
// answered 429 without reading its body: when max_unacked_events are in
// flight, and when the bodies held already fill max_buffered_bytes (eight
// concurrent 15 MB bodies: one is read, the others are refused unread).
func TestHTTPDecidesBeforeReading(t *testing.T) {
	t.Run("bodies fill max_buffered_bytes", func(t *testing.T) {
		h, _ := newTestHTTP(t, testHTTPConfig(), HTTPOptions{MaxUnacked: 10000})
		const size = 15_000_000
		big := bytes.Repeat([]byte(`{"pad":"`+strings.Repeat("x", 1490)+`"}`+"\n"), size/1500)
		first := &countingBody{r: bytes.NewReader(big), blockAt: 1 << 20, release: make(chan struct{})}
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() { done <- serve(h, "", first, int64(len(big))) }()
		for first.read.Load() < 1<<20 {
			runtime.Gosched()
		}
		for i := range 7 {
			body := &countingBody{r: bytes.NewReader(big)}
			rec := serve(h, "", body, int64(len(big)))
			if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "max_buffered_bytes") {
				t.Fatalf("request %d: status %d body %s, want 429 with Retry-After naming max_buffered_bytes", i+2, rec.Code, rec.Body)
			}
			if n := body.read.Load(); n != 0 {
				t.Fatalf("request %d: %d bytes read before answering 429, want 0", i+2, n)
			}
		}
		// A body of unknown length is refused as soon as it passes the
		// budget, not after it was read whole.
		chunked := &countingBody{r: bytes.NewReader(big)}
		if rec := serve(h, "", chunked, -1); rec.Code != http.StatusTooManyRequests {
			t.Fatalf("chunked request: status %d body %s, want 429", rec.Code, rec.Body)
		}
		if n := chunked.read.Load(); n > 2<<20 {
			t.Fatalf("chunked request: %d bytes read before answering 429, want at most 2 MiB", n)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		runPipeline(ctx, h, func(Event) error { return nil })
		close(first.release)
		if rec := <-done; rec.Code != http.StatusOK {
			t.Fatalf("first request: status %d body %s, want 200", rec.Code, rec.Body)
		}
		if got := h.budget.inUse(); got != 0 {
			t.Errorf("%d bytes of the budget still reserved after every event was acknowledged", got)
		}
	})
	t.Run("max_unacked_events in flight", func(t *testing.T) {
		h, url := newTestHTTP(t, testHTTPConfig(), HTTPOptions{MaxUnacked: 2})
		first := make(chan httpResult, 1)
		go func() { first <- post(t, url, "", "", []byte("{}\n{}\n")) }()
		held := readN(t, h, 2)
		body := &countingBody{r: strings.NewReader("{}\n")}
		rec := serve(h, "", body, 3)
		if rec.Code != http.StatusTooManyRequests || body.read.Load() != 0 {
			t.Fatalf("status %d after reading %d bytes, want 429 before reading", rec.Code, body.read.Load())
		}
		for _, e := range held {
			e.ack(nil)
		}
		if r := <-first; r.code != http.StatusOK {
			t.Fatalf("first request: status %d body %s", r.code, r.body)
		}
	})
}
