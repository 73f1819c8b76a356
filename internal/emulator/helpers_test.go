package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is an injected clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a running emulator plus a client with a valid token.
type env struct {
	t     *testing.T
	s     *Server
	c     *http.Client
	tok   string
	clock *fakeClock
}

// start runs an emulator with a fake clock (unless mutate sets Now) and
// the default limits changed by mutate.
func start(t *testing.T, mutate func(*Config)) *env {
	t.Helper()
	clock := newFakeClock()
	cfg := DefaultConfig()
	cfg.Now = clock.Now
	cfg.Seed = 1
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	// a token that outlives any fake-clock test
	return &env{t: t, s: s, c: s.Client(), tok: s.IssueTokenFor(365 * 24 * time.Hour), clock: clock}
}

type response struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func (r response) retryAfter() int {
	n, _ := strconv.Atoi(r.header.Get("Retry-After"))
	return n
}

// do sends a request with the env's token; body is a string, []byte or a
// value to marshal.
func (e *env) do(method, path string, body any) response {
	return e.doToken(method, path, body, e.tok)
}

func (e *env) doToken(method, path string, body any, token string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.s.URL()+path, rd)
	if err != nil {
		e.t.Fatalf("request: %v", err)
	}
	switch {
	case strings.Contains(token, " "): // a whole Authorization value
		req.Header.Set("Authorization", token)
	case token != "":
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.c.Do(req)
	if err != nil {
		return response{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

// productTable is the table of Microsoft's example.
func productTable() Table {
	return Table{Name: "Product", Columns: []Column{
		{Name: "ProductID", DataType: "Int64"},
		{Name: "Name", DataType: "string"},
		{Name: "Category", DataType: "string"},
		{Name: "IsCompete", DataType: "bool"},
		{Name: "ManufacturedOn", DataType: "DateTime"},
		{Name: "Sales", DataType: "Int64", FormatString: "Currency"},
		{Name: "Price", DataType: "Double"},
		{Name: "Cost", DataType: "Decimal"},
	}}
}

// dataset creates a dataset with the product table and a small "T" table
// (one Int64 column "n") in My workspace.
func (e *env) dataset(retention string) string {
	e.t.Helper()
	id, err := e.s.CreateDataset("", CreateDatasetRequest{Name: "Sales", Tables: []Table{
		productTable(),
		{Name: "T", Columns: []Column{{Name: "n", DataType: "Int64"}}},
	}}, retention)
	if err != nil {
		e.t.Fatalf("CreateDataset: %v", err)
	}
	return id
}

// rowsBody is {"rows":[{"n":from},...]} with count rows.
func rowsBody(from, count int) []byte {
	var b bytes.Buffer
	b.Grow(count*12 + 16)
	b.WriteString(`{"rows":[`)
	for i := range count {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"n":%d}`, from+i)
	}
	b.WriteString("]}")
	return b.Bytes()
}

func rowsPath(id, table string) string {
	return "/v1.0/myorg/datasets/" + id + "/tables/" + table + "/rows"
}

// post sends count rows to table T.
func (e *env) post(id string, from, count int) response {
	e.t.Helper()
	return e.do("POST", rowsPath(id, "T"), rowsBody(from, count))
}

// wantError checks Power BI's error JSON {"error":{"code":...}}.
func wantError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("request failed: %v", r.err)
	}
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			PBI     *struct {
				Code string `json:"code"`
			} `json:"pbi.error"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &eb); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, r.body)
	}
	if eb.Error.Code != code {
		t.Fatalf("error.code = %q, want %q; body %s", eb.Error.Code, code, r.body)
	}
	if eb.Error.Message == "" && eb.Error.PBI == nil {
		t.Fatalf("error has neither message nor pbi.error: %s", r.body)
	}
}

func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("request failed: %v", r.err)
	}
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
}
