package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

const group = "f089354e-8366-4e18-aea3-4cb4a3a50b48"

// TestDatasetLifecycle walks every route in both path shapes.
func TestDatasetLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prefix string
	}{
		{"my workspace", "/v1.0/myorg"},
		{"group workspace", "/v1.0/myorg/groups/" + group},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, nil)
			create := `{"name":"SalesMarketing","defaultMode":"Push","tables":[{"name":"Product","columns":[
				{"name":"ProductID","dataType":"Int64"},{"name":"Name","dataType":"string"},
				{"name":"IsCompete","dataType":"bool"},{"name":"ManufacturedOn","dataType":"DateTime"},
				{"name":"Sales","dataType":"Int64","formatString":"Currency"}]}]}`
			r := e.do("POST", tc.prefix+"/datasets?defaultRetentionPolicy=basicFIFO", create)
			wantStatus(t, r, http.StatusCreated)
			var created map[string]any
			if err := json.Unmarshal(r.body, &created); err != nil {
				t.Fatal(err)
			}
			id, _ := created["id"].(string)
			if !uuidPattern.MatchString(id) || created["name"] != "SalesMarketing" || created["defaultRetentionPolicy"] != "basicFIFO" {
				t.Fatalf("create answered %s", r.body)
			}
			if ctx, _ := created["@odata.context"].(string); !strings.HasSuffix(ctx, "$metadata#datasets/$entity") {
				t.Fatalf("@odata.context = %q", ctx)
			}

			r = e.do("GET", tc.prefix+"/datasets", nil)
			wantStatus(t, r, http.StatusOK)
			var list struct {
				Context string           `json:"@odata.context"`
				Value   []map[string]any `json:"value"`
			}
			if err := json.Unmarshal(r.body, &list); err != nil {
				t.Fatal(err)
			}
			if len(list.Value) != 1 || list.Value[0]["id"] != id || list.Value[0]["addRowsAPIEnabled"] != true || list.Context == "" {
				t.Fatalf("list = %s", r.body)
			}

			r = e.do("GET", tc.prefix+"/datasets/"+id, nil)
			wantStatus(t, r, http.StatusOK)

			r = e.do("GET", tc.prefix+"/datasets/"+id+"/tables", nil)
			wantStatus(t, r, http.StatusOK)
			var tables struct {
				Value []Table `json:"value"`
			}
			if err := json.Unmarshal(r.body, &tables); err != nil {
				t.Fatal(err)
			}
			if len(tables.Value) != 1 || tables.Value[0].Name != "Product" || len(tables.Value[0].Columns) != 5 {
				t.Fatalf("tables = %s", r.body)
			}

			rows := `{"rows":[
				{"ProductID":1,"Name":"Adjustable Race","IsCompete":true,"ManufacturedOn":"07/30/2014"},
				{"ProductID":2,"Name":"LL Crankarm","IsCompete":true,"ManufacturedOn":"2014-07-30T10:00:00Z","Sales":null}]}`
			r = e.do("POST", tc.prefix+"/datasets/"+id+"/tables/Product/rows", rows)
			wantStatus(t, r, http.StatusOK)
			if len(r.body) != 0 {
				t.Fatalf("POST rows body = %q, want empty", r.body)
			}
			got := e.s.Rows(id, "Product")
			if len(got) != 2 || !strings.Contains(string(got[1]), "LL Crankarm") {
				t.Fatalf("stored rows = %s", got)
			}

			put := `{"name":"Product","columns":[{"name":"ProductID","dataType":"Int64"},{"name":"NewColumn","dataType":"string"}]}`
			r = e.do("PUT", tc.prefix+"/datasets/"+id+"/tables/Product", put)
			wantStatus(t, r, http.StatusOK)
			var putBack Table
			if err := json.Unmarshal(r.body, &putBack); err != nil || putBack.Name != "Product" || len(putBack.Columns) != 2 {
				t.Fatalf("PUT table answered %s (%v)", r.body, err)
			}
			r = e.do("POST", tc.prefix+"/datasets/"+id+"/tables/Product/rows", `{"rows":[{"NewColumn":"x"}]}`)
			wantStatus(t, r, http.StatusOK)

			r = e.do("DELETE", tc.prefix+"/datasets/"+id+"/tables/Product/rows", nil)
			wantStatus(t, r, http.StatusOK)
			if n := len(e.s.Rows(id, "Product")); n != 0 {
				t.Fatalf("%d rows after DELETE rows", n)
			}

			r = e.do("DELETE", tc.prefix+"/datasets/"+id, nil)
			wantStatus(t, r, http.StatusOK)
			wantError(t, e.do("GET", tc.prefix+"/datasets/"+id, nil), http.StatusNotFound, "ItemNotFound")

			st := e.s.Stats()
			if st.Requests[RoutePostDataset][201] != 1 || st.Requests[RoutePostRows][200] != 2 || st.Requests[RouteDeleteDataset][200] != 1 {
				t.Fatalf("stats requests = %v", st.Requests)
			}
		})
	}
}

