package source

import (
	"errors"
	"sync/atomic"
)

// ErrWithdrawn is the ack error of an event its source withdrew before its
// rows were sent (Claim.Withdraw): it will never land.
var ErrWithdrawn = errors.New("event withdrawn by its source before it was sent")

// Claim lets a source take back an event that is read but not yet on its
// way to Power BI, so that it can tell its client for certain that the
// event will not land (the HTTP source, when a request passes its response
// timeout). The sender claims each event of a batch just before posting it
// (Take); the source withdraws (Withdraw); whichever comes first wins, once
// and for all. A nil *Claim (sources that never withdraw) is always taken.
type Claim struct {
	state atomic.Uint32
}

const (
	claimOpen uint32 = iota
	claimTaken
	claimWithdrawn
)

// Take marks the event as being sent and reports true, unless it was
// withdrawn (false: drop its rows and ack it with ErrWithdrawn). Taking a
// taken event again reports true (an event whose rows are in several
// batches).
func (c *Claim) Take() bool {
	if c == nil {
		return true
	}
	return c.state.CompareAndSwap(claimOpen, claimTaken) || c.state.Load() == claimTaken
}

// Withdraw takes the event back and reports true, unless its rows are
// already being sent (false: their outcome is pending). Withdrawing twice
// reports true.
func (c *Claim) Withdraw() bool {
	if c == nil {
		return false
	}
	return c.state.CompareAndSwap(claimOpen, claimWithdrawn) || c.state.Load() == claimWithdrawn
}

// Withdrawn reports whether the event was withdrawn.
func (c *Claim) Withdrawn() bool { return c != nil && c.state.Load() == claimWithdrawn }
