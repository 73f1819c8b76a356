package source

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// What the HTTP source knows about the events of one request, across the
// attempts that share an Idempotency-Key (a request without a key is one
// attempt). Each event of the request, by its index in the body, is in one
// state:
const (
	// eventFree: not delivered and not queued (never sent, failed, or
	// withdrawn): it will not land unless it is sent (again).
	eventFree uint8 = iota
	// eventQueued: in the pipeline; its outcome is not known yet.
	eventQueued
	// eventAccepted and eventDeadLettered: done; it never goes again.
	eventAccepted
	eventDeadLettered
)

// ingestEntry follows the events of one request body. An attempt queues
// the free events (all of them the first time) with a new Claim each; an
// ack changes the state only if it comes from the claim that holds the
// index now, so the late ack of a withdrawn event cannot undo a later
// attempt's outcome.
type ingestEntry struct {
	key  string // "" for a request without Idempotency-Key (not stored)
	hash [sha256.Size]byte
	n    int // events in the body; -1 while the first attempt reads it

	mu     sync.Mutex
	state  []uint8
	claims []*Claim      // per index while queued
	queued int           // indices in eventQueued
	idle   chan struct{} // closed when queued falls to 0

	// Kept by ingestStore.
	expires time.Time
	elem    *list.Element
}

func newIngestEntry(key string) *ingestEntry {
	e := &ingestEntry{key: key, n: -1, idle: make(chan struct{})}
	close(e.idle)
	return e
}

// init sets the body the entry follows, on its first attempt.
func (e *ingestEntry) init(hash [sha256.Size]byte, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hash, e.n = hash, n
	e.state = make([]uint8, n)
	e.claims = make([]*Claim, n)
}

// ready reports whether the first attempt has read the body.
func (e *ingestEntry) ready() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n >= 0
}

// free returns the indices that may be sent (again).
func (e *ingestEntry) free() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []int
	for i, s := range e.state {
		if s == eventFree {
			out = append(out, i)
		}
	}
	return out
}

// queue marks the free indices among want as queued under the claims
// given (claims[j] for want[j]) and returns the ones it marked: another
// attempt of the same key may have queued some in between.
func (e *ingestEntry) queue(want []int, claims []Claim) (idx []int, cl []*Claim) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for j, i := range want {
		if e.state[i] != eventFree {
			continue
		}
		if e.queued == 0 {
			e.idle = make(chan struct{})
		}
		e.state[i] = eventQueued
		e.claims[i] = &claims[j]
		e.queued++
		idx = append(idx, i)
		cl = append(cl, &claims[j])
	}
	return idx, cl
}

// settle records the outcome of index i acked under claim c.
func (e *ingestEntry) settle(i int, c *Claim, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.claims[i] != c {
		return // withdrawn earlier and settled then; maybe queued again since
	}
	switch {
	case ackFailed(err):
		e.state[i] = eventFree
	case err != nil:
		e.state[i] = eventDeadLettered
	default:
		e.state[i] = eventAccepted
	}
	e.unqueueLocked(i)
}

func (e *ingestEntry) unqueueLocked(i int) {
	e.claims[i] = nil
	e.queued--
	if e.queued == 0 {
		close(e.idle)
	}
}

// waitIdle returns a channel closed when no event of the entry is queued.
func (e *ingestEntry) waitIdle() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.idle
}

// withdraw takes back every queued event that is not yet being sent: from
// now on they are free and will not land. The others stay queued: their
// outcome is pending.
func (e *ingestEntry) withdraw() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, c := range e.claims {
		if c != nil && c.Withdraw() {
			e.state[i] = eventFree
			e.unqueueLocked(i)
		}
	}
}

// ingestOutcome is what an answer says about the events of a request.
type ingestOutcome struct {
	accepted, deadLettered int
	failed, pending        []int // indices: not delivered; still being sent
}

func (e *ingestEntry) outcome() ingestOutcome {
	e.mu.Lock()
	defer e.mu.Unlock()
	var o ingestOutcome
	for i, s := range e.state {
		switch s {
		case eventAccepted:
			o.accepted++
		case eventDeadLettered:
			o.deadLettered++
		case eventFree:
			o.failed = append(o.failed, i)
		case eventQueued:
			o.pending = append(o.pending, i)
		}
	}
	return o
}

// ingestStore keeps the entries of requests that carried an
// Idempotency-Key, for ttl after their last answer and at most max of them
// (the oldest whose events are all settled go first).
type ingestStore struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	now   func() time.Time
	byKey map[string]*ingestEntry
	order *list.List // by expiry, oldest first
}

func newIngestStore(ttl time.Duration, maxKeys int, now func() time.Time) *ingestStore {
	return &ingestStore{ttl: ttl, max: maxKeys, now: now, byKey: map[string]*ingestEntry{}, order: list.New()}
}

// lookup returns the live entry for key, or a new one (created true) that
// it stores at once, so that a concurrent request with the same key finds
// it.
func (s *ingestStore) lookup(key string) (e *ingestEntry, created bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expireLocked(now)
	if e, ok := s.byKey[key]; ok {
		return e, false
	}
	e = newIngestEntry(key)
	e.expires = now.Add(s.ttl)
	e.elem = s.order.PushBack(e)
	s.byKey[key] = e
	s.evictLocked()
	return e, true
}

// forget drops an entry whose first attempt was refused before any event
// was queued (a later request with the key starts afresh).
func (s *ingestStore) forget(e *ingestEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKey[e.key] == e {
		delete(s.byKey, e.key)
		s.order.Remove(e.elem)
	}
}

// touch restarts the entry's retention after an answer.
func (s *ingestStore) touch(e *ingestEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKey[e.key] != e {
		return
	}
	e.expires = s.now().Add(s.ttl)
	s.order.MoveToBack(e.elem)
}

func (s *ingestStore) expireLocked(now time.Time) {
	for el := s.order.Front(); el != nil; {
		e := el.Value.(*ingestEntry)
		next := el.Next()
		if now.Before(e.expires) {
			return
		}
		if e.settled() {
			delete(s.byKey, e.key)
			s.order.Remove(el)
		}
		el = next
	}
}

// evictLocked drops the oldest settled entries past max. Entries with
// events in flight are never dropped (max_unacked_events bounds them).
func (s *ingestStore) evictLocked() {
	for el := s.order.Front(); el != nil && len(s.byKey) > s.max; {
		e := el.Value.(*ingestEntry)
		next := el.Next()
		if e.settled() {
			delete(s.byKey, e.key)
			s.order.Remove(el)
		}
		el = next
	}
}

// settled reports whether the entry's body is read and none of its events
// is queued.
func (e *ingestEntry) settled() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n >= 0 && e.queued == 0
}
