package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/webui"
)

// TestLiveShowsRatesQuotasAndEvents: rows per second land in the second
// they were accepted, the quota figures are those of the sliding windows,
// and 429s, injected errors and cuts reach the timeline with their cause.
func TestLiveShowsRatesQuotasAndEvents(t *testing.T) {
	e := start(t, func(c *Config) {
		c.Limits.RequestsPerWindow = 3
		c.Limits.LargeTableRows = 5
	})
	id := e.dataset(RetentionNone)
	wantStatus(t, e.post(id, 0, 4), http.StatusOK)
	e.clock.Advance(time.Second)
	wantStatus(t, e.post(id, 4, 6), http.StatusOK)
	wantStatus(t, e.post(id, 10, 1), http.StatusOK)
	wantError(t, e.post(id, 11, 1), http.StatusTooManyRequests, "TooManyRequests") // 4th request in the window

	v := e.s.Live()
	last := v.Seconds[len(v.Seconds)-2:]
	if len(v.Seconds) != HistorySeconds || last[0].Rows != 4 || last[1].Rows != 7 || last[1].Throttled != 1 {
		t.Fatalf("last seconds = %+v (of %d)", last, len(v.Seconds))
	}
	if last[1].At != e.clock.Now().Unix() {
		t.Fatalf("the last second is %d, want now (%d)", last[1].At, e.clock.Now().Unix())
	}
	d := v.Datasets[0]
	q := d.Quota
	if q.Requests != 3 || q.LargestTable != "T" || q.LargestRows != 11 || !q.LargeTable || q.LargeRequests != 3 {
		t.Fatalf("quota = %+v", q)
	}
	if d.RowsAccepted != 11 || d.PostRows != 3 || d.Throttled != 1 || v.Totals.PostRows != 3 || v.Totals.RowsAccepted != 11 {
		t.Fatalf("dataset %+v, totals %+v", d, v.Totals)
	}
	if len(v.Events) != 1 || v.Events[0].Kind != EventThrottled || v.Events[0].Reason != "requests_per_window" ||
		v.Events[0].Dataset != id || v.Events[0].Table != "T" || v.Events[0].RetryAfter < 1 {
		t.Fatalf("events = %+v", v.Events)
	}

	// The window slides: a minute later the requests have left it.
	e.clock.Advance(time.Minute)
	if q := e.s.Live().Datasets[0].Quota; q.Requests != 0 {
		t.Fatalf("a minute later the window holds %d requests", q.Requests)
	}

	e.s.SetFaults(Faults{ErrorRate: 1})
	e.post(id, 0, 1)
	e.s.SetFaults(Faults{CutRate: 1})
	e.post(id, 0, 1)
	// The cut is recorded as the connection closes, which the client may
	// see first: wait for it (a real-time bound, the fake clock stands).
	ev := e.s.Live().Events
	for deadline := time.Now().Add(5 * time.Second); len(ev) < 3 && time.Now().Before(deadline); ev = e.s.Live().Events {
		time.Sleep(5 * time.Millisecond)
	}
	if len(ev) != 3 || ev[0].Kind != EventCut || ev[1].Kind != EventError || ev[1].Status < 500 || ev[1].Table != "T" || ev[1].Dataset != id {
		t.Fatalf("events, newest first = %+v", ev)
	}
	now := e.s.Live().Seconds[HistorySeconds-1]
	if now.Errors != 1 || now.Cuts != 1 {
		t.Fatalf("this second = %+v", now)
	}
}

// TestHistoryIsBounded: however long the emulator runs, it keeps
// HistorySeconds seconds and HistoryEvents events, the newest.
func TestHistoryIsBounded(t *testing.T) {
	var h history
	at := time.Unix(1_000_000, 0)
	for i := range 3 * HistoryEvents {
		h.event(Event{At: at.Add(time.Duration(i) * time.Second), Kind: EventThrottled, Table: fmt.Sprint(i)})
	}
	ev := h.lastEvents()
	if len(ev) != HistoryEvents || ev[0].Table != fmt.Sprint(3*HistoryEvents-1) || ev[HistoryEvents-1].Table != fmt.Sprint(2*HistoryEvents) {
		t.Fatalf("kept %d events, newest %q, oldest %q", len(ev), ev[0].Table, ev[len(ev)-1].Table)
	}
	end := at.Add(time.Duration(3*HistoryEvents-1) * time.Second)
	secs := h.lastSeconds(end)
	if len(secs) != HistorySeconds {
		t.Fatalf("%d seconds", len(secs))
	}
	for i, s := range secs {
		want := end.Unix() - HistorySeconds + 1 + int64(i)
		if s.At != want || s.Throttled != 1 {
			t.Fatalf("second %d = %+v, want at %d with one 429", i, s, want)
		}
	}
	// A second not seen for HistorySeconds reads as empty, not as the
	// older second that shared its slot.
	if s := h.lastSeconds(end.Add(HistorySeconds * time.Second)); s[0].Throttled != 0 || s[HistorySeconds-1].Throttled != 0 {
		t.Fatalf("stale seconds read back: %+v ... %+v", s[0], s[HistorySeconds-1])
	}
}

