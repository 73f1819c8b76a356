package source

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// shares records the shares a member was told, in order.
type shares struct {
	mu  sync.Mutex
	got []float64
}

func (s *shares) record(v float64) {
	s.mu.Lock()
	s.got = append(s.got, v)
	s.mu.Unlock()
}

func (s *shares) last() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) == 0 {
		return 0
	}
	return s.got[len(s.got)-1]
}

// waitShares waits until the members' last shares are want (in any order
// of members, as the group assigns).
func waitShares(t *testing.T, what string, want []float64, members ...*shares) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := make([]float64, len(members))
		sum := 0.0
		for i, m := range members {
			got[i] = m.last()
			sum += got[i]
		}
		if sameMultiset(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: shares %v (sum %v), want %v", what, got, sum, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sameMultiset(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	left := map[string]int{}
	for _, x := range a {
		left[fmt.Sprintf("%.4f", x)]++
	}
	for _, x := range b {
		k := fmt.Sprintf("%.4f", x)
		if left[k] == 0 {
			return false
		}
		left[k]--
	}
	return true
}

// TestKafkaShareFollowsTheAssignment: each member of a group is told the
// share of the topic's partitions assigned to it at every rebalance: alone
// 1, then with a second member 1/3 and 2/3 of three partitions (the shares
// add up to 1), and 1 again for the one left when the other closes.
func TestKafkaShareFollowsTheAssignment(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	cfg := testKafkaConfig(c, "g-shares")
	var a, b shares
	optsA := testKafkaOptions(t)
	optsA.OnShare = a.record
	newTestKafka(t, cfg, optsA)
	waitShares(t, "one member", []float64{1}, &a)

	optsB := testKafkaOptions(t)
	optsB.OnShare = b.record
	kb := newTestKafka(t, cfg, optsB)
	waitShares(t, "two members", []float64{1.0 / 3, 2.0 / 3}, &a, &b)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := kb.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitShares(t, "after the second member left", []float64{1}, &a)
}