// TestWorkspacesAreSeparate: a dataset is found only through its workspace.
func TestWorkspacesAreSeparate(t *testing.T) {
	e := start(t, nil)
	id, err := e.s.CreateDataset(group, CreateDatasetRequest{Name: "d", Tables: []Table{productTable()}}, "")
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, e.do("GET", "/v1.0/myorg/datasets/"+id, nil), http.StatusNotFound, "ItemNotFound")
	wantStatus(t, e.do("GET", "/v1.0/myorg/groups/"+group+"/datasets/"+id, nil), http.StatusOK)
	wantError(t, e.do("GET", "/v1.0/myorg/groups/not-a-uuid/datasets", nil), http.StatusBadRequest, "InvalidRequest")
}

// TestCreateDatasetValidation covers the schema rules of create and put.
func TestCreateDatasetValidation(t *testing.T) {
	cols := func(n int) []Column {
		c := make([]Column, n)
		for i := range c {
			c[i] = Column{Name: fmt.Sprintf("c%d", i), DataType: "String"}
		}
		return c
	}
	tables := func(n int) []Table {
		ts := make([]Table, n)
		for i := range ts {
			ts[i] = Table{Name: fmt.Sprintf("t%d", i), Columns: cols(1)}
		}
		return ts
	}
	for _, tc := range []struct {
		name   string
		body   any
		query  string
		status int
		code   string
	}{
		{"ok with 75 tables of 75 columns", CreateDatasetRequest{Name: "d", Tables: append(tables(74), Table{Name: "wide", Columns: cols(75)})}, "", 201, ""},
		{"76 tables", CreateDatasetRequest{Name: "d", Tables: tables(76)}, "", 400, "BadRequest"},
		{"76 columns", CreateDatasetRequest{Name: "d", Tables: []Table{{Name: "wide", Columns: cols(76)}}}, "", 400, "BadRequest"},
		{"table name with a dot", CreateDatasetRequest{Name: "d", Tables: []Table{{Name: "a.b", Columns: cols(1)}}}, "", 400, "BadRequest"},
		{"table name of 101 chars", CreateDatasetRequest{Name: "d", Tables: []Table{{Name: strings.Repeat("x", 101), Columns: cols(1)}}}, "", 400, "BadRequest"},
		{"table name with allowed punctuation", CreateDatasetRequest{Name: "d", Tables: []Table{{Name: "Sales #1 - EU @ôü_^~", Columns: cols(1)}}}, "", 201, ""},
		{"unknown data type", CreateDatasetRequest{Name: "d", Tables: []Table{{Name: "t", Columns: []Column{{Name: "x", DataType: "Guid"}}}}}, "", 400, "BadRequest"},
		{"type names case-insensitive", CreateDatasetRequest{Name: "d", Tables: []Table{{Name: "t", Columns: []Column{
			{Name: "a", DataType: "int64"}, {Name: "b", DataType: "BOOLEAN"}, {Name: "c", DataType: "dateTime"},
			{Name: "d", DataType: "decimal"}, {Name: "e", DataType: "double"}, {Name: "f", DataType: "Bool"}}}}}, "", 201, ""},
		{"duplicate column", CreateDatasetRequest{Name: "d", Tables: []Table{{Name: "t", Columns: []Column{{Name: "x", DataType: "String"}, {Name: "x", DataType: "Int64"}}}}}, "", 400, "BadRequest"},
		{"missing name", `{"tables":[]}`, "", 400, "BadRequest"},
		{"missing tables", `{"name":"d"}`, "", 400, "BadRequest"},
		{"unknown property", `{"name":"d","tables":[],"compatibilityLevel":1550}`, "", 400, "BadRequest"},
		{"not JSON", `{"name":`, "", 400, "BadRequest"},
		{"bad mode", `{"name":"d","defaultMode":"Import","tables":[]}`, "", 400, "BadRequest"},
		{"bad retention", CreateDatasetRequest{Name: "d", Tables: tables(1)}, "?defaultRetentionPolicy=forever", 400, "BadRequest"},
		{"streaming mode", `{"name":"d","defaultMode":"Streaming","tables":[{"name":"t","columns":[]}]}`, "", 201, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, nil)
			r := e.do("POST", "/v1.0/myorg/datasets"+tc.query, tc.body)
			if tc.code == "" {
				wantStatus(t, r, tc.status)
				return
			}
			wantError(t, r, tc.status, tc.code)
		})
	}
}

