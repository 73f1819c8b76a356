package emulator

import (
	"cmp"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/pushd/pushd/internal/webui"
)

//go:embed page
var pageFiles embed.FS

// Live is what the emulator's page shows (GET /emulator/v1/live): totals,
// each dataset's tables and quota use, the last HistorySeconds seconds,
// the latest events, the faults in force and, when asked for, the newest
// rows of one table. It holds aggregates only, so it stays small however
// many rows the emulator holds.
type Live struct {
	Now      time.Time     `json:"now"`
	URL      string        `json:"url"`
	Totals   LiveTotals    `json:"totals"`
	Limits   LiveLimits    `json:"limits"`
	Faults   FaultsJSON    `json:"faults"`
	Datasets []LiveDataset `json:"datasets"`
	// Seconds are the last HistorySeconds seconds, oldest first.
	Seconds []Second `json:"seconds"`
	// Events are the latest HistoryEvents events, newest first;
	// EventsTotal counts every event since start or reset.
	Events      []Event   `json:"events"`
	EventsTotal int64     `json:"events_total"`
	Rows        *LiveRows `json:"rows,omitempty"`
}

// LiveTotals are the emulator-wide counters.
type LiveTotals struct {
	RowsAccepted   int64 `json:"rows_accepted"`
	PostRows       int64 `json:"post_rows"`
	Throttled      int64 `json:"throttled"`
	InjectedErrors int64 `json:"injected_errors"`
	ConnectionsCut int64 `json:"connections_cut"`
	TokensIssued   int64 `json:"tokens_issued"`
}

// LiveLimits are the quotas the gauges are drawn against (0: no limit).
type LiveLimits struct {
	MaxInFlight                 int     `json:"max_in_flight"`
	RequestsPerWindow           int     `json:"requests_per_window"`
	RequestWindowSeconds        float64 `json:"request_window_seconds"`
	RowsPerWindow               int     `json:"rows_per_window"`
	RowsWindowSeconds           float64 `json:"rows_window_seconds"`
	LargeTableRows              int     `json:"large_table_rows"`
	LargeTableRequestsPerWindow int     `json:"large_table_requests_per_window"`
	LargeTableWindowSeconds     float64 `json:"large_table_window_seconds"`
}

// LiveDataset is one dataset's figures and quota use now.
type LiveDataset struct {
	ID           string      `json:"id"`
	Name         string      `json:"name"`
	Workspace    string      `json:"workspace,omitempty"`
	Retention    string      `json:"retention"`
	RowsAccepted int64       `json:"rows_accepted"`
	PostRows     int64       `json:"post_rows"`
	Throttled    int64       `json:"throttled"`
	Quota        LiveQuota   `json:"quota"`
	Tables       []LiveTable `json:"tables"`
}

// LiveQuota is a dataset's use of its quotas now: requests and rows in the
// current (sliding) windows, requests in flight, and the large-table rule:
// the largest table's rows and the requests counted against the rule.
type LiveQuota struct {
	Requests      int    `json:"requests"`
	Rows          int    `json:"rows"`
	InFlight      int    `json:"in_flight"`
	LargestTable  string `json:"largest_table,omitempty"`
	LargestRows   int    `json:"largest_rows"`
	LargeRequests int    `json:"large_requests"`
	// LargeTable is true once the largest table holds LargeTableRows rows
	// or more: the lower request rate applies.
	LargeTable bool `json:"large_table"`
}

// LiveTable is a table and the rows it holds.
type LiveTable struct {
	Name string `json:"name"`
	Rows int    `json:"rows"`
}

// LiveRows are the newest rows of a table, oldest first; Count is every
// row the table holds.
type LiveRows struct {
	Dataset string            `json:"dataset"`
	Table   string            `json:"table"`
	Count   int               `json:"count"`
	Rows    []json.RawMessage `json:"rows"`
}

// maxNewestRows bounds LiveRows.Rows.
const maxNewestRows = 100

