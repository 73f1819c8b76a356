package emulator

import (
	"sync"
	"time"
)

// Stats are the emulator's counters, as GET /emulator/v1/stats returns them.
type Stats struct {
	// Requests counts answered requests by route (RoutePostRows, …) and
	// HTTP status.
	Requests map[string]map[int]int64 `json:"requests"`
	// RowsAccepted counts rows of accepted POST rows requests.
	RowsAccepted int64 `json:"rows_accepted"`
	// UnknownKeysDropped counts row keys that named no column and were
	// dropped (Config.UnknownColumns = ignore).
	UnknownKeysDropped int64 `json:"unknown_keys_dropped"`
	// Throttled counts 429 answers, whatever the cause.
	Throttled int64 `json:"throttled"`
	// InjectedErrors counts 500/503 answers from Faults.ErrorRate;
	// ConnectionsCut counts connections cut by Faults.CutRate.
	InjectedErrors int64 `json:"injected_errors"`
	ConnectionsCut int64 `json:"connections_cut"`
	// TokensIssued counts access tokens issued (client credentials and
	// managed identity); TokenErrors counts refused token requests.
	TokensIssued int64 `json:"tokens_issued"`
	TokenErrors  int64 `json:"token_errors"`
	// MaxInFlight is the most POST rows requests seen in flight at once for
	// any one dataset.
	MaxInFlight int `json:"max_in_flight"`
	// Datasets holds per-dataset figures by dataset id (existing datasets).
	Datasets map[string]DatasetStats `json:"datasets"`
}

// DatasetStats are one dataset's figures.
type DatasetStats struct {
	Name      string `json:"name"`
	Workspace string `json:"workspace,omitempty"`
	Retention string `json:"retention"`
	// RowsAccepted and PostRows count accepted rows and accepted (200) POST
	// rows requests; Throttled counts 429 answers.
	RowsAccepted int64 `json:"rows_accepted"`
	PostRows     int64 `json:"post_rows"`
	Throttled    int64 `json:"throttled"`
	// InFlight is the POST rows requests being served now; MaxInFlight the
	// most seen at once.
	InFlight    int `json:"in_flight"`
	MaxInFlight int `json:"max_in_flight"`
	// Tables maps each table to the rows it holds now.
	Tables map[string]int `json:"tables"`
	// Posts records every POST rows request that reached the dataset, in
	// arrival order, the most recent Config.HistoryLimit of them;
	// PostsDropped counts older records forgotten.
	Posts        []PostRecord `json:"posts"`
	PostsDropped int64        `json:"posts_dropped"`
}

// PostRecord is one POST rows request as the emulator saw it. A pacing test
// checks that no request arrived before an earlier 429's Arrived+RetryAfter.
type PostRecord struct {
	Arrived time.Time `json:"arrived"`
	Table   string    `json:"table"`
	Status  int       `json:"status"`
	Rows    int       `json:"rows"`
	// RetryAfter is the Retry-After sent with a 429, in seconds.
	RetryAfter int `json:"retry_after,omitempty"`
	// Reason says why a request was refused: in_flight,
	// requests_per_window, large_table, rows_per_window, throttle_fault,
	// error_fault, table_full.
	Reason string `json:"reason,omitempty"`
}

// datasetStats is kept under dataset.mu.
type datasetStats struct {
	RowsAccepted int64
	PostRows     int64
	Throttled    int64
	MaxInFlight  int
	posts        []PostRecord
	postsDropped int64
}

// record appends a PostRecord, forgetting the oldest half when over limit.
// d.mu is held.
func (d *dataset) record(rec PostRecord, limit int) {
	if limit < 0 {
		return
	}
	if len(d.stats.posts) >= limit {
		drop := max(len(d.stats.posts)/2, 1)
		d.stats.posts = append(d.stats.posts[:0], d.stats.posts[drop:]...)
		d.stats.postsDropped += int64(drop)
	}
	d.stats.posts = append(d.stats.posts, rec)
}

