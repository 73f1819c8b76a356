package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestValueNeverPrints: every way a Value reaches text, other than Reveal,
// shows <redacted>; an empty Value shows as empty (so "not set" stays visible).
func TestValueNeverPrints(t *testing.T) {
	const text = "s3cr3t-value"
	v := Value(text)
	type holder struct {
		Name   string `json:"name" yaml:"name"`
		Secret Value  `json:"secret" yaml:"secret"`
	}
	h := holder{Name: "n", Secret: v}

	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("m", "secret", v, "holder", h)
	var text2 bytes.Buffer
	slog.New(slog.NewTextHandler(&text2, nil)).Info("m", "secret", v)
	jsonOut, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	yamlOut, err := yaml.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		out  string
	}{
		{"%v", fmt.Sprintf("%v", v)},
		{"%s", fmt.Sprintf("[%s]", v)},
		{"%q", fmt.Sprintf("%q", v)},
		{"%#v", fmt.Sprintf("%#v", v)},
		{"%+v of a struct", fmt.Sprintf("%+v", h)},
		{"%#v of a struct", fmt.Sprintf("%#v", h)},
		{"error wrapping", fmt.Errorf("auth with %v: %w", v, fmt.Errorf("refused")).Error()},
		{"json", string(jsonOut)},
		{"yaml", string(yamlOut)},
		{"slog json", logs.String()},
		{"slog text", text2.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.out, text) {
				t.Errorf("secret shows: %s", tc.out)
			}
			if !strings.Contains(tc.out, "redacted") { // JSON writes < and > as \u003c and \u003e
				t.Errorf("no %s marker: %s", redacted, tc.out)
			}
		})
	}

	if got := v.Reveal(); got != text {
		t.Errorf("Reveal = %q, want the secret", got)
	}
	if got := fmt.Sprint(Value("")); got != "" {
		t.Errorf("empty Value prints %q, want empty", got)
	}
}
