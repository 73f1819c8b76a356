package pushapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestPostRowsFromTakesRowsWhenAdmitted: a request that must wait for the
// quota takes its rows when it is admitted, not before, so it carries what
// arrived while it waited; the quota counts the rows it took, and room
// says how many the row quota admits.
func TestPostRowsFromTakesRowsWhenAdmitted(t *testing.T) {
	s := &script{steps: []func(http.ResponseWriter, *http.Request){ok}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	clock := newFakeClock()
	c, _ := newTestClient(t, testConfig(srv.URL), srv.Client(), clock, nil)
	tgt := Target{DatasetID: "ds", Table: "t"}
	c.SetLimits("ds", Limits{RequestsPerMinute: 1, RowsPerHour: 100, LargeTableRows: -1})

	start := clock.Now()
	if err := c.PostRows(context.Background(), tgt, rowsN(30)); err != nil {
		t.Fatalf("PostRows: %v", err)
	}
	var takenAt time.Time
	var room int
	err := c.PostRowsFrom(context.Background(), tgt, 2, func(r int) []json.RawMessage {
		takenAt, room = clock.Now(), r
		return rowsN(50) // more rows arrived while it waited
	})
	if err != nil {
		t.Fatalf("PostRowsFrom: %v", err)
	}
	if takenAt.Sub(start) < time.Minute {
		t.Errorf("rows taken %s after the first request, before the request quota admitted the second (a minute)", takenAt.Sub(start))
	}
	if room != 70 {
		t.Errorf("take offered room for %d rows, want 70 (100 an hour, 30 used)", room)
	}
	reqs := s.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	var body struct{ Rows []json.RawMessage }
	if err := json.Unmarshal([]byte(reqs[1].body), &body); err != nil || len(body.Rows) != 50 {
		t.Fatalf("second body %.60q: %v, %d rows; want the 50 taken", reqs[1].body, err, len(body.Rows))
	}
	// The 80 rows posted count in the hourly quota: 20 more fit now.
	err = c.PostRowsFrom(context.Background(), tgt, 1, func(r int) []json.RawMessage {
		room = r
		return rowsN(1)
	})
	if err != nil {
		t.Fatalf("third PostRowsFrom: %v", err)
	}
	if room != 20 {
		t.Errorf("third request offered room for %d rows, want 20", room)
	}
}

// TestPostRowsFromDoesNotTakeWhenNotAdmitted: when ctx ends while the
// request waits for the quota, take is never called: the rows stay with the
// caller, which settles them.
func TestPostRowsFromDoesNotTakeWhenNotAdmitted(t *testing.T) {
	s := &script{steps: []func(http.ResponseWriter, *http.Request){ok}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	clock := newFakeClock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, _ := newTestClient(t, testConfig(srv.URL), srv.Client(), clock, nil)
	tgt := Target{DatasetID: "ds", Table: "t"}
	c.SetLimits("ds", Limits{RequestsPerMinute: 1, LargeTableRows: -1})
	if err := c.PostRows(ctx, tgt, rowsN(1)); err != nil {
		t.Fatalf("PostRows: %v", err)
	}
	clock.onSleep = cancel
	err := c.PostRowsFrom(ctx, tgt, 1, func(int) []json.RawMessage {
		t.Error("take called although the request was never admitted")
		return rowsN(1)
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("PostRowsFrom = %v, want context.Canceled", err)
	}
	if n := len(s.requests()); n != 1 {
		t.Errorf("%d requests, want only the first", n)
	}
}

// TestPostRowsFromWithNothingTakenSendsNothing: when take returns no rows
// (every event withdrawn while the request waited), there is no request and
// the quotas are left as they were: the next request goes at once.
func TestPostRowsFromWithNothingTakenSendsNothing(t *testing.T) {
	s := &script{steps: []func(http.ResponseWriter, *http.Request){ok}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	clock := newFakeClock()
	c, _ := newTestClient(t, testConfig(srv.URL), srv.Client(), clock, nil)
	tgt := Target{DatasetID: "ds", Table: "t"}
	c.SetLimits("ds", Limits{RequestsPerMinute: 1, RowsPerHour: 100, LargeTableRows: -1})

	taken := false
	err := c.PostRowsFrom(context.Background(), tgt, 3, func(int) []json.RawMessage {
		taken = true
		return nil
	})
	if err != nil || !taken {
		t.Fatalf("PostRowsFrom = %v (take called: %v), want nil after take", err, taken)
	}
	if n := len(s.requests()); n != 0 {
		t.Fatalf("%d requests sent for no rows, want none", n)
	}
	start := clock.Now()
	var room int
	err = c.PostRowsFrom(context.Background(), tgt, 1, func(r int) []json.RawMessage {
		room = r
		return rowsN(1)
	})
	if err != nil {
		t.Fatalf("second PostRowsFrom: %v", err)
	}
	if waited := clock.Now().Sub(start); waited != 0 || room != 100 {
		t.Errorf("the next request waited %s with room for %d rows, want no wait and all 100: the empty one used the quotas", waited, room)
	}
	if n := len(s.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}
