package config

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf16"
)

// fuzzEnv is the environment the config fuzz targets see: set, empty and
// (by omission) unset variables.
var fuzzEnv = map[string]string{"TENANT": "11111111-1111-4111-8111-111111111111", "EMPTY": "", "SECRET": "s3cr3t-fuzz-value", "PORT": "8080"}

func fuzzLookup(name string) (string, bool) {
	v, ok := fuzzEnv[name]
	return v, ok
}

// FuzzParse loads config text (YAML with ${VAR} references): never a
// panic; a refused config is a *Error whose every problem says what is
// wrong and where (a key, a line inside the text, or both); an accepted
// one has at least one pipeline and passes validation again. No file is read:
// *_file secrets are refused by the fuzz's ReadFile.
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 10s ./internal/config/
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	examples, _ := filepath.Glob("../../configs/*.yaml")
	for _, name := range append(files, examples...) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("pipelines:\n  - name: a\n    target: {workspace_id: ${TENANT}, dataset_name: $$x, table: ${EMPTY:-T}}\n"))
	f.Add([]byte("pipelines: [{name: ${UNSET}, target: ${TENANT"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("pipelines:\n- <<: {name: x}\n"))
	opts := Options{
		LookupEnv: fuzzLookup,
		ReadFile:  func(path string) ([]byte, error) { return nil, errors.New("no files in the fuzz") },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := opts.Parse(data, "fuzz.yaml")
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error %v is not a *Error with problems", err)
			}
			lines := len(yamlBreak.FindAll(yamlText(data), -1)) + 1
			for _, p := range ce.Problems {
				if p.Msg == "" {
					t.Fatalf("problem %+v says nothing", p)
				}
				if p.Path == "" && p.Line == 0 {
					t.Fatalf("problem %+v names neither a key nor a line", p)
				}
				if p.Line < 0 || p.Line > lines {
					t.Fatalf("problem %+v names line %d of a %d-line text", p, p.Line, lines)
				}
			}
			return
		}
		if len(cfg.Pipelines) == 0 {
			t.Fatalf("accepted a config without pipelines: %q", data)
		}
		if probs := validate(cfg); len(probs) > 0 {
			t.Fatalf("accepted config fails validation again: %v", probs)
		}
	})
}

// yamlBreak matches a line break as YAML counts them (a lone CR is one).
var yamlBreak = regexp.MustCompile(`\r\n|\r|\n|\x{85}|\x{2028}|\x{2029}`)

// yamlText is data as YAML reads it: UTF-16 when it starts with a UTF-16
// byte order mark (yaml.v3 decodes it), else UTF-8.
func yamlText(data []byte) []byte {
	var order binary.ByteOrder
	switch {
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE}):
		order = binary.LittleEndian
	case bytes.HasPrefix(data, []byte{0xFE, 0xFF}):
		order = binary.BigEndian
	default:
		return data
	}
	var units []uint16
	for i := 2; i+1 < len(data); i += 2 {
		units = append(units, order.Uint16(data[i:]))
	}
	return []byte(string(utf16.Decode(units)))
}

// referenceRef matches what expandEnv acts on, leftmost first: $$, a
// ${...} up to the first }, or a ${ with no } after it (unterminated).
var (
	referenceRef  = regexp.MustCompile(`\$\$|\$\{[^}]*\}|\$\{`)
	referenceName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// FuzzExpandEnv holds ${VAR} expansion against a regexp reference: $$ is
// a literal $, ${NAME} the variable (an error when unset), ${NAME:-def}
// the default when unset or empty, any other $ kept; an unterminated ${
// or a reference that is no variable name is an error. Never a panic.
func FuzzExpandEnv(f *testing.F) {
	for _, s := range []string{
		"${TENANT}", "${UNSET}", "${EMPTY:-d}", "${UNSET:-}", "$$ConnectionString", "$ConnectionString",
		"a${TENANT}b${PORT:-1}c$", "${", "${}", "${1A}", "${A-B}", "${TENANT:-x:-y}", "$${TENANT}", "${SECRET}}", "é${PORT}é",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, changed, errs := expandEnv(s, fuzzLookup)
		refErr := false
		want := referenceRef.ReplaceAllStringFunc(s, func(ref string) string {
			switch ref {
			case "$$":
				return "$"
			case "${":
				refErr = true
				return ref
			}
			name, def, hasDef := strings.Cut(ref[2:len(ref)-1], ":-")
			if !referenceName.MatchString(name) {
				refErr = true
				return ref
			}
			if v, ok := fuzzLookup(name); ok && (v != "" || !hasDef) {
				return v
			} else if !ok && !hasDef {
				refErr = true
			}
			return def
		})
		if (errs != nil) != refErr {
			t.Fatalf("expandEnv(%q) errors %v; the reference finds an error: %v", s, errs, refErr)
		}
		if changed != referenceRef.MatchString(s) && errs == nil {
			t.Fatalf("expandEnv(%q) changed = %v", s, changed)
		}
		if errs == nil && out != want {
			t.Fatalf("expandEnv(%q) = %q, reference %q", s, out, want)
		}
	})
}
