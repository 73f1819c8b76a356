package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Route names used in Stats.Requests (the swagger operationIds, without the
// InGroup suffix, plus the emulator's own).
const (
	RoutePostDataset         = "PostDataset"
	RouteGetDatasets         = "GetDatasets"
	RouteGetDataset          = "GetDataset"
	RouteDeleteDataset       = "DeleteDataset"
	RouteGetTables           = "GetTables"
	RoutePutTable            = "PutTable"
	RoutePostRows            = "PostRows"
	RouteDeleteRows          = "DeleteRows"
	RouteOpenIDConfiguration = "OpenIDConfiguration"
	RouteToken               = "Token"
	RouteManagedIdentity     = "ManagedIdentity"
	RouteNotFound            = "NotFound"
)

// errorBody is Power BI's error JSON: {"error":{"code":...,"message":...}}.
type errorBody struct {
	Error apiError `json:"error"`
}

type apiError struct {
	Code     string         `json:"code"`
	Message  string         `json:"message,omitempty"`
	PBIError *pbiError      `json:"pbi.error,omitempty"`
	Details  []detailRecord `json:"details,omitempty"`
}

type pbiError struct {
	Code             string         `json:"code"`
	Parameters       map[string]any `json:"parameters"`
	Details          []any          `json:"details"`
	ExceptionCulprit int            `json:"exceptionCulprit"`
}

type detailRecord struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
	Target  string `json:"target,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, status int, code, message string, details ...detailRecord) {
	writeJSON(w, status, errorBody{Error: apiError{Code: code, Message: message, Details: details}})
}

func badRequest(w http.ResponseWriter, message, target string) {
	writeError(w, http.StatusBadRequest, "BadRequest", "Bad Request", detailRecord{Message: message, Target: target})
}

// recorder remembers the status a handler answered with, for Stats.
type recorder struct {
	http.ResponseWriter
	status int
	cut    bool
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// cutConnection hijacks the connection, sends half a response head and
// closes: the client sees a broken response after the server acted.
func cutConnection(w http.ResponseWriter) bool {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: applica")
	_ = buf.Flush()
	_ = conn.Close()
	return true
}

type handlerFunc func(w *recorder, r *http.Request, workspace string)

// routes builds the HTTP handler for every route.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, prefix := range []string{"/v1.0/myorg", "/v1.0/myorg/groups/{groupId}"} {
		mux.Handle("POST "+prefix+"/datasets", s.api(RoutePostDataset, s.postDataset))
		mux.Handle("GET "+prefix+"/datasets", s.api(RouteGetDatasets, s.getDatasets))
		mux.Handle("GET "+prefix+"/datasets/{datasetId}", s.api(RouteGetDataset, s.getDataset))
		mux.Handle("DELETE "+prefix+"/datasets/{datasetId}", s.api(RouteDeleteDataset, s.deleteDataset))
		mux.Handle("GET "+prefix+"/datasets/{datasetId}/tables", s.api(RouteGetTables, s.getTables))
		mux.Handle("PUT "+prefix+"/datasets/{datasetId}/tables/{tableName}", s.api(RoutePutTable, s.putTable))
		mux.Handle("POST "+prefix+"/datasets/{datasetId}/tables/{tableName}/rows", s.api(RoutePostRows, s.postRows))
		mux.Handle("DELETE "+prefix+"/datasets/{datasetId}/tables/{tableName}/rows", s.api(RouteDeleteRows, s.deleteRows))
	}
	mux.Handle("GET /{tenant}/v2.0/.well-known/openid-configuration", s.plain(RouteOpenIDConfiguration, s.openIDConfiguration))
	mux.Handle("POST /{tenant}/oauth2/v2.0/token", s.plain(RouteToken, s.token))
	mux.Handle("GET /msi/token", s.plain(RouteManagedIdentity, s.managedIdentity))
	mux.HandleFunc("GET /emulator/v1/stats", s.handleStats)
	mux.HandleFunc("GET /emulator/v1/datasets/{datasetId}/tables/{tableName}/rows", s.handleRows)
	mux.HandleFunc("POST /emulator/v1/reset", s.handleReset)
	mux.HandleFunc("GET /emulator/v1/faults", s.handleGetFaults)
	mux.HandleFunc("POST /emulator/v1/faults", s.handleSetFaults)
	s.pageRoutes(mux)
	mux.Handle("/", s.plain(RouteNotFound, func(w *recorder, r *http.Request, _ string) {
		writeError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	}))
	return mux
}

// plain wraps a non-Power BI route: stats only.
func (s *Server) plain(route string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		h(rec, r, "")
		s.stats.request(route, rec.status)
		s.logRequest(r, route, rec.status)
	})
}

// api wraps a Power BI route: request id, workspace, bearer token, faults
// (for routes other than POST rows when AllRoutes), stats.
func (s *Server) api(route string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		defer func() {
			s.stats.request(route, rec.status)
			s.logRequest(r, route, rec.status)
		}()
		w.Header().Set("RequestId", s.requestID())
		workspace := ""
		if g := r.PathValue("groupId"); g != "" || strings.Contains(r.URL.Path, "/groups/") {
			if !uuidPattern.MatchString(g) {
				writeError(rec, http.StatusBadRequest, "InvalidRequest", fmt.Sprintf("groupId %q is not a valid UUID", g))
				return
			}
			workspace = strings.ToLower(g)
		}
		if !s.authorize(rec, r) || !s.member(rec, r, workspace) {
			return
		}
		if s.throttleIdentity(rec, r) {
			return
		}
		if route != RoutePostRows {
			f := s.currentFaults()
			if f.AllRoutes {
				if s.injectError(rec, r, f) {
					return
				}
				h(rec, r, workspace)
				if f.CutRate > 0 && s.roll(f.CutRate) && cutConnection(w) {
					s.stats.cut(requestEvent(r, rec.status))
				}
				return
			}
		}
		h(rec, r, workspace)
	})
}

func (s *Server) logRequest(r *http.Request, route string, status int) {
	if s.log.Enabled(r.Context(), -4) {
		s.log.Debug("emulator request", "method", r.Method, "path", r.URL.Path, "route", route, "status", status)
	}
}

// injectError applies Latency and ErrorRate; it reports whether it answered.
func (s *Server) injectError(w *recorder, r *http.Request, f Faults) bool {
	if f.Latency > 0 && !sleepCtx(r.Context(), f.Latency) {
		return true
	}
	if f.ErrorRate > 0 && s.roll(f.ErrorRate) {
		if s.roll(0.5) {
			writeError(w, http.StatusInternalServerError, "InternalServerError", "An internal error occurred (injected by the emulator).")
		} else {
			writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "The service is temporarily unavailable (injected by the emulator).")
		}
		s.stats.injected(requestEvent(r, w.status))
		return true
	}
	return false
}

// requestEvent names the dataset and table of r for an Event.
func requestEvent(r *http.Request, status int) Event {
	return Event{Status: status, Dataset: strings.ToLower(r.PathValue("datasetId")), Table: r.PathValue("tableName")}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) odataBase(workspace string) string {
	if workspace == "" {
		return s.url + "/v1.0/myorg/"
	}
	return s.url + "/v1.0/myorg/groups/" + workspace + "/"
}

// maxDrain bounds how much of an oversized body is read and thrown away.
const maxDrain = 256 << 20

// readBody reads a request body up to limit bytes (0: no limit). It sizes
// the buffer from Content-Length, so a POST rows body is one allocation that
// the stored rows then share.
func readBody(r *http.Request, limit int) ([]byte, bool, error) {
	if limit > 0 && r.ContentLength > int64(limit) {
		// Read the body before answering 413 (up to a bound) so the client
		// gets the answer instead of a connection reset mid-upload.
		if r.ContentLength <= maxDrain {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		return nil, true, nil
	}
	if r.ContentLength >= 0 {
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, false, fmt.Errorf("reading request body: %w", err)
		}
		return b, false, nil
	}
	rd := io.Reader(r.Body)
	if limit > 0 {
		rd = io.LimitReader(r.Body, int64(limit)+1)
	}
	b, err := io.ReadAll(rd)
	if err != nil {
		return nil, false, fmt.Errorf("reading request body: %w", err)
	}
	if limit > 0 && len(b) > limit {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxDrain))
		return nil, true, nil
	}
	return b, false, nil
}

// decodeStrict decodes a JSON body, refusing unknown properties the way the
// service does (400 with a details entry naming the property).
func decodeStrict(w http.ResponseWriter, body []byte, v any, typeName string) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON value")
	}
	if err == nil {
		return true
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		msg = fmt.Sprintf("The property %s does not exist on type 'Microsoft.PowerBI.ServiceContracts.Api.%s'. Make sure to only use property names that are defined by the type.", strings.ReplaceAll(name, `"`, "'"), typeName)
	}
	badRequest(w, msg, strings.ToLower(typeName[:1])+typeName[1:])
	return false
}