// Live returns the page's view now.
func (s *Server) Live() Live {
	now := s.now()
	lim := s.cfg.Limits
	v := Live{
		Now: now, URL: s.url, Faults: faultsJSON(s.currentFaults()),
		Limits: LiveLimits{
			MaxInFlight: lim.MaxInFlight, RequestsPerWindow: lim.RequestsPerWindow, RequestWindowSeconds: lim.RequestWindow.Seconds(),
			RowsPerWindow: lim.RowsPerWindow, RowsWindowSeconds: lim.RowsWindow.Seconds(),
			LargeTableRows: lim.LargeTableRows, LargeTableRequestsPerWindow: lim.LargeTableRequestsPerWindow,
			LargeTableWindowSeconds: lim.LargeTableWindow.Seconds(),
		},
	}
	s.stats.mu.Lock()
	st := s.stats.s
	v.Seconds = s.stats.hist.lastSeconds(now)
	v.Events = s.stats.hist.lastEvents()
	v.EventsTotal = s.stats.hist.total
	s.stats.mu.Unlock()
	v.Totals = LiveTotals{RowsAccepted: st.RowsAccepted, Throttled: st.Throttled, InjectedErrors: st.InjectedErrors,
		ConnectionsCut: st.ConnectionsCut, TokensIssued: st.TokensIssued}

	s.mu.RLock()
	list := make([]*dataset, 0, len(s.datasets))
	for _, d := range s.datasets {
		list = append(list, d)
	}
	s.mu.RUnlock()
	for _, d := range list {
		ld := s.liveDataset(d, now.UnixNano())
		v.Totals.PostRows += ld.PostRows
		v.Datasets = append(v.Datasets, ld)
	}
	slices.SortFunc(v.Datasets, func(a, b LiveDataset) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return v
}

// liveDataset reads one dataset's figures; it prunes the quota windows to
// now, as a POST rows request would.
func (s *Server) liveDataset(d *dataset, now int64) LiveDataset {
	lim := s.cfg.Limits
	d.mu.Lock()
	defer d.mu.Unlock()
	ld := LiveDataset{
		ID: d.id, Name: d.name, Workspace: d.workspace, Retention: d.retention,
		RowsAccepted: d.stats.RowsAccepted, PostRows: d.stats.PostRows, Throttled: d.stats.Throttled,
		Tables: make([]LiveTable, 0, len(d.tables)),
	}
	q := &ld.Quota
	q.InFlight = d.inFlight
	if lim.RequestsPerWindow > 0 {
		d.quota.requests.prune(now, lim.RequestWindow)
		q.Requests = d.quota.requests.sum
	}
	if lim.RowsPerWindow > 0 {
		d.quota.rows.prune(now, lim.RowsWindow)
		q.Rows = d.quota.rows.sum
	}
	if lim.LargeTableRows > 0 && lim.LargeTableRequestsPerWindow > 0 {
		d.quota.large.prune(now, lim.LargeTableWindow)
		q.LargeRequests = d.quota.large.sum
	}
	for _, t := range d.tables {
		n := t.count()
		ld.Tables = append(ld.Tables, LiveTable{Name: t.name, Rows: n})
		if n > q.LargestRows || q.LargestTable == "" {
			q.LargestTable, q.LargestRows = t.name, n
		}
	}
	q.LargeTable = lim.LargeTableRows > 0 && q.LargestRows >= lim.LargeTableRows
	return ld
}

// newestRows returns the newest n rows of a table, nil when there is no
// such table.
func (s *Server) newestRows(datasetID, name string, n int) *LiveRows {
	var out *LiveRows
	s.withTable(datasetID, name, func(d *dataset, t *table) {
		live := t.live()
		live = live[max(len(live)-n, 0):]
		out = &LiveRows{Dataset: d.id, Table: t.name, Count: t.count(), Rows: rawRows(live)}
	})
	return out
}

// handleLive answers GET /emulator/v1/live[?dataset=ID&table=NAME&newest=N].
func (s *Server) handleLive(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := 20
	if v := q.Get("newest"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 || n > maxNewestRows {
			writeError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("newest must be an integer 0..%d, got %q", maxNewestRows, v))
			return
		}
	}
	v := s.Live()
	if id, table := q.Get("dataset"), q.Get("table"); id != "" && table != "" {
		v.Rows = s.newestRows(id, table, n)
	}
	webui.SetHeaders(w)
	writeJSON(w, http.StatusOK, v)
}

// pageRoutes adds the emulator's page: GET / and its assets.
func (s *Server) pageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", webui.Page(pageFiles, "page/index.html"))
	assets, _ := fs.Sub(pageFiles, "page") // "page" is embedded: Sub cannot fail
	mux.HandleFunc("GET /emulator/ui/{file}", webui.Assets(assets))
	mux.HandleFunc("GET /emulator/v1/live", s.handleLive)
}
