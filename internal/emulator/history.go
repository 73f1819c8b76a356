package emulator

import (
	"time"
)

// HistorySeconds is how many seconds of per-second figures the emulator
// keeps for its page; HistoryEvents how many of the latest 429s, injected
// errors and cut connections. Both are fixed so that memory stays bounded
// however long the emulator runs.
const (
	HistorySeconds = 300
	HistoryEvents  = 200
)

// Kinds of Event.
const (
	EventThrottled = "throttled" // a 429 answer
	EventError     = "error"     // an injected 500 or 503
	EventCut       = "cut"       // a connection cut mid-response
)

// Second is one second of the emulator's activity.
type Second struct {
	// At is the start of the second (Unix seconds).
	At int64 `json:"at"`
	// Rows counts the rows accepted; Throttled, Errors and Cuts the 429s,
	// injected errors and cut connections.
	Rows      int64 `json:"rows"`
	Throttled int64 `json:"throttled"`
	Errors    int64 `json:"errors"`
	Cuts      int64 `json:"cuts"`
}

// Event is one 429, injected error or cut connection.
type Event struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Status  int       `json:"status,omitempty"`
	Dataset string    `json:"dataset,omitempty"`
	Table   string    `json:"table,omitempty"`
	// Reason is the PostRecord reason of a 429 (in_flight,
	// requests_per_window, …); RetryAfter its Retry-After in seconds.
	Reason     string `json:"reason,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"`
}

// history holds the per-second ring and the latest events; statsRecorder.mu
// guards it.
type history struct {
	seconds [HistorySeconds]Second
	events  [HistoryEvents]Event
	next    int   // index of the next event slot
	total   int64 // events ever recorded
}

// second returns the slot for Unix second sec, cleared when it held an
// older second.
func (h *history) second(sec int64) *Second {
	b := &h.seconds[int(sec%HistorySeconds)]
	if b.At != sec {
		*b = Second{At: sec}
	}
	return b
}

func (h *history) event(e Event) {
	b := h.second(e.At.Unix())
	switch e.Kind {
	case EventThrottled:
		b.Throttled++
	case EventError:
		b.Errors++
	case EventCut:
		b.Cuts++
	}
	h.events[h.next] = e
	h.next = (h.next + 1) % HistoryEvents
	h.total++
}

// lastSeconds returns the HistorySeconds seconds ending with now, oldest
// first, zero where nothing happened.
func (h *history) lastSeconds(now time.Time) []Second {
	end := now.Unix()
	out := make([]Second, HistorySeconds)
	for i := range out {
		sec := end - HistorySeconds + 1 + int64(i)
		b := h.seconds[int(((sec%HistorySeconds)+HistorySeconds)%HistorySeconds)]
		if b.At != sec {
			b = Second{At: sec}
		}
		out[i] = b
	}
	return out
}

// lastEvents returns the kept events, newest first.
func (h *history) lastEvents() []Event {
	n := int(min(h.total, HistoryEvents))
	out := make([]Event, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, h.events[(h.next-i+HistoryEvents)%HistoryEvents])
	}
	return out
}