// createdJSON is the body of 201 Created.
type createdJSON struct {
	Context                string `json:"@odata.context"`
	ID                     string `json:"id"`
	Name                   string `json:"name"`
	DefaultRetentionPolicy string `json:"defaultRetentionPolicy"`
}

// datasetJSON is a Dataset as GetDataset(s) returns it.
type datasetJSON struct {
	Context                          string `json:"@odata.context,omitempty"`
	ID                               string `json:"id"`
	Name                             string `json:"name"`
	WebURL                           string `json:"webUrl"`
	AddRowsAPIEnabled                bool   `json:"addRowsAPIEnabled"`
	ConfiguredBy                     string `json:"configuredBy"`
	IsRefreshable                    bool   `json:"isRefreshable"`
	IsEffectiveIdentityRequired      bool   `json:"isEffectiveIdentityRequired"`
	IsEffectiveIdentityRolesRequired bool   `json:"isEffectiveIdentityRolesRequired"`
	IsOnPremGatewayRequired          bool   `json:"isOnPremGatewayRequired"`
	TargetStorageMode                string `json:"targetStorageMode"`
	CreatedDate                      string `json:"createdDate"`
}

func (s *Server) datasetJSON(d *dataset) datasetJSON {
	web := "https://app.powerbi.com/groups/me/datasets/" + d.id
	if d.workspace != "" {
		web = "https://app.powerbi.com/groups/" + d.workspace + "/datasets/" + d.id
	}
	return datasetJSON{
		ID: d.id, Name: d.name, WebURL: web, AddRowsAPIEnabled: d.push, ConfiguredBy: d.owner,
		TargetStorageMode: "Abf", CreatedDate: d.created.Format(time.RFC3339Nano),
	}
}

