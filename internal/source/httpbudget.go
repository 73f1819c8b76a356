package source

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// The HTTP source bounds the request bodies it holds at once
// (max_buffered_bytes); framing a body is internal/framing's.

// errNoBudget is returned by a reservation's reader when the body passes
// what the buffered-bytes budget has left.
var errNoBudget = errors.New("max_buffered_bytes reached")

// byteBudget bounds the request bodies the HTTP source holds at once, from
// their first byte read until their last event is acknowledged
// (max_buffered_bytes).
type byteBudget struct {
	mu    sync.Mutex
	used  int64
	limit int64
}

// take reserves n bytes, or returns false when they do not fit.
func (b *byteBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

// give returns n bytes to the budget.
func (b *byteBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// inUse returns the bytes reserved now.
func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// bodyReservation is one request's share of the budget: its declared
// length, taken before reading, or what was read so far for a body of
// unknown length (chunked).
type bodyReservation struct {
	budget   *byteBudget
	declared bool
	taken    atomic.Int64
	once     sync.Once
}

// reader returns r, taking budget for each read when the length was not
// declared.
func (res *bodyReservation) reader(r io.Reader) io.Reader {
	if res.declared {
		return r
	}
	return &budgetReader{r: r, res: res}
}

// release gives the reservation back; later calls do nothing.
func (res *bodyReservation) release() {
	res.once.Do(func() { res.budget.give(res.taken.Load()) })
}

type budgetReader struct {
	r   io.Reader
	res *bodyReservation
}

func (b *budgetReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		if !b.res.budget.take(int64(n)) {
			return 0, errNoBudget
		}
		b.res.taken.Add(int64(n))
	}
	return n, err
}
