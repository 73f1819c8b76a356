package emulator

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
)

// CreateDatasetRequest is the body of POST .../datasets (swagger
// CreateDatasetRequest).
type CreateDatasetRequest struct {
	Name          string            `json:"name"`
	DefaultMode   string            `json:"defaultMode,omitempty"`
	Tables        []Table           `json:"tables"`
	Relationships []Relationship    `json:"relationships,omitempty"`
	Datasources   []json.RawMessage `json:"datasources,omitempty"`
}

// Table is a dataset table (swagger Table). Rows and Source are accepted
// and ignored.
type Table struct {
	Name        string            `json:"name"`
	Columns     []Column          `json:"columns"`
	Measures    []Measure         `json:"measures,omitempty"`
	IsHidden    bool              `json:"isHidden,omitempty"`
	Description string            `json:"description,omitempty"`
	Rows        []json.RawMessage `json:"rows,omitempty"`
	Source      []json.RawMessage `json:"source,omitempty"`
}

// Column is a table column (swagger Column).
type Column struct {
	Name         string `json:"name"`
	DataType     string `json:"dataType"`
	FormatString string `json:"formatString,omitempty"`
	SortByColumn string `json:"sortByColumn,omitempty"`
	DataCategory string `json:"dataCategory,omitempty"`
	IsHidden     bool   `json:"isHidden,omitempty"`
	SummarizeBy  string `json:"summarizeBy,omitempty"`
}

// Measure is a DAX measure of a table (swagger Measure).
type Measure struct {
	Name         string `json:"name"`
	Expression   string `json:"expression"`
	FormatString string `json:"formatString,omitempty"`
	Description  string `json:"description,omitempty"`
	IsHidden     bool   `json:"isHidden,omitempty"`
}

// Relationship links two tables (swagger Relationship).
type Relationship struct {
	Name                   string `json:"name"`
	FromTable              string `json:"fromTable"`
	FromColumn             string `json:"fromColumn"`
	ToTable                string `json:"toTable"`
	ToColumn               string `json:"toColumn"`
	CrossFilteringBehavior string `json:"crossFilteringBehavior,omitempty"`
}

// colKind is a column's data type, normalised.
type colKind uint8

const (
	kindString colKind = iota
	kindInt64
	kindDouble
	kindDecimal
	kindBoolean
	kindDateTime
)

func (k colKind) String() string {
	return [...]string{"String", "Int64", "Double", "Decimal", "Boolean", "DateTime"}[k]
}

// parseDataType accepts the documented type names case-insensitively plus
// the aliases seen in Microsoft's examples (bool, EDM names).
func parseDataType(s string) (colKind, bool) {
	switch strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(s, "Edm."), "edm.")) {
	case "string":
		return kindString, true
	case "int64":
		return kindInt64, true
	case "double":
		return kindDouble, true
	case "decimal":
		return kindDecimal, true
	case "boolean", "bool":
		return kindBoolean, true
	case "datetime":
		return kindDateTime, true
	}
	return 0, false
}

// tableNamePattern and columnNamePattern are the swagger patterns (§2.6).
// Go's regexp wants code points, not the spec's UTF-16 escapes.
var (
	tableNamePattern  = regexp.MustCompile(`^[\x09\x0A\x0D\x20\x23\x2D\x30-\x39\x40-\x5A\x5E-\x5F\x61-\x7A\x7E-\x{D7FF}\x{E000}-\x{FFFD}\x{10000}-\x{10FFFF}]{1,100}$`)
	columnNamePattern = regexp.MustCompile(`^[\x09\x0A\x0D\x20-\x{D7FF}\x{E000}-\x{FFFD}\x{10000}-\x{10FFFF}]+$`)
)

// schema is an immutable snapshot of a table's columns; PutTable swaps it.
type schema struct {
	def   Table // as returned by GetTables / PutTable (no rows, no source)
	kinds []colKind
	index map[string]int
}

func newSchema(t Table) (*schema, error) {
	sc := &schema{kinds: make([]colKind, len(t.Columns)), index: make(map[string]int, len(t.Columns))}
	for i, c := range t.Columns {
		if !columnNamePattern.MatchString(c.Name) {
			return nil, fmt.Errorf("column name %q of table %q does not match the allowed pattern", c.Name, t.Name)
		}
		k, ok := parseDataType(c.DataType)
		if !ok {
			return nil, fmt.Errorf("column %q of table %q: unsupported dataType %q (want Int64, Double, Decimal, Boolean, DateTime or String)", c.Name, t.Name, c.DataType)
		}
		if _, dup := sc.index[c.Name]; dup {
			return nil, fmt.Errorf("table %q has column %q twice", t.Name, c.Name)
		}
		sc.kinds[i] = k
		sc.index[c.Name] = i
	}
	for _, m := range t.Measures {
		if !columnNamePattern.MatchString(m.Name) || m.Expression == "" {
			return nil, fmt.Errorf("measure %q of table %q needs a valid name and an expression", m.Name, t.Name)
		}
	}
	def := t
	def.Rows, def.Source = nil, nil
	def.Columns = append([]Column(nil), t.Columns...)
	def.Measures = append([]Measure(nil), t.Measures...)
	sc.def = def
	return sc, nil
}