func (s *Server) postDataset(w *recorder, r *http.Request, workspace string) {
	body, tooBig, err := readBody(r, s.cfg.Limits.MaxBodyBytes)
	if err != nil {
		badRequest(w, err.Error(), "dataset")
		return
	}
	if tooBig {
		writeError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", fmt.Sprintf("The request body is larger than %d bytes.", s.cfg.Limits.MaxBodyBytes))
		return
	}
	var req CreateDatasetRequest
	if !decodeStrict(w, body, &req, "Dataset") {
		return
	}
	if s.cfg.CreationRetired {
		// The code is the one Power BI reports for retired features; the
		// body's exact form is not documented (pbi.error, like its other
		// service-side refusals).
		writeJSON(w, http.StatusBadRequest, errorBody{Error: apiError{
			Code:     "FeatureDeprecatedError",
			PBIError: &pbiError{Code: "FeatureDeprecatedError", Parameters: map[string]any{}, Details: []any{}, ExceptionCulprit: 1},
		}})
		return
	}
	d, err := s.buildDataset(workspace, req, r.URL.Query().Get("defaultRetentionPolicy"))
	var ir *InvalidRequestError
	switch {
	case errors.As(err, &ir):
		writeError(w, http.StatusBadRequest, "InvalidRequest", ir.Message)
		return
	case err != nil:
		badRequest(w, err.Error(), "dataset")
		return
	}
	d.owner = s.subject(r)
	s.addDataset(d)
	writeJSON(w, http.StatusCreated, createdJSON{
		Context: s.odataBase(workspace) + "$metadata#datasets/$entity",
		ID:      d.id, Name: d.name, DefaultRetentionPolicy: d.retention,
	})
}

