package schema

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// TestDateTimeMatchesTime checks the hand-written RFC 3339 parser and
// formatter against package time over random instants and zones.
func TestDateTimeMatchesTime(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	layouts := []string{
		"2006-01-02T15:04:05Z07:00",
		"2006-01-02T15:04:05.000Z07:00",
		"2006-01-02T15:04:05.999999999Z07:00",
		"2006-01-02T15:04:05.9Z07:00",
	}
	for range 20000 {
		ms := minMillis + rng.Int64N(maxMillis-minMillis+1)
		off := (rng.IntN(24*60*2+1) - 24*60) * 60 // -24h..+24h in whole minutes
		if off <= -24*3600 || off >= 24*3600 {
			continue
		}
		tm := time.UnixMilli(ms).Add(time.Duration(rng.IntN(1_000_000)) * time.Nanosecond).In(time.FixedZone("", off))
		if y := tm.Year(); y < 1 || y > 9999 {
			continue
		}
		s := tm.Format(layouts[rng.IntN(len(layouts))])
		got, ok := parseDateTime([]byte(s))
		if !ok {
			t.Fatalf("parseDateTime(%q) failed", s)
		}
		parsed, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		if want := parsed.UnixMilli(); got != want {
			t.Fatalf("parseDateTime(%q) = %d, want %d", s, got, want)
		}
		out := string(appendDateTime(nil, ms))
		if want := strconv.Quote(time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")); out != want {
			t.Fatalf("appendDateTime(%d) = %s, want %s", ms, out, want)
		}
	}
}

func TestParseDateTime(t *testing.T) {
	tests := []struct {
		in   string
		want string // UTC, or "" when it must fail
	}{
		{"2026-11-28T07:10:21Z", "2026-11-28T07:10:21.000Z"},
		{"2026-11-28t07:10:21z", "2026-11-28T07:10:21.000Z"},
		{"2026-11-28 07:10:21.1", "2026-11-28T07:10:21.100Z"},
		{"2026-11-28T00:30:00+01:00", "2026-11-27T23:30:00.000Z"},
		{"0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"},
		{"9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"},
		{"2000-02-29", "2000-02-29T00:00:00.000Z"},
		{"1900-02-29", ""},
		{"0001-01-01T00:00:00+00:01", ""}, // before year 1 in UTC
		{"9999-12-31T23:59:59-00:01", ""}, // after 9999 in UTC
		{"2026-11-28T24:00:00Z", ""},
		{"2026-11-28T23:60:00Z", ""},
		{"2026-11-28T23:59:60Z", ""},
		{"2026-11-28T07:10:21.Z", ""},
		{"2026-11-28T07:10:21+0100", ""},
		{"2026-11-28T07:10:21+24:00", ""},
		{"2026-11-28T07:10", ""},
		{"2026-11-28T", ""},
		{"2026-1-28", ""},
		{"+2026-11-28", ""},
		{"2026-11-28Z", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ms, ok := parseDateTime([]byte(tt.in))
			got := ""
			if ok {
				got = string(appendDateTime(nil, ms))
				got = got[1 : len(got)-1]
			}
			if got != tt.want {
				t.Fatalf("parseDateTime(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestNumberSyntax(t *testing.T) {
	tests := []struct {
		in         string
		strict, ok bool
	}{
		{"0", true, true}, {"-1.5e-3", true, true}, {"12", true, true},
		{"+1", false, true}, {"007", false, true}, {".5", false, true}, {"5.", false, true}, {"5.e3", false, true},
		{"", false, false}, {"-", false, false}, {".", false, false}, {"1e", false, false}, {"1e+", false, false},
		{"0x10", false, false}, {"1_0", false, false}, {"inf", false, false}, {"NaN", false, false}, {"1 2", false, false},
	}
	for _, tt := range tests {
		strict, ok := numberSyntax([]byte(tt.in))
		if strict != tt.strict || ok != tt.ok {
			t.Errorf("numberSyntax(%q) = %v, %v; want %v, %v", tt.in, strict, ok, tt.strict, tt.ok)
		}
	}
}

func TestParsePath(t *testing.T) {
	tests := []struct {
		in   string
		segs []string
		meta string
	}{
		{in: "a", segs: []string{"a"}},
		{in: "device.id", segs: []string{"device", "id"}},
		{in: "readings.0.value", segs: []string{"readings", "0", "value"}},
		{in: `cpu\.usage.max`, segs: []string{"cpu.usage", "max"}},
		{in: `\@key`, segs: []string{"@key"}},
		{in: `back\\slash`, segs: []string{`back\slash`}},
		{in: "@key", meta: "key"},
		{in: "@headers.x.y", meta: "headers.x.y"},
	}
	for _, tt := range tests {
		p, err := parsePath(tt.in)
		if err != nil {
			t.Fatalf("parsePath(%q): %v", tt.in, err)
		}
		if tt.meta != "" {
			if p.meta == nil || p.meta.name != tt.meta {
				t.Fatalf("parsePath(%q) meta = %+v, want %q", tt.in, p.meta, tt.meta)
			}
			continue
		}
		if p.meta != nil || len(p.segments) != len(tt.segs) {
			t.Fatalf("parsePath(%q) = %+v, want %q", tt.in, p, tt.segs)
		}
		for i := range p.segments {
			if p.segments[i] != tt.segs[i] {
				t.Fatalf("parsePath(%q) = %q, want %q", tt.in, p.segments, tt.segs)
			}
		}
	}
}

func TestUTF16Cut(t *testing.T) {
	tests := []struct {
		in         string
		limit      int
		units, cut int
	}{
		{"abc", 2, 3, 2},
		{"abc", 3, 3, 3},
		{"éé", 1, 2, 2},
		{"a😀", 2, 3, 1}, // the pair does not fit after "a"
		{"😀😀", 2, 4, 4},
		{"", 0, 0, 0},
	}
	for _, tt := range tests {
		units, cut := utf16Cut([]byte(tt.in), tt.limit)
		if units != tt.units || cut != tt.cut {
			t.Errorf("utf16Cut(%q, %d) = %d, %d; want %d, %d", tt.in, tt.limit, units, cut, tt.units, tt.cut)
		}
	}
}
