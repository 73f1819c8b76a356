package source

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// trackerStep is one action on an offsetTracker in a scenario.
type trackerStep struct {
	fetch  []int64 // offsets fetched, in order, from partition 0
	ack    []int64 // offsets acknowledged (the oldest unacked fetch of each)
	fail   []int64 // offsets acknowledged with an error
	commit bool    // commit whatever is ready, then record it as committed
	// want is the commit the step expects when commit is set: the next
	// offset to read, or -1 for "nothing to commit".
	want int64
}

func TestOffsetTrackerScenarios(t *testing.T) {
	tests := []struct {
		name  string
		steps []trackerStep
	}{
		{
			name: "nothing fetched commits nothing",
			steps: []trackerStep{
				{commit: true, want: -1},
			},
		},
		{
			name: "in order acks commit everything",
			steps: []trackerStep{
				{fetch: []int64{0, 1, 2}},
				{ack: []int64{0, 1, 2}, commit: true, want: 3},
				{commit: true, want: -1},
			},
		},
		{
			name: "out of order acks commit only the acked prefix",
			steps: []trackerStep{
				{fetch: []int64{0, 1, 2, 3, 4}},
				// The first fetched offset is committed even before any ack:
				// a new group starting at "latest" must not skip it after a
				// crash.
				{ack: []int64{1, 3, 4}, commit: true, want: 0},
				{commit: true, want: -1},
				{ack: []int64{0}, commit: true, want: 2},
				{ack: []int64{2}, commit: true, want: 5},
			},
		},
		{
			name: "gaps in offsets are not events",
			steps: []trackerStep{
				{fetch: []int64{10, 13, 20}},
				{ack: []int64{13, 10}, commit: true, want: 20},
				{ack: []int64{20}, commit: true, want: 21},
			},
		},
		{
			name: "error ack blocks the commit at its offset for good",
			steps: []trackerStep{
				{fetch: []int64{0, 1, 2, 3}},
				{ack: []int64{0}, fail: []int64{1}, commit: true, want: 1},
				{ack: []int64{2, 3}, commit: true, want: -1},
				{fetch: []int64{4, 5}},
				{ack: []int64{4, 5}, commit: true, want: -1},
			},
		},
		{
			name: "lower of two failures wins",
			steps: []trackerStep{
				{fetch: []int64{0, 1, 2, 3}},
				{fail: []int64{3}, ack: []int64{0, 1}, commit: true, want: 2},
				{fail: []int64{2}, commit: true, want: -1},
			},
		},
		{
			name: "refetch after a rebalance holds the commit until the new copy is acked",
			steps: []trackerStep{
				{fetch: []int64{0, 1, 2, 3}},
				{ack: []int64{0, 1}, commit: true, want: 2},
				// The partition restarts at the committed offset 2 while 2
				// and 3 are still in flight.
				{fetch: []int64{2, 3, 4}},
				{ack: []int64{2, 3}, commit: true, want: -1}, // the second copies of 2 and 3 are still unacked
				{ack: []int64{2, 3, 4}, commit: true, want: 5},
			},
		},
		{
			name: "a commit never goes below the last one",
			steps: []trackerStep{
				{fetch: []int64{0, 1, 2}},
				{ack: []int64{0, 1, 2}, commit: true, want: 3},
				// Rewind to before what was committed (another member
				// committed lower): nothing lower is committed again.
				{fetch: []int64{1, 2}, commit: true, want: -1},
				{ack: []int64{1, 2}, commit: true, want: -1},
				{fetch: []int64{3}},
				{ack: []int64{3}, commit: true, want: 4},
			},
		},
		{
			name: "jump forward after someone else committed further",
			steps: []trackerStep{
				{fetch: []int64{0, 1}},
				{ack: []int64{0, 1}, commit: true, want: 2},
				{fetch: []int64{100, 101}},
				{ack: []int64{101}, commit: true, want: 100},
				{ack: []int64{100}, commit: true, want: 102},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newOffsetTracker()
			// tokens holds the unacked fetches per offset, oldest first.
			tokens := map[int64][]*pendingOffset{}
			take := func(off int64) *pendingOffset {
				t.Helper()
				q := tokens[off]
				if len(q) == 0 {
					t.Fatalf("offset %d acked but not fetched", off)
				}
				tokens[off] = q[1:]
				return q[0]
			}
			for i, s := range tt.steps {
				for _, off := range s.fetch {
					tokens[off] = append(tokens[off], tr.fetched("events", 0, off, 1000))
				}
				for _, off := range s.ack {
					if !tr.ack(take(off), false) {
						t.Fatalf("step %d: ack of %d reported as a repeat", i, off)
					}
				}
				for _, off := range s.fail {
					if !tr.ack(take(off), true) {
						t.Fatalf("step %d: failed ack of %d reported as a repeat", i, off)
					}
				}
				if !s.commit {
					continue
				}
				points := tr.toCommit()
				got := int64(-1)
				switch len(points) {
				case 0:
				case 1:
					got = points[0].next
				default:
					t.Fatalf("step %d: %d commit points for one partition: %v", i, len(points), points)
				}
				if got != s.want {
					t.Fatalf("step %d: commit = %d, want %d", i, got, s.want)
				}
				tr.committed(points)
			}
		})
	}
}