func (s *Server) getDatasets(w *recorder, _ *http.Request, workspace string) {
	s.mu.RLock()
	list := make([]*dataset, 0, len(s.datasets))
	for _, d := range s.datasets {
		if d.workspace == workspace {
			list = append(list, d)
		}
	}
	s.mu.RUnlock()
	sort.Slice(list, func(i, j int) bool {
		if !list[i].created.Equal(list[j].created) {
			return list[i].created.Before(list[j].created)
		}
		return list[i].id < list[j].id
	})
	value := make([]datasetJSON, len(list))
	for i, d := range list {
		value[i] = s.datasetJSON(d)
	}
	writeJSON(w, http.StatusOK, struct {
		Context string        `json:"@odata.context"`
		Value   []datasetJSON `json:"value"`
	}{s.odataBase(workspace) + "$metadata#datasets", value})
}

func datasetNotFound(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, "ItemNotFound", fmt.Sprintf("Dataset %s is not found", id))
}

func notPush(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, "ItemNotFound", fmt.Sprintf("Dataset %s is not Push API dataset.", id))
}

func tableNotFound(w http.ResponseWriter, table, id string) {
	writeError(w, http.StatusNotFound, "ItemNotFound", fmt.Sprintf("Table '%s' not found in dataset '%s'", table, id))
}

