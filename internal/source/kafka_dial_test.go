package source

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A broker that answers each fetch 400ms late is read: kafka-go alone gives
// a fetch with max_wait 100ms only 25ms beyond the broker's wait, fails the
// read with an i/o timeout, reconnects and fetches again, and reads nothing.
func TestKafkaReadsFromASlowBroker(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { time.Sleep(400 * time.Millisecond) })
		return nil, nil, false
	})
	produce(t, c, 0, 10)
	cfg := testKafkaConfig(c, "slow-broker")
	k := newTestKafka(t, cfg, testKafkaOptions(t))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for n := range 30 {
		if _, ack, err := k.Read(ctx); err != nil {
			t.Fatalf("read %d of 30 events from a broker answering fetches 400ms late: %v", n, err)
		} else {
			ack(nil)
		}
	}
}

func TestSlackConnExtendsReadDeadlines(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &slackConn{Conn: a, slack: 2 * time.Second}
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _ = b.Write([]byte("x"))
	}()
	// The deadline has passed when the byte arrives; the slack has not.
	if err := c.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("read within the slack: %v", err)
	}
	// A zero deadline stays zero (no deadline), and the slack is still a bound.
	if err := c.SetDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the slack: %v, want a deadline error", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = b.Write([]byte("y")) }()
	if _, err := c.Read(buf); err != nil || buf[0] != 'y' {
		t.Fatalf("read without a deadline: %q, %v", buf, err)
	}
}