// TestUnknownDatasetAndTable: 404 ItemNotFound on every dataset route, and
// a dataset that is not a push dataset refuses rows.
func TestUnknownDatasetAndTable(t *testing.T) {
	e := start(t, nil)
	id := e.dataset("")
	streaming, err := e.s.CreateDataset("", CreateDatasetRequest{Name: "s", DefaultMode: "Streaming", Tables: []Table{productTable()}}, "")
	if err != nil {
		t.Fatal(err)
	}
	missing := "00000000-0000-4000-8000-00000000dead"
	for _, tc := range []struct {
		name, method, path string
		body               any
	}{
		{"get dataset", "GET", "/v1.0/myorg/datasets/" + missing, nil},
		{"delete dataset", "DELETE", "/v1.0/myorg/datasets/" + missing, nil},
		{"get tables", "GET", "/v1.0/myorg/datasets/" + missing + "/tables", nil},
		{"put table", "PUT", "/v1.0/myorg/datasets/" + missing + "/tables/T", `{"name":"T","columns":[]}`},
		{"post rows, unknown dataset", "POST", rowsPath(missing, "T"), `{"rows":[]}`},
		{"post rows, unknown table", "POST", rowsPath(id, "Nope"), `{"rows":[]}`},
		{"post rows, table name case differs", "POST", rowsPath(id, "product"), `{"rows":[]}`},
		{"delete rows, unknown table", "DELETE", rowsPath(id, "Nope"), nil},
		{"put table, unknown table", "PUT", "/v1.0/myorg/datasets/" + id + "/tables/Nope", `{"name":"Nope","columns":[]}`},
		{"post rows, not a push dataset", "POST", rowsPath(streaming, "Product"), `{"rows":[]}`},
		{"get tables, not a push dataset", "GET", "/v1.0/myorg/datasets/" + streaming + "/tables", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, e.do(tc.method, tc.path, tc.body), http.StatusNotFound, "ItemNotFound")
		})
	}
	r := e.do("POST", rowsPath(streaming, "Product"), `{"rows":[]}`)
	if !strings.Contains(string(r.body), "is not Push API dataset") {
		t.Fatalf("not-push message = %s", r.body)
	}
	r = e.do("GET", "/v1.0/myorg/datasets/"+streaming, nil)
	if !strings.Contains(string(r.body), `"addRowsAPIEnabled":false`) {
		t.Fatalf("streaming dataset = %s", r.body)
	}
}

// TestAuth: missing or unknown token 401, expired 403 TokenExpired.
func TestAuth(t *testing.T) {
	e := start(t, nil)
	expired := e.s.IssueTokenFor(time.Minute)
	e.clock.Advance(2 * time.Minute)
	for _, tc := range []struct {
		name   string
		token  string
		header string
		status int
		code   string
	}{
		{"missing", "", "", 401, "PowerBINotAuthorizedException"},
		{"unknown", "nope", "", 401, "PowerBINotAuthorizedException"},
		{"not bearer", "", "Basic dXNlcjpwYXNz", 401, "PowerBINotAuthorizedException"},
		{"expired", expired, "", 403, "TokenExpired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auth := tc.token
			if tc.header != "" {
				auth = tc.header
			}
			wantError(t, e.doToken("GET", "/v1.0/myorg/datasets", nil, auth), tc.status, tc.code)
		})
	}
	wantStatus(t, e.do("GET", "/v1.0/myorg/datasets", nil), http.StatusOK)
}

// TestGetTablesWithoutColumns: with TablesWithoutColumns, GetTables lists
// each table by its name only ({"value":[{"name":"Product"}]}, Power BI's
// own example), while the table keeps its columns.
func TestGetTablesWithoutColumns(t *testing.T) {
	e := start(t, func(c *Config) { c.TablesWithoutColumns = true })
	id := e.dataset(RetentionNone)
	r := e.do("GET", "/v1.0/myorg/datasets/"+id+"/tables", nil)
	wantStatus(t, r, http.StatusOK)
	var got struct {
		Value []map[string]any `json:"value"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Value) != 2 {
		t.Fatalf("tables = %s", r.body)
	}
	for _, tb := range got.Value {
		if len(tb) != 1 || tb["name"] == nil {
			t.Errorf("table %v: want only its name", tb)
		}
	}
	if cols := e.s.Columns(id, "T"); len(cols) != 1 || cols[0].Name != "n" {
		t.Errorf("columns held = %v, want n", cols)
	}
}

// TestCreationRetired: with CreationRetired every dataset creation answers
// 400 FeatureDeprecatedError, while existing datasets keep taking rows.
func TestCreationRetired(t *testing.T) {
	e := start(t, func(c *Config) { c.CreationRetired = true })
	id := e.dataset(RetentionNone) // made before the retirement, in-process
	wantError(t, e.do("POST", "/v1.0/myorg/datasets", CreateDatasetRequest{Name: "late", Tables: []Table{productTable()}}), http.StatusBadRequest, "FeatureDeprecatedError")
	wantStatus(t, e.post(id, 0, 1), http.StatusOK)
}
