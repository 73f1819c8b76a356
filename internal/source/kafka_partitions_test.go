package source

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaPartitionsSayWhatIsUnread: the source names its assigned
// partitions with the records waiting in each, before it reads any (an
// empty partition is known empty, not unknown) and as it reads them, so
// that a reduction waits for a partition that is not read yet rather than
// taking it for idle.
func TestKafkaPartitionsSayWhatIsUnread(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	var records []*kgo.Record
	for p, n := range []int{5, 3} { // partition 2 stays empty
		for i := range n {
			records = append(records, &kgo.Record{Topic: testTopic, Partition: int32(p), Value: fmt.Appendf(nil, `{"i":%d}`, i)})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	k := newTestKafka(t, testKafkaConfig(c, "g-partitions"), testKafkaOptions(t))
	if parts, ok := k.Partitions(); ok {
		t.Fatalf("Partitions before the group assigned any = %v, true; want false", parts)
	}
	wait := func(want []PartitionState) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			parts, ok := k.Partitions()
			if ok && reflect.DeepEqual(parts, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Partitions = %v, %v; want %v", parts, ok, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait([]PartitionState{{testTopic, 0, 5}, {testTopic, 1, 3}, {testTopic, 2, 0}})
	evs := readN(t, k, 8)
	wait([]PartitionState{{testTopic, 0, 0}, {testTopic, 1, 0}, {testTopic, 2, 0}})
	for _, e := range evs {
		e.ack(nil)
	}
}