// statsRecorder holds the server-wide counters.
type statsRecorder struct {
	now      func() time.Time
	mu       sync.Mutex
	requests map[string]map[int]int64
	s        Stats
	hist     history
}

func (r *statsRecorder) init(now func() time.Time) {
	r.now = now
	r.reset()
}

func (r *statsRecorder) reset() {
	r.mu.Lock()
	r.requests = map[string]map[int]int64{}
	r.s = Stats{}
	r.hist = history{}
	r.mu.Unlock()
}

func (r *statsRecorder) request(route string, status int) {
	if status == 0 {
		status = 200
	}
	r.mu.Lock()
	m := r.requests[route]
	if m == nil {
		m = map[int]int64{}
		r.requests[route] = m
	}
	m[status]++
	r.mu.Unlock()
}

func (r *statsRecorder) add(f func(s *Stats)) {
	r.mu.Lock()
	f(&r.s)
	r.mu.Unlock()
}

// throttled, injected and cut count a 429, an injected error and a cut
// connection, and keep e (its At and Kind set here) for the page's timeline.
func (r *statsRecorder) throttled(e Event) {
	r.event(e, EventThrottled, func(s *Stats) { s.Throttled++ })
}
func (r *statsRecorder) injected(e Event) {
	r.event(e, EventError, func(s *Stats) { s.InjectedErrors++ })
}
func (r *statsRecorder) cut(e Event) {
	r.event(e, EventCut, func(s *Stats) { s.ConnectionsCut++ })
}

func (r *statsRecorder) event(e Event, kind string, count func(s *Stats)) {
	e.At, e.Kind = r.now(), kind
	r.mu.Lock()
	count(&r.s)
	r.hist.event(e)
	r.mu.Unlock()
}
func (r *statsRecorder) tokenIssued() {
	r.add(func(s *Stats) { s.TokensIssued++ })
}
func (r *statsRecorder) tokenError() { r.add(func(s *Stats) { s.TokenErrors++ }) }
func (r *statsRecorder) inFlight(n int) {
	r.add(func(s *Stats) { s.MaxInFlight = max(s.MaxInFlight, n) })
}
func (r *statsRecorder) accepted(rows, dropped int) {
	now := r.now()
	r.add(func(s *Stats) {
		s.RowsAccepted += int64(rows)
		s.UnknownKeysDropped += int64(dropped)
		r.hist.second(now.Unix()).Rows += int64(rows)
	})
}

// Stats returns a snapshot of the counters (the data of GET
// /emulator/v1/stats).
func (s *Server) Stats() Stats {
	s.stats.mu.Lock()
	out := s.stats.s
	out.Requests = make(map[string]map[int]int64, len(s.stats.requests))
	for route, m := range s.stats.requests {
		c := make(map[int]int64, len(m))
		for k, v := range m {
			c[k] = v
		}
		out.Requests[route] = c
	}
	s.stats.mu.Unlock()

	s.mu.RLock()
	list := make([]*dataset, 0, len(s.datasets))
	for _, d := range s.datasets {
		list = append(list, d)
	}
	s.mu.RUnlock()
	out.Datasets = make(map[string]DatasetStats, len(list))
	for _, d := range list {
		d.mu.Lock()
		ds := DatasetStats{
			Name: d.name, Workspace: d.workspace, Retention: d.retention,
			RowsAccepted: d.stats.RowsAccepted, PostRows: d.stats.PostRows, Throttled: d.stats.Throttled,
			InFlight: d.inFlight, MaxInFlight: d.stats.MaxInFlight,
			Tables:       make(map[string]int, len(d.tables)),
			Posts:        append([]PostRecord{}, d.stats.posts...),
			PostsDropped: d.stats.postsDropped,
		}
		for _, t := range d.tables {
			ds.Tables[t.name] = t.count()
		}
		d.mu.Unlock()
		out.Datasets[d.id] = ds
	}
	return out
}
