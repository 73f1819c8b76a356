// Package configs holds pushd's example configurations; its test loads and
// validates every one of them, so that an example never rots.
package configs

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/config"
)

// fakeEnv gives every ${VAR} an example value of the right shape.
func fakeEnv(name string) (string, bool) {
	switch {
	case strings.HasSuffix(name, "_FABRIC_CONNECTION_STRING"):
		return "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=example;SharedAccessKey=example=;EntityPath=es_xxxx", true
	case strings.HasSuffix(name, "_ID"):
		return "3fa85f64-5717-4562-b3fc-2c963f66afa6", true
	default:
		return "example-" + strings.ToLower(name), true
	}
}

func TestEveryExampleConfigIsValid(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs found (%v)", err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			opts := config.Options{
				LookupEnv: fakeEnv,
				ReadFile:  func(string) ([]byte, error) { return []byte("example-secret\n"), nil },
			}
			cfg, err := opts.Load(f)
			if err != nil {
				t.Fatalf("%v", err)
			}
			if len(cfg.Pipelines) == 0 {
				t.Fatal("no pipelines")
			}
		})
	}
}
