package emulator

import "time"

// window is a sliding window of weighted events, oldest first. The service
// does not say whether its windows slide or are fixed; a sliding window is
// the stricter reading, and it makes every Retry-After exact: once it has
// passed, the events that blocked the request have left the window.
type window struct {
	at   []int64 // unix nanoseconds
	w    []int
	head int
	sum  int
}

// prune forgets events at or before now-length.
func (w *window) prune(now int64, length time.Duration) {
	cut := now - int64(length)
	i := w.head
	for i < len(w.at) && w.at[i] <= cut {
		w.sum -= w.w[i]
		i++
	}
	w.head = i
	if w.head == len(w.at) {
		w.at, w.w, w.head = w.at[:0], w.w[:0], 0
	} else if w.head > 1024 && w.head > len(w.at)/2 {
		n := copy(w.at, w.at[w.head:])
		copy(w.w, w.w[w.head:])
		w.at, w.w, w.head = w.at[:n], w.w[:n], 0
	}
}

func (w *window) add(t int64, n int) {
	w.at = append(w.at, t)
	w.w = append(w.w, n)
	w.sum += n
}

// wait returns how long until n more fits under limit (0: it fits now).
// When n alone exceeds limit it returns the whole window length.
func (w *window) wait(now int64, length time.Duration, n, limit int) time.Duration {
	w.prune(now, length)
	if w.sum+n <= limit {
		return 0
	}
	need := w.sum + n - limit
	freed := 0
	for i := w.head; i < len(w.at); i++ {
		freed += w.w[i]
		if freed >= need {
			return time.Duration(w.at[i] + int64(length) - now)
		}
	}
	return length
}

// quota is a dataset's rate state: POST rows requests per window, requests
// per large-table window, rows per window.
type quota struct {
	requests window
	large    window
	rows     window
}
