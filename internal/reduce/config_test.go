package reduce

import (
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/schema"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		want []string // each a problem's start; none for a valid config
	}{
		{"off", func(c *Config) { *c = DefaultConfig() }, nil},
		{"aggregate ok", func(*Config) {}, nil},
		{"unknown mode", func(c *Config) { c.Mode = "median" }, []string{`mode: unknown mode "median"`}},
		{"aggregate overloaded", func(c *Config) { c.When = WhenOverloaded }, []string{"when: overloaded is only for modes latest and sample"}},
		{"bad when", func(c *Config) { c.When = "sometimes" }, []string{`when: must be always or overloaded`}},
		{"no window", func(c *Config) { c.Window = 0 }, []string{"window: required for mode aggregate"}},
		{"sub-millisecond window", func(c *Config) { c.Window = time.Second + time.Microsecond }, []string{"window: must be a whole number of milliseconds"}},
		{"lateness on arrival time", func(c *Config) { c.TimeColumn, c.AllowedLateness = "", time.Second }, []string{"allowed_lateness: needs time_column"}},
		{"time column not DateTime", func(c *Config) { c.TimeColumn = "temp" }, []string{`time_column: "temp" is Double`}},
		{"unknown group column", func(c *Config) { c.GroupBy = []string{"device", "site"} }, []string{`group_by[1]: "site" is not a column`}},
		{"output name clash", func(c *Config) { c.Aggregates[1].Name = "DEVICE" }, []string{`aggregates[1].name: output column "DEVICE" is already group_by[0]`}},
		{"sum of a string", func(c *Config) { c.Aggregates[1].Column = "device" }, []string{`aggregates[1].column: "device" is String; sum needs`}},
		{"min of a time", func(c *Config) { c.Aggregates[3].Column = "ts" }, nil},
		{"avg without column", func(c *Config) { c.Aggregates[2].Column = "" }, []string{"aggregates[2].column: required for avg"}},
		{"no aggregates", func(c *Config) { c.Aggregates = nil }, []string{"aggregates: at least one"}},
		{"key on aggregate", func(c *Config) { c.Key = []string{"device"} }, []string{"key: is for modes latest and sample"}},
		{"max_groups", func(c *Config) { c.MaxGroups = 0 }, []string{"max_groups: must be at least 1"}},
		{"latest ok", func(c *Config) { *c = latestConfig() }, nil},
		{"latest overloaded", func(c *Config) { *c = latestConfig(); c.When = WhenOverloaded }, nil},
		{"latest overloaded without max_lag", func(c *Config) { *c = latestConfig(); c.When, c.MaxLag = WhenOverloaded, 0 }, []string{"max_lag: must be a positive duration"}},
		{"latest without key", func(c *Config) { *c = latestConfig(); c.Key = nil }, []string{"key: required for mode latest"}},
		{"latest with window", func(c *Config) { *c = latestConfig(); c.Window = time.Second }, []string{"window: is for mode aggregate only"}},
		{"sample without one_in", func(c *Config) { *c = DefaultConfig(); c.Mode = ModeSample }, []string{"one_in: required for mode sample"}},
		{"sample with group_by", func(c *Config) {
			*c = DefaultConfig()
			c.Mode, c.OneIn, c.GroupBy = ModeSample, 3, []string{"device"}
		}, []string{"group_by: is for mode aggregate only"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := aggConfig()
			tc.edit(&c)
			err := c.Validate(testCols)
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got problems %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("problem %d: %q, want it to start with %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func latestConfig() Config {
	c := DefaultConfig()
	c.Mode, c.Key = ModeLatest, []string{"device"}
	return c
}

func TestOutputColumns(t *testing.T) {
	got := aggConfig().OutputColumns(testCols)
	want := []schema.Column{
		{Name: "device", Type: "String"}, {Name: "window_start", Type: "DateTime"}, {Name: "window_end", Type: "DateTime"},
		{Name: "events", Type: "Int64"}, {Name: "temp_sum", Type: "Double"}, {Name: "temp_avg", Type: "Double"},
		{Name: "temp_min", Type: "Double"}, {Name: "temp_max", Type: "Double"}, {Name: "n_sum", Type: "Int64"},
		{Name: "n_first", Type: "Int64"}, {Name: "n_last", Type: "Int64"}, {Name: "ts_max", Type: "DateTime"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range got {
		if got[i].Name != want[i].Name || got[i].Type != want[i].Type {
			t.Errorf("column %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if l := latestConfig().OutputColumns(testCols); len(l) != len(testCols) {
		t.Errorf("latest changes the columns: %v", l)
	}
}

func TestOverload(t *testing.T) {
	o := Overload{MaxLag: time.Minute}
	steps := []struct {
		name                 string
		backlog, rate, quota float64
		want                 bool
	}{
		{"idle", 0, 10, 278, false},
		{"backlog of 50s", 278 * 50, 1000, 278, false},
		{"backlog of 61s", 278 * 61, 1000, 278, true},
		{"caught up but input still above the quota", 0, 1000, 278, true},
		{"backlog under half, input fits", 278 * 20, 200, 278, false},
		{"unknown quota keeps the decision", 1e9, 1e9, 0, false},
	}
	for _, s := range steps {
		if got := o.Update(s.backlog, s.rate, s.quota); got != s.want {
			t.Errorf("%s: reduce %v, want %v", s.name, got, s.want)
		}
	}
}
