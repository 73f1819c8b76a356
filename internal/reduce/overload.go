package reduce

import "time"

// Overload decides, for when: overloaded, whether the pipeline cannot keep
// up and should reduce. It turns on when the backlog would take longer than
// MaxLag to send at the quota, and off again once the backlog takes less
// than half of MaxLag and the input would fit in 80% of the quota unreduced
// (the margin keeps it from flapping).
type Overload struct {
	MaxLag time.Duration
	on     bool
}

// Update takes the backlog (events waiting), the input rate and the quota
// (both rows a second) and returns whether to reduce now.
func (o *Overload) Update(backlog, inputRate, quota float64) bool {
	if quota <= 0 {
		return o.on
	}
	lag := time.Duration(backlog / quota * float64(time.Second))
	switch {
	case lag > o.MaxLag:
		o.on = true
	case o.on && lag < o.MaxLag/2 && inputRate < 0.8*quota:
		o.on = false
	}
	return o.on
}

// On reports the last decision.
func (o *Overload) On() bool { return o.on }
