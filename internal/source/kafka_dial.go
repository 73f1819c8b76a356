package source

import (
	"context"
	"net"
	"time"
)

// readDeadlineSlack is added to every read deadline kafka-go sets on a
// connection of the Kafka source.
//
// The source's fetchers (kafka_fetch.go, as kafka-go's Reader did) set a
// fetch's read deadline to max_wait after they send the fetch, and kafka-go
// asks the broker to answer within max_wait less a round-trip
// allowance of a quarter of max_wait (at most 1s): 25ms with max_wait 100ms,
// 125ms with the default 500ms. An answer later than that — a broker far
// away or busy, or pushd's own pod throttled by its CPU limit — fails the
// read with "i/o timeout"; the fetcher closes the connection, waits, dials
// again and fetches again, so a slow answer can stall the source entirely.
// With the slack a slow answer is read; a connection that is really dead is
// still given up, 2s later than kafka-go alone would.
const readDeadlineSlack = 2 * time.Second

// slackDialer dials TCP for kafka-go (which adds TLS and SASL on top) and
// hands back connections whose read deadlines get readDeadlineSlack.
func slackDialer(timeout time.Duration) func(ctx context.Context, network, address string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return &slackConn{Conn: c, slack: readDeadlineSlack}, nil
	}
}

// slackConn is a net.Conn whose read deadlines are extended by slack.
type slackConn struct {
	net.Conn
	slack time.Duration
}

func (c *slackConn) extend(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Add(c.slack)
}

// SetReadDeadline sets the read deadline slack after t (none when t is zero).
func (c *slackConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.extend(t))
}

// SetDeadline sets the write deadline to t and the read deadline slack after t.
func (c *slackConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(c.extend(t))
}