func (s *Server) getDataset(w *recorder, r *http.Request, workspace string) {
	id := r.PathValue("datasetId")
	d := s.lookup(workspace, id)
	if d == nil {
		datasetNotFound(w, id)
		return
	}
	v := s.datasetJSON(d)
	v.Context = s.odataBase(workspace) + "$metadata#datasets/$entity"
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) deleteDataset(w *recorder, r *http.Request, workspace string) {
	id := r.PathValue("datasetId")
	d := s.lookup(workspace, id)
	if d == nil {
		datasetNotFound(w, id)
		return
	}
	s.mu.Lock()
	delete(s.datasets, d.id)
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// pushDataset finds a push dataset or answers 404.
func (s *Server) pushDataset(w http.ResponseWriter, r *http.Request, workspace string) *dataset {
	id := r.PathValue("datasetId")
	d := s.lookup(workspace, id)
	if d == nil {
		datasetNotFound(w, id)
		return nil
	}
	if !d.push {
		notPush(w, d.id)
		return nil
	}
	return d
}

func (s *Server) getTables(w *recorder, r *http.Request, workspace string) {
	d := s.pushDataset(w, r, workspace)
	if d == nil {
		return
	}
	d.mu.Lock()
	value := make([]any, len(d.tables))
	for i, t := range d.tables {
		if s.cfg.TablesWithoutColumns {
			value[i] = struct {
				Name string `json:"name"`
			}{t.name}
		} else {
			value[i] = t.schema.def
		}
	}
	d.mu.Unlock()
	writeJSON(w, http.StatusOK, struct {
		Context string `json:"@odata.context"`
		Value   []any  `json:"value"`
	}{s.odataBase(workspace) + "$metadata#tables", value})
}

func (s *Server) putTable(w *recorder, r *http.Request, workspace string) {
	d := s.pushDataset(w, r, workspace)
	if d == nil {
		return
	}
	name := r.PathValue("tableName")
	body, tooBig, err := readBody(r, s.cfg.Limits.MaxBodyBytes)
	if err != nil || tooBig {
		badRequest(w, "the request body could not be read or is too large", "table")
		return
	}
	var t Table
	if !decodeStrict(w, body, &t, "Table") {
		return
	}
	if t.Name == "" {
		t.Name = name
	}
	if t.Name != name {
		badRequest(w, fmt.Sprintf("the table name in the body (%q) differs from the one in the URL (%q)", t.Name, name), "table")
		return
	}
	if err := s.checkTable(t); err != nil {
		badRequest(w, err.Error(), "table")
		return
	}
	if err := checkStreamingColumns(d.mode, t); err != nil {
		writeError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	sc, err := newSchema(t)
	if err != nil {
		badRequest(w, err.Error(), "table")
		return
	}
	d.mu.Lock()
	tb := d.table(name)
	if tb != nil {
		tb.schema = sc
	}
	d.mu.Unlock()
	if tb == nil {
		tableNotFound(w, name, d.id)
		return
	}
	writeJSON(w, http.StatusOK, sc.def)
}

func (s *Server) deleteRows(w *recorder, r *http.Request, workspace string) {
	d := s.pushDataset(w, r, workspace)
	if d == nil {
		return
	}
	name := r.PathValue("tableName")
	d.mu.Lock()
	tb := d.table(name)
	if tb != nil {
		tb.clearRows()
	}
	d.mu.Unlock()
	if tb == nil {
		tableNotFound(w, name, d.id)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// throttle answers 429 with Retry-After and the error JSON. d.mu is held.
func (s *Server) throttle(w http.ResponseWriter, d *dataset, rec PostRecord, wait time.Duration, message string) {
	sec := retryAfterSeconds(wait)
	rec.Status, rec.RetryAfter = http.StatusTooManyRequests, sec
	d.record(rec, s.cfg.HistoryLimit)
	d.stats.Throttled++
	s.stats.throttled(Event{Status: http.StatusTooManyRequests, Dataset: d.id, Table: rec.Table, Reason: rec.Reason, RetryAfter: sec})
	setRetryAfter(w, sec)
	writeError(w, http.StatusTooManyRequests, "TooManyRequests", message)
}

// identityThrottleMessage is the body of the REST API's per-user throttling
// (seen with Retry-After: 3392; github.com/RuiRomano/pbimonitor/issues/58):
// a bare message, no error object, no dataset.
const identityThrottleMessage = "You have exceeded the amount of requests allowed in the current time frame and further requests will fail. Retry in %d seconds."

// throttleIdentity answers 429 when Faults.ThrottleIdentity throttles the
// request's identity; it reports whether it answered.
func (s *Server) throttleIdentity(w *recorder, r *http.Request) bool {
	f := s.currentFaults()
	now := s.now()
	if f.ThrottleIdentity == "" || !now.Before(f.ThrottleUntil) || s.subject(r) != f.ThrottleIdentity {
		return false
	}
	wait := f.ThrottleRetryAfter
	if wait <= 0 {
		wait = f.ThrottleUntil.Sub(now)
	}
	sec := retryAfterSeconds(wait)
	s.stats.throttled(Event{Status: http.StatusTooManyRequests, Reason: "identity", RetryAfter: sec})
	setRetryAfter(w, sec)
	writeJSON(w, http.StatusTooManyRequests, struct {
		Message string `json:"message"`
	}{fmt.Sprintf(identityThrottleMessage, sec)})
	return true
}

func (s *Server) postRows(w *recorder, r *http.Request, workspace string) {
	arrived := s.now()
	d := s.pushDataset(w, r, workspace)
	if d == nil {
		return
	}
	name := r.PathValue("tableName")
	lim := s.cfg.Limits
	f := s.currentFaults()
	rec := PostRecord{Arrived: arrived, Table: name}
	now := arrived.UnixNano()

	d.mu.Lock()
	tb := d.table(name)
	if tb == nil {
		d.mu.Unlock()
		tableNotFound(w, name, d.id)
		return
	}
	sc := tb.schema
	if f.ThrottleIdentity == "" && arrived.Before(f.ThrottleUntil) {
		wait := f.ThrottleRetryAfter
		if wait <= 0 {
			wait = f.ThrottleUntil.Sub(arrived)
		}
		rec.Reason = "throttle_fault"
		s.throttle(w, d, rec, wait, "Too many requests for this dataset (throttling injected by the emulator). Retry your push later.")
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()

	if s.injectError(w, r, Faults{ErrorRate: f.ErrorRate}) {
		rec.Status, rec.Reason = w.status, "error_fault"
		d.mu.Lock()
		d.record(rec, s.cfg.HistoryLimit)
		d.mu.Unlock()
		return
	}

	d.mu.Lock()
	if lim.MaxInFlight > 0 && d.inFlight >= lim.MaxInFlight {
		rec.Reason = "in_flight"
		s.throttle(w, d, rec, time.Second, fmt.Sprintf("Too many pending requests: at most %d POST rows requests per dataset may be in flight.", lim.MaxInFlight))
		d.mu.Unlock()
		return
	}
	if lim.RequestsPerWindow > 0 {
		if wait := d.quota.requests.wait(now, lim.RequestWindow, 1, lim.RequestsPerWindow); wait > 0 {
			rec.Reason = "requests_per_window"
			s.throttle(w, d, rec, wait, fmt.Sprintf("You are over your limit of %d POST rows requests per %s for this dataset. Retry your push later.", lim.RequestsPerWindow, lim.RequestWindow))
			d.mu.Unlock()
			return
		}
	}
	largeRule := lim.LargeTableRows > 0 && lim.LargeTableRequestsPerWindow > 0
	if largeRule && tb.count() >= lim.LargeTableRows {
		if wait := d.quota.large.wait(now, lim.LargeTableWindow, 1, lim.LargeTableRequestsPerWindow); wait > 0 {
			rec.Reason = "large_table"
			s.throttle(w, d, rec, wait, fmt.Sprintf("Table '%s' holds %d rows or more: at most %d POST rows requests per %s are allowed for this dataset. Retry your push later.", name, lim.LargeTableRows, lim.LargeTableRequestsPerWindow, lim.LargeTableWindow))
			d.mu.Unlock()
			return
		}
	}
	if lim.RequestsPerWindow > 0 {
		d.quota.requests.add(now, 1)
	}
	if largeRule {
		d.quota.large.prune(now, lim.LargeTableWindow)
		d.quota.large.add(now, 1)
	}
	d.inFlight++
	if d.inFlight > d.stats.MaxInFlight {
		d.stats.MaxInFlight = d.inFlight
	}
	s.stats.inFlight(d.inFlight)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.inFlight--
		d.mu.Unlock()
	}()

	if f.Latency > 0 && !sleepCtx(r.Context(), f.Latency) {
		return
	}
	body, tooBig, err := readBody(r, lim.MaxBodyBytes)
	if err != nil || tooBig {
		rec.Status = http.StatusRequestEntityTooLarge
		if err != nil {
			rec.Status = http.StatusBadRequest
			badRequest(w, err.Error(), "rows")
		} else {
			writeError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", fmt.Sprintf("The request body is larger than the maximum of %d bytes.", lim.MaxBodyBytes))
		}
		d.mu.Lock()
		d.record(rec, s.cfg.HistoryLimit)
		d.mu.Unlock()
		return
	}
	p := rowsParser{b: body, sc: sc, maxRows: lim.MaxRowsPerRequest, maxStr: lim.MaxStringLength, reject: s.cfg.UnknownColumns == UnknownColumnsReject}
	rows, perr := p.parse()
	if perr != nil {
		rec.Status = http.StatusBadRequest
		d.mu.Lock()
		d.record(rec, s.cfg.HistoryLimit)
		d.mu.Unlock()
		badRequest(w, perr.msg, perr.target)
		return
	}
	n := len(rows)
	rec.Rows = n

	d.mu.Lock()
	if lim.RowsPerWindow > 0 {
		if wait := d.quota.rows.wait(now, lim.RowsWindow, n, lim.RowsPerWindow); wait > 0 {
			rec.Reason = "rows_per_window"
			s.throttle(w, d, rec, wait, fmt.Sprintf("You are over your rows per hour limit for this dataset (%d rows per %s). Retry your push later.", lim.RowsPerWindow, lim.RowsWindow))
			d.mu.Unlock()
			return
		}
	}
	if d.retention == RetentionNone && lim.NoneRetentionMaxRows > 0 && tb.count()+n > lim.NoneRetentionMaxRows {
		rec.Status, rec.Reason = http.StatusBadRequest, "table_full"
		d.record(rec, s.cfg.HistoryLimit)
		d.mu.Unlock()
		badRequest(w, fmt.Sprintf("Table '%s' holds %d rows; adding %d would exceed the maximum of %d rows for a dataset without a retention policy.", name, tb.count(), n, lim.NoneRetentionMaxRows), "rows")
		return
	}
	if lim.RowsPerWindow > 0 {
		d.quota.rows.add(now, n)
	}
	if s.cfg.DiscardRows {
		tb.discarded += n
	} else {
		tb.rows = append(tb.rows, rows...)
	}
	if d.retention == RetentionBasicFIFO && lim.FIFORows > 0 {
		tb.trimTo(lim.FIFORows)
	}
	rec.Status = http.StatusOK
	d.record(rec, s.cfg.HistoryLimit)
	d.stats.RowsAccepted += int64(n)
	d.stats.PostRows++
	d.mu.Unlock()
	s.stats.accepted(n, p.dropped)

	if f.CutRate > 0 && s.roll(f.CutRate) && cutConnection(w) {
		w.status, w.cut = http.StatusOK, true
		s.stats.cut(requestEvent(r, http.StatusOK))
		return
	}
	w.WriteHeader(http.StatusOK)
}