// table holds a table's rows. Each stored row is the raw JSON object as
// posted (a sub-slice of the request body, or re-encoded when unknown keys
// were dropped), so storing costs one slice header per row.
type table struct {
	name   string
	schema *schema
	rows   [][]byte
	head   int // rows[head:] are live; the prefix awaits compaction
	// discarded counts rows accepted but not kept (Config.DiscardRows).
	discarded int
}

func (t *table) count() int { return len(t.rows) - t.head + t.discarded }

func (t *table) live() [][]byte { return t.rows[t.head:] }

// trimTo drops the oldest rows so that at most n remain.
func (t *table) trimTo(n int) {
	drop := t.count() - n
	if drop <= 0 {
		return
	}
	if t.discarded > 0 {
		d := min(drop, t.discarded)
		t.discarded -= d
		drop -= d
		if drop == 0 {
			return
		}
	}
	clear(t.rows[t.head : t.head+drop]) // let old request bodies go
	t.head += drop
	if t.head > len(t.rows)/2 {
		t.rows = append(t.rows[:0:0], t.rows[t.head:]...)
		t.head = 0
	}
}

func (t *table) clearRows() {
	t.rows, t.head, t.discarded = nil, 0, 0
}

// dataset is one push dataset. mu guards everything below it.
type dataset struct {
	id        string
	workspace string // "" for My workspace, else the group id (lower-case)
	name      string
	mode      string
	retention string
	push      bool
	created   time.Time
	owner     string

	mu            sync.Mutex
	tables        []*table
	byName        map[string]*table
	relationships int
	quota         quota
	inFlight      int
	stats         datasetStats
}

func (d *dataset) table(name string) *table {
	return d.byName[name]
}

// newUUID returns a random RFC 4122 version 4 UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// buildDataset validates a create request against the limits and makes the
// dataset. The error text is the message of a 400 BadRequest.
func (s *Server) buildDataset(workspace string, req CreateDatasetRequest, retention string) (*dataset, error) {
	lim := s.cfg.Limits
	if strings.TrimSpace(req.Name) == "" {
		return nil, fmt.Errorf("dataset name is required")
	}
	mode := req.DefaultMode
	if mode == "" {
		mode = "Push"
	}
	push := false
	switch strings.ToLower(mode) {
	case "push":
		mode, push = "Push", true
	case "pushstreaming":
		mode, push = "PushStreaming", true
	case "streaming":
		mode = "Streaming"
	case "asazure":
		mode = "AsAzure"
	case "asonprem":
		mode = "AsOnPrem"
	default:
		return nil, fmt.Errorf("defaultMode %q is not one of AsAzure, AsOnPrem, Push, Streaming, PushStreaming", req.DefaultMode)
	}
	switch strings.ToLower(retention) {
	case "", "none":
		retention = RetentionNone
	case "basicfifo":
		retention = RetentionBasicFIFO
	default:
		return nil, fmt.Errorf("defaultRetentionPolicy %q is not one of None, basicFIFO", retention)
	}
	if req.Tables == nil {
		return nil, fmt.Errorf("dataset %q: tables are required", req.Name)
	}
	if lim.MaxTables > 0 && len(req.Tables) > lim.MaxTables {
		return nil, fmt.Errorf("dataset %q has %d tables, more than the maximum of %d", req.Name, len(req.Tables), lim.MaxTables)
	}
	if lim.MaxRelationships > 0 && len(req.Relationships) > lim.MaxRelationships {
		return nil, fmt.Errorf("dataset %q has %d relationships, more than the maximum of %d", req.Name, len(req.Relationships), lim.MaxRelationships)
	}
	d := &dataset{
		id: newUUID(), workspace: workspace, name: req.Name, mode: mode, retention: retention,
		push: push, created: s.now().UTC(), byName: map[string]*table{}, relationships: len(req.Relationships),
	}
	for _, t := range req.Tables {
		if err := s.checkTable(t); err != nil {
			return nil, err
		}
		if err := checkStreamingColumns(mode, t); err != nil {
			return nil, err
		}
		if d.byName[t.Name] != nil {
			return nil, fmt.Errorf("dataset %q has table %q twice", req.Name, t.Name)
		}
		sc, err := newSchema(t)
		if err != nil {
			return nil, err
		}
		tb := &table{name: t.Name, schema: sc}
		d.tables = append(d.tables, tb)
		d.byName[t.Name] = tb
	}
	for i, r := range req.Relationships {
		if !tableNamePattern.MatchString(r.Name) {
			return nil, fmt.Errorf("relationships[%d]: name %q does not match the allowed pattern", i, r.Name)
		}
		from, to := d.byName[r.FromTable], d.byName[r.ToTable]
		if from == nil || to == nil {
			return nil, fmt.Errorf("relationships[%d] %q: tables %q and %q must exist", i, r.Name, r.FromTable, r.ToTable)
		}
		if _, ok := from.schema.index[r.FromColumn]; !ok {
			return nil, fmt.Errorf("relationships[%d] %q: column %q not in table %q", i, r.Name, r.FromColumn, r.FromTable)
		}
		if _, ok := to.schema.index[r.ToColumn]; !ok {
			return nil, fmt.Errorf("relationships[%d] %q: column %q not in table %q", i, r.Name, r.ToColumn, r.ToTable)
		}
	}
	return d, nil
}

