package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// FaultsJSON is the wire form of Faults for GET/POST /emulator/v1/faults:
// durations as Go strings ("250ms"), times as RFC 3339.
type FaultsJSON struct {
	ErrorRate          float64    `json:"error_rate"`
	Latency            string     `json:"latency,omitempty"`
	CutRate            float64    `json:"cut_rate"`
	AllRoutes          bool       `json:"all_routes"`
	ThrottleUntil      *time.Time `json:"throttle_until,omitempty"`
	ThrottleFor        string     `json:"throttle_for,omitempty"`
	ThrottleRetryAfter string     `json:"throttle_retry_after,omitempty"`
	ThrottleIdentity   string     `json:"throttle_identity,omitempty"`
	TokenOutage        bool       `json:"token_outage"`
	TokenOutageFor     string     `json:"token_outage_for,omitempty"`
	TokenOutageUntil   *time.Time `json:"token_outage_until,omitempty"`
}

// Faults converts the wire form, naming the field of a bad duration.
func (j FaultsJSON) Faults() (Faults, error) {
	f := Faults{ErrorRate: j.ErrorRate, CutRate: j.CutRate, AllRoutes: j.AllRoutes, TokenOutage: j.TokenOutage, ThrottleIdentity: j.ThrottleIdentity}
	for _, d := range []struct {
		name string
		in   string
		out  *time.Duration
	}{
		{"latency", j.Latency, &f.Latency}, {"throttle_for", j.ThrottleFor, &f.ThrottleFor},
		{"throttle_retry_after", j.ThrottleRetryAfter, &f.ThrottleRetryAfter}, {"token_outage_for", j.TokenOutageFor, &f.TokenOutageFor},
	} {
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil {
			return Faults{}, fmt.Errorf("faults.%s: %w", d.name, err)
		}
		*d.out = v
	}
	if j.ThrottleUntil != nil {
		f.ThrottleUntil = *j.ThrottleUntil
	}
	if j.TokenOutageUntil != nil {
		f.TokenOutageUntil = *j.TokenOutageUntil
	}
	return f, f.Validate()
}

func faultsJSON(f Faults) FaultsJSON {
	j := FaultsJSON{ErrorRate: f.ErrorRate, CutRate: f.CutRate, AllRoutes: f.AllRoutes, TokenOutage: f.TokenOutage, ThrottleIdentity: f.ThrottleIdentity}
	if f.Latency > 0 {
		j.Latency = f.Latency.String()
	}
	if f.ThrottleRetryAfter > 0 {
		j.ThrottleRetryAfter = f.ThrottleRetryAfter.String()
	}
	if !f.ThrottleUntil.IsZero() {
		t := f.ThrottleUntil
		j.ThrottleUntil = &t
	}
	if !f.TokenOutageUntil.IsZero() {
		t := f.TokenOutageUntil
		j.TokenOutageUntil = &t
	}
	return j
}

// SetFaults replaces the injected faults (rates are clamped to 0..1).
// ThrottleFor and TokenOutageFor start now.
func (s *Server) SetFaults(f Faults) {
	f.ErrorRate = min(max(f.ErrorRate, 0), 1)
	f.CutRate = min(max(f.CutRate, 0), 1)
	s.setFaults(f)
}

func (s *Server) setFaults(f Faults) {
	now := s.now()
	if f.ThrottleFor > 0 {
		f.ThrottleUntil = now.Add(f.ThrottleFor)
		f.ThrottleFor = 0
	}
	if f.TokenOutageFor > 0 {
		f.TokenOutageUntil = now.Add(f.TokenOutageFor)
		f.TokenOutageFor = 0
	}
	s.faultMu.Lock()
	s.faults = f
	s.faultMu.Unlock()
	s.log.Info("emulator faults set", "error_rate", f.ErrorRate, "latency", f.Latency, "cut_rate", f.CutRate,
		"throttle_until", f.ThrottleUntil, "token_outage", f.TokenOutage, "token_outage_until", f.TokenOutageUntil)
}

// Faults returns the faults in force.
func (s *Server) Faults() Faults { return s.currentFaults() }

func (s *Server) currentFaults() Faults {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.faults
}

// roll reports true with probability p.
func (s *Server) roll(p float64) bool {
	if p >= 1 {
		return true
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.rnd.Float64() < p
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleReset(w http.ResponseWriter, _ *http.Request) {
	s.Reset()
	writeJSON(w, http.StatusOK, map[string]bool{"reset": true})
}

func (s *Server) handleGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, faultsJSON(s.currentFaults()))
}

// handleSetFaults replaces the faults with the body (absent fields are
// zero: no fault).
func (s *Server) handleSetFaults(w http.ResponseWriter, r *http.Request) {
	var j FaultsJSON
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", "faults: "+err.Error())
		return
	}
	f, err := j.Faults()
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	s.setFaults(f)
	writeJSON(w, http.StatusOK, faultsJSON(s.currentFaults()))
}

// handleRows writes {"count":N,"rows":[...]} for a table; N is every row the
// table holds, rows the page chosen by ?offset= and ?limit= (default all).
func (s *Server) handleRows(w http.ResponseWriter, r *http.Request) {
	id, name := r.PathValue("datasetId"), r.PathValue("tableName")
	s.mu.RLock()
	d := s.datasets[strings.ToLower(id)]
	s.mu.RUnlock()
	if d == nil {
		datasetNotFound(w, id)
		return
	}
	offset, limit := 0, -1
	for key, dst := range map[string]*int{"offset": &offset, "limit": &limit} {
		if v := r.URL.Query().Get(key); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				writeError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("%s must be a non-negative integer, got %q", key, v))
				return
			}
			*dst = n
		}
	}
	d.mu.Lock()
	t := d.table(name)
	if t == nil {
		d.mu.Unlock()
		tableNotFound(w, name, d.id)
		return
	}
	count := t.count()
	live := t.live()
	if offset > len(live) {
		offset = len(live)
	}
	page := live[offset:]
	if limit >= 0 && limit < len(page) {
		page = page[:limit]
	}
	page = append([][]byte(nil), page...) // the rows themselves are immutable
	d.mu.Unlock()

	size := 32
	for _, row := range page {
		size += len(row) + 1
	}
	buf := make([]byte, 0, size)
	buf = append(buf, `{"count":`...)
	buf = strconv.AppendInt(buf, int64(count), 10)
	buf = append(buf, `,"rows":[`...)
	for i, row := range page {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, row...)
	}
	buf = append(buf, "]}"...)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(buf)
}
