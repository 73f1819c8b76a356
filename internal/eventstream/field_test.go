package eventstream

import (
	"encoding/json"
	"testing"
)

func TestField(t *testing.T) {
	tests := []struct {
		name, row, key, want string
		err                  bool
	}{
		{"first", `{"d":"dev-1","n":2}`, "d", `"dev-1"`, false},
		{"last number", `{"d":"dev-1","n":2}`, "n", `2`, false},
		{"missing", `{"d":"dev-1","n":2}`, "x", ``, false},
		{"empty object", `{}`, "x", ``, false},
		{"after nested values", `{"a":{"d":1,"e":[1,"}",2]},"b":"x\"\\",  "d" : true }`, "d", `true`, false},
		{"escaped key", `{"d\u0065v":"x"}`, "dev", `"x"`, false},
		{"null", `{"d":null}`, "d", `null`, false},
		{"string with comma and brace", `{"a":"x,}\"y","d":-1.5e3}`, "d", `-1.5e3`, false},
		{"not an object", `[1,2]`, "d", ``, true},
		{"cut short", `{"a":"x`, "d", ``, true},
		{"no colon", `{"a" 1}`, "d", ``, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.err && !json.Valid([]byte(tt.row)) {
				t.Fatalf("test row %s is not JSON", tt.row)
			}
			got, err := field(json.RawMessage(tt.row), tt.key)
			if (err != nil) != tt.err || string(got) != tt.want {
				t.Errorf("field(%s, %q) = %s, %v; want %s (error %v)", tt.row, tt.key, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestKey(t *testing.T) {
	tg := &Target{cfg: Config{KeyColumn: "d"}}
	for row, want := range map[string]string{
		`{"d":"dev\n1"}`: "dev\n1",
		`{"d":42}`:       "42",
		`{"d":null}`:     "",
		`{"e":1}`:        "",
	} {
		got, err := tg.key(json.RawMessage(row))
		if err != nil || string(got) != want {
			t.Errorf("key(%s) = %q, %v; want %q", row, got, err, want)
		}
	}
}
