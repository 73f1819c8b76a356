// Package config loads pushd's YAML configuration strictly: unknown keys are
// errors, ${VAR} references are expanded, *_file secrets are read, defaults
// are applied and every section is validated. Every problem found is
// reported at once, each with its key path and line (see Error).
package config

import (
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/eventstream"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/reduce"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
)

// Config is the whole configuration of one pushd process.
type Config struct {
	// PowerBI says which cloud to talk to and how to authenticate.
	PowerBI pushapi.Config `yaml:"powerbi"`
	// Emulator optionally runs an in-process Power BI emulator that PowerBI
	// then points at (for the quick start and demos).
	Emulator Emulator `yaml:"emulator"`
	// Metrics configures the Prometheus and health endpoint.
	Metrics Metrics `yaml:"metrics"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// ShutdownTimeout bounds the graceful drain on SIGTERM or SIGINT
	// (default 30s); past it sends are cancelled and pushd exits non-zero.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Pipelines each move one source into one table; at least one.
	Pipelines []Pipeline `yaml:"pipelines"`
}

// Emulator configures the in-process Power BI emulator.
type Emulator struct {
	// Embedded makes `pushd run` start an emulator in-process and fill in
	// powerbi.api_url, powerbi.authority_url and the credentials it accepts;
	// powerbi.auth may then be left out.
	Embedded bool `yaml:"embedded"`
	// TLS serves the emulator over HTTPS with a self-signed certificate
	// (needed for the MSAL auth methods, which accept only https authorities).
	// The embedded emulator always uses TLS, so that pushd authenticates
	// through MSAL as it does against Power BI.
	TLS bool `yaml:"tls"`
	// DiscardRows makes the embedded emulator count accepted rows without
	// keeping them, so that a large run measures pushd's memory, not the
	// stand-in's (default false: rows are kept and can be inspected).
	DiscardRows bool `yaml:"discard_rows"`
}

// Metrics configures the endpoint serving Prometheus metrics, /healthz and
// /readyz.
type Metrics struct {
	// Enabled serves the endpoint (default true).
	Enabled bool `yaml:"enabled"`
	// Listen is the address (default "127.0.0.1:9464").
	Listen string `yaml:"listen"`
	// Path of the metrics (default "/metrics").
	Path string `yaml:"path"`
}

// Log configures log/slog output.
type Log struct {
	// Format is text (default) or json.
	Format string `yaml:"format"`
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// ProgressInterval is how often `pushd run` logs a progress line per
	// pipeline (default 10s; 0 turns it off).
	ProgressInterval time.Duration `yaml:"progress_interval"`
}

// Pipeline moves the events of one source into one Power BI table, into
// further targets (Fabric eventstreams), or both (fan-out).
type Pipeline struct {
	// Name identifies the pipeline in logs, metrics and dead letters:
	// lower-case letters, digits, '_' and '-', unique.
	Name   string        `yaml:"name"`
	Source source.Config `yaml:"source"`
	// Target is the Power BI table (the default target type). It may be
	// left out when Targets names at least one other target.
	Target pushapi.Target `yaml:"target"`
	// Targets are further targets that receive every row as well, each
	// with its own batching, limits and metrics; an event is acked when
	// every target accepted or dead-lettered its rows.
	Targets []Target      `yaml:"targets"`
	Schema  schema.Config `yaml:"schema"`
	// Reduce optionally folds the mapped rows (windowed aggregates, latest
	// per key, sampling) before batching; off by default.
	Reduce reduce.Config `yaml:"reduce"`
	// Batch and Limits belong to the Power BI target.
	Batch batcher.Config `yaml:"batch"`
	// Limits are the quotas of the target dataset; pipelines that share a
	// dataset must state the same limits.
	Limits     pushapi.Limits `yaml:"limits"`
	DeadLetter DeadLetter     `yaml:"dead_letter"`
	// MaxUnackedEvents bounds the events read but not yet acknowledged
	// (default 5,000, about 1 KiB of memory each): throttling turns into
	// source lag, not memory. When the bound is reached the current batch is
	// sent at once. For a table past 250,000 rows (120 requests an hour),
	// set it to 10,000 so that every request can carry a full batch.
	MaxUnackedEvents int       `yaml:"max_unacked_events"`
	Provision        Provision `yaml:"provision"`
}

// Target types accepted in Target.Type. The Power BI target is the
// pipeline's target section; TargetPowerBI names it in logs and metrics.
const (
	TargetPowerBI           = "powerbi"
	TargetFabricEventstream = "fabric_eventstream"
)

// Target is one more target of a pipeline, beside or instead of its Power
// BI target. Only the section named by Type is used.
type Target struct {
	// Type is fabric_eventstream.
	Type string `yaml:"type"`
	// Name labels the target in logs, metrics and dead letters (default:
	// its type); unique within the pipeline.
	Name              string             `yaml:"name"`
	FabricEventstream eventstream.Config `yaml:"fabric_eventstream"`
}

// DefaultTarget returns the defaults of a target of targets.
func DefaultTarget() Target {
	return Target{FabricEventstream: eventstream.DefaultConfig()}
}

// HasPowerBI reports whether the pipeline writes to a Power BI table (its
// target section is set).
func (p Pipeline) HasPowerBI() bool { return p.Target != (pushapi.Target{}) }

// UsesPowerBI reports whether any pipeline writes to Power BI.
func (c *Config) UsesPowerBI() bool {
	for _, p := range c.Pipelines {
		if p.HasPowerBI() {
			return true
		}
	}
	return false
}

// DeadLetter says where events that cannot be delivered are written.
type DeadLetter struct {
	// Path of the NDJSON file (default "dead-letter-<pipeline>.ndjson",
	// relative to the working directory).
	Path string `yaml:"path"`
}

// Provision says how `pushd provision` creates the target when it is missing.
type Provision struct {
	// Create allows creating the dataset (by target.dataset_name) and table
	// (default false: bind to an existing dataset).
	Create bool `yaml:"create"`
	// Retention is the dataset's defaultRetentionPolicy: basicFIFO (default)
	// or None.
	Retention string `yaml:"retention"`
	// Mode is the dataset's defaultMode: Push (default) or PushStreaming.
	Mode string `yaml:"mode"`
}

// Options changes where Load and Parse look things up. The zero value uses
// the process environment and file system.
type Options struct {
	// LookupEnv resolves ${VAR}; nil means os.LookupEnv.
	LookupEnv func(name string) (string, bool)
	// ReadFile reads *_file secrets; nil means os.ReadFile.
	ReadFile func(path string) ([]byte, error)
}

// Load reads, expands, decodes, defaults and validates the config file at
// path. A problem with the content is returned as *Error listing all of
// them; failing to read the file is returned as a wrapped error.
func Load(path string) (*Config, error) { return Options{}.Load(path) }

// Parse is Load for config text already in memory; name is used in messages.
func Parse(data []byte, name string) (*Config, error) { return Options{}.Parse(data, name) }

// Load is like the package function Load, with o's look-ups.
func (o Options) Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return o.Parse(data, path)
}

// Parse is like the package function Parse, with o's look-ups.
func (o Options) Parse(data []byte, name string) (*Config, error) {
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.ReadFile == nil {
		o.ReadFile = os.ReadFile
	}
	return parse(data, name, o)
}

// DefaultConfig returns the defaults of the top-level sections; it has no
// pipelines (see DefaultPipeline).
func DefaultConfig() Config {
	return Config{
		PowerBI:         pushapi.DefaultConfig(),
		Metrics:         Metrics{Enabled: true, Listen: "127.0.0.1:9464", Path: "/metrics"},
		Log:             Log{Format: "text", Level: "info", ProgressInterval: 10 * time.Second},
		ShutdownTimeout: 30 * time.Second,
	}
}

// DefaultPipeline returns the defaults of one pipeline. The dead letter
// path, which depends on the name, is filled in by Load when left empty.
func DefaultPipeline() Pipeline {
	return Pipeline{
		Source:           source.DefaultConfig(),
		Schema:           schema.DefaultConfig(),
		Reduce:           reduce.DefaultConfig(),
		Batch:            defaultBatch(),
		Limits:           pushapi.DefaultLimits(),
		MaxUnackedEvents: 5000,
		Provision:        Provision{Retention: pushapi.RetentionBasicFIFO, Mode: pushapi.ModePush},
	}
}

// DefaultDeadLetterPath is the dead letter file of a pipeline that names none.
func DefaultDeadLetterPath(pipeline string) string {
	return "dead-letter-" + pipeline + ".ndjson"
}

// Redacted returns c as YAML with every secret shown as <redacted>, for
// `pushd validate --print`. Each source shows only the section of its type.
func (c *Config) Redacted() ([]byte, error) {
	var root yaml.Node
	if err := root.Encode(c); err != nil {
		return nil, fmt.Errorf("encoding config: %w", err)
	}
	if pipelines := valueOf(&root, "pipelines"); pipelines != nil {
		for _, p := range pipelines.Content {
			src := valueOf(p, "source")
			if src == nil {
				continue
			}
			typ := valueOf(src, "type")
			kept := src.Content[:0]
			for i := 0; i+1 < len(src.Content); i += 2 {
				switch k := src.Content[i].Value; k {
				case source.TypeStdin, source.TypeKafka, source.TypeHTTP:
					if typ == nil || typ.Value != k {
						continue
					}
				}
				kept = append(kept, src.Content[i], src.Content[i+1])
			}
			src.Content = kept
		}
	}
	out, err := yaml.Marshal(&root)
	if err != nil {
		return nil, fmt.Errorf("encoding config: %w", err)
	}
	return out, nil
}

// valueOf returns the value of key in mapping n, or nil.
func valueOf(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
