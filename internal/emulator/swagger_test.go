package emulator

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// swaggerPath is Microsoft's OpenAPI file, copied unchanged into this
// package's testdata (testdata/powerbi-swagger.NOTICE.md says from where, and
// its licence) so that a fresh clone tests with nothing beside it.
const swaggerPath = "testdata/powerbi-swagger.json"

// specSchema is the subset of a Swagger 2.0 schema the checker reads.
type specSchema struct {
	Ref        string                `json:"$ref"`
	Type       string                `json:"type"`
	Required   []string              `json:"required"`
	Properties map[string]specSchema `json:"properties"`
	Items      *specSchema           `json:"items"`
	AllOf      []specSchema          `json:"allOf"`
	Enum       []any                 `json:"enum"`
}

// specChecker holds bodies against the spec's definitions: required
// properties present, types matching, no undeclared property except the
// documented @odata.context and defaultRetentionPolicy. Property names are
// matched case-insensitively: the spec itself spells some Dataset
// properties with a capital (IsRefreshable, CreatedDate) while its own
// examples and the service use camelCase (isRefreshable).
type specChecker struct {
	defs map[string]specSchema
}

func loadSpec(t *testing.T) *specChecker {
	t.Helper()
	abs, _ := filepath.Abs(swaggerPath)
	b, err := os.ReadFile(swaggerPath)
	if err != nil {
		t.Fatalf("the Power BI swagger file is needed at %s (see testdata/powerbi-swagger.NOTICE.md): %v", abs, err)
	}
	var doc struct {
		Definitions map[string]specSchema `json:"definitions"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parsing %s: %v", abs, err)
	}
	return &specChecker{defs: doc.Definitions}
}

// allowedExtra are keys the service sends that the spec does not declare.
var allowedExtra = map[string]bool{"@odata.context": true, "defaultretentionpolicy": true}

// flatten resolves $ref and merges allOf into one object schema.
func (c *specChecker) flatten(s specSchema) (specSchema, error) {
	if s.Ref != "" {
		name := strings.TrimPrefix(s.Ref, "#/definitions/")
		d, ok := c.defs[name]
		if !ok {
			return s, fmt.Errorf("unknown definition %s", s.Ref)
		}
		return c.flatten(d)
	}
	if len(s.AllOf) == 0 {
		return s, nil
	}
	out := specSchema{Type: "object", Properties: map[string]specSchema{}, Required: s.Required}
	for k, v := range s.Properties {
		out.Properties[k] = v
	}
	for _, part := range s.AllOf {
		p, err := c.flatten(part)
		if err != nil {
			return out, err
		}
		for k, v := range p.Properties {
			out.Properties[k] = v
		}
		out.Required = append(out.Required, p.Required...)
	}
	return out, nil
}

// check returns every mismatch of v (decoded JSON) against s, at path.
func (c *specChecker) check(path string, s specSchema, v any) []string {
	s, err := c.flatten(s)
	if err != nil {
		return []string{path + ": " + err.Error()}
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, path+": "+fmt.Sprintf(format, args...)) }
	typ := s.Type
	if typ == "" && s.Properties != nil {
		typ = "object"
	}
	switch typ {
	case "string":
		if _, ok := v.(string); !ok {
			bad("want a string, got %T", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want a boolean, got %T", v)
		}
	case "integer":
		if f, ok := v.(float64); !ok || f != math.Trunc(f) {
			bad("want an integer, got %v", v)
		}
	case "number":
		if _, ok := v.(float64); !ok {
			bad("want a number, got %T", v)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("want an array, got %T", v)
			break
		}
		if s.Items != nil {
			for i, item := range a {
				problems = append(problems, c.check(fmt.Sprintf("%s[%d]", path, i), *s.Items, item)...)
			}
		}
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("want an object, got %T", v)
			break
		}
		props := map[string]specSchema{}
		for k, p := range s.Properties {
			props[strings.ToLower(k)] = p
		}
		for _, r := range s.Required {
			found := false
			for k := range m {
				if strings.EqualFold(k, r) {
					found = true
				}
			}
			if !found {
				bad("required property %q missing", r)
			}
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p, declared := props[strings.ToLower(k)]
			if !declared {
				if s.Properties != nil && !allowedExtra[strings.ToLower(k)] {
					bad("property %q is not declared", k)
				}
				continue
			}
			problems = append(problems, c.check(path+"."+k, p, m[k])...)
		}
	}
	if len(s.Enum) > 0 {
		found := false
		for _, e := range s.Enum {
			if e == v {
				found = true
			}
		}
		if !found {
			bad("%v is not one of %v", v, s.Enum)
		}
	}
	return problems
}

func (c *specChecker) mustMatch(t *testing.T, def string, body []byte) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s body is not JSON: %v: %s", def, err, body)
	}
	if problems := c.check(def, specSchema{Ref: "#/definitions/" + def}, v); len(problems) > 0 {
		t.Fatalf("body does not match %s:\n  %s\nbody: %s", def, strings.Join(problems, "\n  "), body)
	}
}

// TestSpecChecker proves the checker finds what it must.
func TestSpecChecker(t *testing.T) {
	c := loadSpec(t)
	for _, tc := range []struct {
		name, def, body, want string
	}{
		{"missing required", "Column", `{"name":"a"}`, `required property "dataType" missing`},
		{"wrong type", "Column", `{"name":"a","dataType":1}`, "want a string"},
		{"undeclared", "Table", `{"name":"a","columns":[],"colour":"red"}`, `property "colour" is not declared`},
		{"nested", "Tables", `{"value":[{"name":"a","columns":[{"name":"x","dataType":"Int64","isHidden":"no"}]}]}`, "Tables.value[0].columns[0].isHidden: want a boolean"},
		{"enum", "CreateDatasetRequest", `{"name":"d","tables":[],"defaultMode":"Import"}`, "is not one of"},
		{"allOf", "Dataset", `{"name":"d"}`, `required property "id" missing`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v any
			if err := json.Unmarshal([]byte(tc.body), &v); err != nil {
				t.Fatal(err)
			}
			got := strings.Join(c.check(tc.def, specSchema{Ref: "#/definitions/" + tc.def}, v), "\n")
			if !strings.Contains(got, tc.want) {
				t.Fatalf("problems %q, want %q", got, tc.want)
			}
		})
	}
}

// TestBodiesMatchSwagger holds the emulator's request and response bodies
// against Microsoft's definitions.
func TestBodiesMatchSwagger(t *testing.T) {
	c := loadSpec(t)
	e := start(t, nil)
	create := CreateDatasetRequest{Name: "SalesMarketing", DefaultMode: "Push", Tables: []Table{productTable()}}
	createBody, _ := json.Marshal(create)
	rowsBody := []byte(`{"rows":[{"ProductID":1,"Name":"Adjustable Race","Category":"Components","IsCompete":true,"ManufacturedOn":"07/30/2014"}]}`)
	putBody, _ := json.Marshal(Table{Name: "Product", Columns: append(productTable().Columns, Column{Name: "NewColumn", DataType: "string"})})

	t.Run("requests", func(t *testing.T) {
		c.mustMatch(t, "CreateDatasetRequest", createBody)
		c.mustMatch(t, "PostRowsRequest", rowsBody)
		c.mustMatch(t, "Table", putBody)
	})

	for _, prefix := range []string{"/v1.0/myorg", "/v1.0/myorg/groups/" + group} {
		t.Run(prefix, func(t *testing.T) {
			r := e.do("POST", prefix+"/datasets?defaultRetentionPolicy=basicFIFO", createBody)
			wantStatus(t, r, 201)
			c.mustMatch(t, "Dataset", r.body)
			var created struct{ ID string }
			_ = json.Unmarshal(r.body, &created)
			base := prefix + "/datasets/" + created.ID

			r = e.do("GET", prefix+"/datasets", nil)
			wantStatus(t, r, 200)
			c.mustMatch(t, "Datasets", r.body)

			r = e.do("GET", base, nil)
			wantStatus(t, r, 200)
			c.mustMatch(t, "Dataset", r.body)

			r = e.do("GET", base+"/tables", nil)
			wantStatus(t, r, 200)
			c.mustMatch(t, "Tables", r.body)

			r = e.do("PUT", base+"/tables/Product", putBody)
			wantStatus(t, r, 200)
			c.mustMatch(t, "Table", r.body)

			wantStatus(t, e.do("POST", base+"/tables/Product/rows", rowsBody), 200)
		})
	}
}

// TestStreamingColumnProperties: the spec's Column declares formatString,
// dataCategory, isHidden... and a Push dataset takes them; a PushStreaming
// dataset refuses every property but name and dataType with 400
// InvalidRequest, as Power BI does (MicrosoftDocs/powerbi-docs#899), at
// creation and in PutTable.
func TestStreamingColumnProperties(t *testing.T) {
	c := loadSpec(t)
	e := start(t, nil)
	formatted := Table{Name: "Sales", Columns: []Column{{Name: "Amount", DataType: "Int64", FormatString: "Currency"}}}
	bare := Table{Name: "Sales", Columns: []Column{{Name: "Amount", DataType: "Int64"}}}
	for _, tc := range []struct {
		name, mode string
		table      Table
		want       int
	}{
		{"Push takes a formatString", "Push", formatted, http.StatusCreated},
		{"PushStreaming refuses a formatString", "PushStreaming", formatted, http.StatusBadRequest},
		{"PushStreaming takes name and dataType", "PushStreaming", bare, http.StatusCreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(CreateDatasetRequest{Name: "d", DefaultMode: tc.mode, Tables: []Table{tc.table}})
			c.mustMatch(t, "CreateDatasetRequest", body)
			r := e.do("POST", "/v1.0/myorg/datasets", body)
			if tc.want == http.StatusBadRequest {
				wantError(t, r, http.StatusBadRequest, "InvalidRequest")
				if !strings.Contains(string(r.body), "This dataset or endpoint does not support column properties other than name and dataType.") {
					t.Errorf("body %s lacks Power BI's message", r.body)
				}
				return
			}
			wantStatus(t, r, tc.want)
		})
	}
	id, err := e.s.CreateDataset("", CreateDatasetRequest{Name: "s", DefaultMode: "PushStreaming", Tables: []Table{bare}}, RetentionNone)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, e.do("PUT", "/v1.0/myorg/datasets/"+id+"/tables/Sales", formatted), http.StatusBadRequest, "InvalidRequest")
	wantStatus(t, e.do("PUT", "/v1.0/myorg/datasets/"+id+"/tables/Sales", bare), http.StatusOK)
}
