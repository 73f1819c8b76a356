package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/schema"
)

// testEnv is the environment every testdata config sees; anything else is
// unset.
var testEnv = map[string]string{
	"SECRET_DIR":           "/secrets",
	"MAX_ROWS":             "5000",
	"EH_CONNECTION_STRING": "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKey=k",
	"EMPTY":                "",
}

// testFiles are the files every testdata config can read as secrets.
var testFiles = map[string]string{
	"/secrets/client-secret": "s3cret-from-file\n",
	"/secrets/bearer":        "bearer-from-file\r\n",
	"/secrets/empty":         "\n",
}

// testOptions gives Load a fixed environment and file system, so the tests
// neither depend on nor touch the machine's.
func testOptions(env map[string]string, files map[string]string) Options {
	return Options{
		LookupEnv: func(name string) (string, bool) {
			v, ok := env[name]
			return v, ok
		},
		ReadFile: func(path string) ([]byte, error) {
			if v, ok := files[path]; ok {
				return []byte(v), nil
			}
			return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
		},
	}
}

// TestBadConfigs loads every testdata/*.bad.yaml and checks that the error
// lists exactly the problems its "# want: LINE: PATH: MSG" comments name:
// each printed problem (after "FILE:") must start with one want, in order.
// A "# never: TEXT" comment names text (a password) the error must not show.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 12 {
		t.Fatalf("want at least 12 bad configs, found %d", len(files))
	}
	_, schemaValidates := any(schema.Config{}).(interface{ Validate() error })
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".bad.yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var wants, nevers []string
			for _, line := range strings.Split(string(data), "\n") {
				if w, ok := strings.CutPrefix(line, "# want: "); ok {
					wants = append(wants, w)
				}
				if n, ok := strings.CutPrefix(line, "# never: "); ok {
					nevers = append(nevers, n)
				}
				if strings.HasPrefix(line, "# needs: schema.Validate") && !schemaValidates {
					t.Skip("schema.Config has no Validate method yet")
				}
			}
			if len(wants) == 0 {
				t.Fatal("no # want: lines")
			}
			cfg, err := testOptions(testEnv, testFiles).Load(file)
			if err == nil {
				t.Fatalf("loaded without error: %+v", cfg)
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error is %T, want *config.Error: %v", err, err)
			}
			if cerr.File != file {
				t.Errorf("Error.File = %q, want %q", cerr.File, file)
			}
			for _, n := range nevers {
				if strings.Contains(err.Error(), n) {
					t.Errorf("the error repeats %q, which it must never show:\n%s", n, err)
				}
			}
			got := strings.Split(err.Error(), "\n")
			for i := range got {
				if rest, ok := strings.CutPrefix(got[i], file+":"); ok {
					got[i] = rest
				} else {
					t.Errorf("line %q does not start with %q", got[i], file+":")
				}
			}
			if len(got) != len(wants) || len(cerr.Problems) != len(wants) {
				t.Errorf("got %d problems, want %d:\n%s", len(got), len(wants), err)
			}
			for i := 0; i < len(wants) && i < len(got); i++ {
				if !strings.HasPrefix(got[i], wants[i]) {
					t.Errorf("problem %d:\n got: %s\nwant: %s...", i, got[i], wants[i])
				}
			}
		})
	}
}