// TestLiveStaysSmallWithManyTablesAndRows: with 75 tables and tens of
// thousands of rows the page's JSON holds counts and the newest rows only.
func TestLiveStaysSmallWithManyTablesAndRows(t *testing.T) {
	e := start(t, func(c *Config) { c.Limits = c.Limits.WithoutQuotas() })
	tables := make([]Table, 75)
	for i := range tables {
		tables[i] = Table{Name: fmt.Sprintf("T%02d", i), Columns: []Column{{Name: "n", DataType: "Int64"}}}
	}
	id, err := e.s.CreateDataset("", CreateDatasetRequest{Name: "Wide", Tables: tables}, RetentionNone)
	if err != nil {
		t.Fatal(err)
	}
	const perPost = 10_000
	for i := range 5 {
		wantStatus(t, e.do("POST", rowsPath(id, "T74"), rowsBody(i*perPost, perPost)), http.StatusOK)
	}
	r := e.do("GET", "/emulator/v1/live?dataset="+id+"&table=T74&newest=20", nil)
	wantStatus(t, r, http.StatusOK)
	if len(r.body) > 64<<10 {
		t.Fatalf("live answer is %d bytes with 75 tables", len(r.body))
	}
	var v Live
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Datasets) != 1 || len(v.Datasets[0].Tables) != 75 || v.Datasets[0].Tables[74].Rows != 5*perPost {
		t.Fatalf("datasets = %+v", v.Datasets)
	}
	if v.Rows == nil || v.Rows.Count != 5*perPost || len(v.Rows.Rows) != 20 {
		t.Fatalf("rows = %+v", v.Rows)
	}
	for i, row := range v.Rows.Rows {
		if want := fmt.Sprintf(`{"n":%d}`, 5*perPost-20+i); string(row) != want {
			t.Fatalf("newest row %d = %s, want %s", i, row, want)
		}
	}
	for _, q := range []string{"newest=101", "newest=-1", "newest=x"} {
		wantError(t, e.do("GET", "/emulator/v1/live?dataset="+id+"&table=T74&"+q, nil), http.StatusBadRequest, "BadRequest")
	}
	if r := e.do("GET", "/emulator/v1/live?dataset="+id+"&table=nope", nil); r.status != http.StatusOK || strings.Contains(string(r.body), `"rows":{`) {
		t.Fatalf("unknown table: %d %s", r.status, r.body)
	}
}

// TestPageIsServedWithItsPolicy: GET / and the assets come from the binary
// with the Content-Security-Policy; unknown assets are 404.
func TestPageIsServedWithItsPolicy(t *testing.T) {
	e := start(t, nil)
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `<script src="/emulator/ui/emulator.js" defer></script>`},
		{"/emulator/ui/emulator.js", "text/javascript", "/emulator/v1/live"},
		{"/emulator/ui/chart.js", "text/javascript", "PushdUI"},
		{"/emulator/ui/common.css", "text/css", ".gauge"},
		{"/emulator/v1/live", "application/json", `"seconds"`},
	} {
		r := e.do("GET", tc.path, nil)
		wantStatus(t, r, http.StatusOK)
		if csp := r.header.Get("Content-Security-Policy"); csp != webui.ContentSecurityPolicy {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
		if !strings.HasPrefix(r.header.Get("Content-Type"), tc.ctype) || !strings.Contains(string(r.body), tc.contains) {
			t.Errorf("GET %s: %s, body lacks %q", tc.path, r.header.Get("Content-Type"), tc.contains)
		}
	}
	if strings.Contains(string(e.do("GET", "/", nil).body), "<script>") {
		t.Error("the page has an inline script")
	}
	for _, p := range []string{"/emulator/ui/nope.js", "/emulator/ui/..%2fpage.go", "/emulator/ui/page"} {
		if r := e.do("GET", p, nil); r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d", p, r.status)
		}
	}
}