func TestOffsetTrackerRepeatedAckIsIgnored(t *testing.T) {
	tr := newOffsetTracker()
	a := tr.fetched("t", 0, 0, 2)
	b := tr.fetched("t", 0, 1, 2)
	if !tr.ack(a, false) {
		t.Fatal("first ack reported as a repeat")
	}
	if tr.ack(a, true) {
		t.Fatal("second ack of the same fetch was accepted")
	}
	// The repeated (failed) ack must not have blocked anything.
	tr.ack(b, false)
	points := tr.toCommit()
	if len(points) != 1 || points[0].next != 2 {
		t.Fatalf("commit points = %v, want next 2", points)
	}
}

func TestOffsetTrackerPartitionsAreIndependent(t *testing.T) {
	tr := newOffsetTracker()
	var held *pendingOffset
	for p := range 3 {
		for off := range int64(5) {
			e := tr.fetched("events", p, off, 5)
			if p == 1 && off == 2 {
				held = e
				continue
			}
			tr.ack(e, false)
		}
	}
	tr.fetched("other", 0, 7, 8) // unacked, nothing to commit there
	got := tr.toCommit()
	want := []commitPoint{
		{topicPartition{"events", 0}, 5},
		{topicPartition{"events", 1}, 2},
		{topicPartition{"events", 2}, 5},
		{topicPartition{"other", 0}, 7},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("toCommit = %v, want %v", got, want)
	}
	tr.committed(got)
	tr.ack(held, false)
	got = tr.toCommit()
	want = []commitPoint{{topicPartition{"events", 1}, 5}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after the held ack toCommit = %v, want %v", got, want)
	}
	snap := tr.snapshot()
	if len(snap) != 4 || snap[3].unacked != 1 || snap[3].highWatermark != 8 || snap[0].committed != 5 {
		t.Fatalf("snapshot = %+v", snap)
	}
}

// TestOffsetTrackerRandomAcks checks the invariant on random ack orders:
// the commit point is always the smallest unacked offset, never past a
// failure, and reaches the end once everything is acked.
func TestOffsetTrackerRandomAcks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		tr := newOffsetTracker()
		const n = 200
		tokens := make([]*pendingOffset, n)
		for i := range tokens {
			tokens[i] = tr.fetched("t", 0, int64(i), n)
		}
		failAt := int64(-1)
		if round%5 == 0 {
			failAt = int64(rng.IntN(n))
		}
		acked := make([]bool, n)
		for _, i := range rng.Perm(n) {
			tr.ack(tokens[i], int64(i) == failAt)
			acked[i] = true
			want := int64(0)
			for want < n && acked[want] {
				want++
			}
			if failAt >= 0 && acked[failAt] && failAt < want {
				want = failAt
			}
			got := int64(0)
			if pts := tr.toCommit(); len(pts) == 1 {
				got = pts[0].next
			}
			if got != want {
				t.Fatalf("round %d after acking %d: commit %d, want %d", round, i, got, want)
			}
		}
	}
}

func BenchmarkOffsetTrackerFetchAck(b *testing.B) {
	tr := newOffsetTracker()
	const window = 1000
	ring := make([]*pendingOffset, window)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		slot := i % window
		if ring[slot] != nil {
			tr.ack(ring[slot], false)
		}
		ring[slot] = tr.fetched("events", i%3, int64(i), int64(i+1))
	}
}