// InvalidRequestError is a refusal Power BI answers with 400 and the code
// InvalidRequest (not BadRequest) and a plain message.
type InvalidRequestError struct{ Message string }

func (e *InvalidRequestError) Error() string { return e.Message }

// streamingColumnsMessage is Power BI's answer to a column property other
// than name and dataType in a PushStreaming dataset
// (github.com/MicrosoftDocs/powerbi-docs/issues/899).
const streamingColumnsMessage = "This dataset or endpoint does not support column properties other than name and dataType."

// checkStreamingColumns refuses, for a PushStreaming dataset, any column
// property other than name and dataType.
func checkStreamingColumns(mode string, t Table) error {
	if mode != "PushStreaming" {
		return nil
	}
	for _, c := range t.Columns {
		if c != (Column{Name: c.Name, DataType: c.DataType}) {
			return &InvalidRequestError{Message: streamingColumnsMessage}
		}
	}
	return nil
}

// checkTable validates a table definition's name and size.
func (s *Server) checkTable(t Table) error {
	if !tableNamePattern.MatchString(t.Name) {
		return fmt.Errorf("table name %q does not match the allowed pattern (1-100 characters; letters, digits, space, #, -, @, ^, _ and characters from ~ upward)", t.Name)
	}
	if t.Columns == nil {
		return fmt.Errorf("table %q: columns are required", t.Name)
	}
	if m := s.cfg.Limits.MaxColumns; m > 0 && len(t.Columns) > m {
		return fmt.Errorf("table %q has %d columns, more than the maximum of %d", t.Name, len(t.Columns), m)
	}
	return nil
}

// CreateDataset creates a dataset as POST .../datasets does: workspaceID ""
// means My workspace; retention is "None" (default when "") or "basicFIFO".
func (s *Server) CreateDataset(workspaceID string, req CreateDatasetRequest, retention string) (string, error) {
	if workspaceID != "" && !uuidPattern.MatchString(workspaceID) {
		return "", fmt.Errorf("creating dataset %q: workspace id %q is not a UUID", req.Name, workspaceID)
	}
	d, err := s.buildDataset(strings.ToLower(workspaceID), req, retention)
	if err != nil {
		return "", fmt.Errorf("creating dataset %q: %w", req.Name, err)
	}
	d.owner = "emulator-test@" + s.cfg.Tenant
	s.addDataset(d)
	return d.id, nil
}

func (s *Server) addDataset(d *dataset) {
	s.mu.Lock()
	s.datasets[d.id] = d
	s.mu.Unlock()
}

// lookup finds a dataset in a workspace ("" = My workspace).
func (s *Server) lookup(workspace, id string) *dataset {
	s.mu.RLock()
	d := s.datasets[strings.ToLower(id)]
	s.mu.RUnlock()
	if d == nil || d.workspace != workspace {
		return nil
	}
	return d
}

// withTable calls fn with a table of a dataset, under the dataset's lock;
// it reports false (fn not called) when the dataset or table does not
// exist.
func (s *Server) withTable(datasetID, name string, fn func(d *dataset, t *table)) bool {
	s.mu.RLock()
	d := s.datasets[strings.ToLower(datasetID)]
	s.mu.RUnlock()
	if d == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.table(name)
	if t == nil {
		return false
	}
	fn(d, t)
	return true
}

// Rows returns the rows stored in a table, oldest first (nil when the
// dataset or table does not exist). The slices must not be modified.
func (s *Server) Rows(datasetID, name string) []json.RawMessage {
	var out []json.RawMessage
	s.withTable(datasetID, name, func(_ *dataset, t *table) {
		out = rawRows(t.live())
	})
	return out
}

// rawRows is rows as JSON values, sharing their bytes (rows are immutable
// once stored).
func rawRows(rows [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		out[i] = r
	}
	return out
}

// RowCount returns how many rows a table holds (0 when unknown).
func (s *Server) RowCount(datasetID, name string) int {
	n := 0
	s.withTable(datasetID, name, func(_ *dataset, t *table) { n = t.count() })
	return n
}

// Columns returns a table's columns as the emulator holds them, whatever
// GetTables shows (nil when the dataset or table does not exist).
func (s *Server) Columns(datasetID, name string) []Column {
	var out []Column
	s.withTable(datasetID, name, func(_ *dataset, t *table) {
		out = append([]Column(nil), t.schema.def.Columns...)
	})
	return out
}
