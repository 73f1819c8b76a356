package config

import (
	"fmt"
	"net"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
)

// pipelineName is the pattern of pipelines[].name.
var pipelineName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// validate checks every section of c and the rules that span sections.
// Problems carry paths only; the caller finds their lines.
func validate(c *Config) []Problem {
	var out []Problem
	add := func(path, format string, args ...any) {
		out = append(out, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	section := func(prefix string, typ reflect.Type, err error) {
		out = append(out, sectionProblems(prefix, typ, err)...)
	}

	// A config whose pipelines all write elsewhere (Fabric eventstreams)
	// needs no Power BI section.
	if c.UsesPowerBI() || c.Emulator.Embedded {
		section("powerbi", reflect.TypeOf(c.PowerBI), validatePowerBI(c.PowerBI, c.Emulator.Embedded))
	}
	// The auth method, as pushapi resolves it; none when an embedded
	// emulator fills in the credentials.
	method := c.PowerBI.Auth.ResolvedMethod()
	if c.PowerBI.Auth == (pushapi.AuthConfig{}) {
		method = ""
		if !c.Emulator.Embedded && c.UsesPowerBI() {
			// Resolving to managed identity here would name a method the
			// user never chose, and its failures would point the wrong way.
			add("powerbi.auth.method", "no auth method is set: choose one (client_secret, client_certificate, managed_identity or static_token; README, \"Setting up real Power BI\"), or set emulator.embedded: true to try pushd locally")
		}
	}

	if c.Metrics.Enabled {
		if err := checkListen(c.Metrics.Listen); err != nil {
			add("metrics.listen", "%v", err)
		}
		switch {
		case !strings.HasPrefix(c.Metrics.Path, "/"):
			add("metrics.path", "must start with /, got %q", c.Metrics.Path)
		case c.Metrics.Path == "/healthz" || c.Metrics.Path == "/readyz":
			add("metrics.path", "%s is the health endpoint; choose another path", c.Metrics.Path)
		case c.Metrics.Path == "/" || c.Metrics.Path == "/status.json" || strings.HasPrefix(c.Metrics.Path, "/ui/"):
			add("metrics.path", "%s belongs to the status page (/, /status.json, /ui/); choose another path", c.Metrics.Path)
		}
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		add("log.format", "must be text or json, got %q", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.ProgressInterval < 0 {
		add("log.progress_interval", "must not be negative (0 turns progress lines off), got %s", c.Log.ProgressInterval)
	}
	if c.ShutdownTimeout <= 0 {
		add("shutdown_timeout", "must be a positive duration, got %s", c.ShutdownTimeout)
	}

	if len(c.Pipelines) == 0 {
		add("pipelines", "required: at least one pipeline")
	}
	names := make(map[string]int)
	deadLetters := make(map[string]int)
	listeners := make(map[string]string)
	if c.Metrics.Enabled {
		listeners[c.Metrics.Listen] = "metrics.listen"
	}
	stdin := -1
	datasets := make(map[string]int)
	for i, p := range c.Pipelines {
		at := fmt.Sprintf("pipelines[%d]", i)
		switch {
		case p.Name == "":
			add(at+".name", "required")
		case !pipelineName.MatchString(p.Name):
			add(at+".name", "must match %s (lower-case letters, digits, _ and -), got %q", pipelineName, p.Name)
		default:
			if j, dup := names[p.Name]; dup {
				add(at+".name", "%q is already the name of pipelines[%d]", p.Name, j)
			} else {
				names[p.Name] = i
			}
		}

		section(at+".source", reflect.TypeOf(p.Source), p.Source.Validate())
		switch p.Source.Type {
		case source.TypeStdin:
			if stdin >= 0 {
				add(at+".source.type", "pipelines[%d] already reads stdin; only one pipeline can", stdin)
			} else {
				stdin = i
			}
		case source.TypeHTTP:
			if addr := p.Source.HTTP.Listen; !strings.HasSuffix(addr, ":0") {
				if other, dup := listeners[addr]; dup {
					add(at+".source.http.listen", "%s is already used by %s", addr, other)
				} else {
					listeners[addr] = at + ".source.http.listen"
				}
			}
		}

		switch {
		case !p.HasPowerBI() && len(p.Targets) == 0:
			add(at+".target", "required: a Power BI table (dataset_id or dataset_name, and table), or at least one entry in targets")
		case p.HasPowerBI():
			section(at+".target", reflect.TypeOf(p.Target), validateTarget(p.Target))
			if p.Target.WorkspaceID == "" && isServicePrincipal(method) {
				add(at+".target.workspace_id", "required with auth method %s: service principals cannot use My workspace", method)
			}
		}
		out = append(out, validateTargets(at, p)...)
		section(at+".schema", reflect.TypeOf(p.Schema), p.Schema.Validate())
		reduceErr := p.Reduce.Validate(p.Schema.Columns)
		section(at+".reduce", reflect.TypeOf(p.Reduce), reduceErr)
		// An HTTP caller waits for its events' rows: a reduction holding them
		// past response_timeout would answer 503 for events that land later.
		if reduceErr == nil && p.Reduce.Enabled() && p.Source.Type == source.TypeHTTP {
			if hold := p.Reduce.MaxHold(); hold >= p.Source.HTTP.ResponseTimeout {
				add(at+".reduce", "holds events for up to %s (window + allowed_lateness + idle_timeout, or interval), not less than source.http.response_timeout (%s): callers would be answered 503 for events that land later; shorten the window or raise response_timeout", hold, p.Source.HTTP.ResponseTimeout)
			}
		}
		section(at+".batch", reflect.TypeOf(p.Batch), validateBatch(p.Batch))
		section(at+".limits", reflect.TypeOf(p.Limits), p.Limits.Validate())
		if p.Source.Type == "kafka" && p.Limits.Share != 1 && p.Limits.Share > 0 && p.Limits.Share <= 1 {
			add(at+".limits.share", "not used with a kafka source, which takes the share of its assigned partitions (of all partitions of its topics) at every rebalance; remove it")
		}
		// A batch bigger than the hourly row quota could never be sent.
		if q := p.Limits.RowsPerHour; q > 0 && p.Batch.MaxRows > q {
			add(at+".batch.max_rows", "%d is more than limits.rows_per_hour (%d): such a batch could never be sent; lower max_rows", p.Batch.MaxRows, q)
		}

		// The quotas are per dataset: pipelines sharing one must agree.
		if key := datasetKey(p.Target); key != "" {
			if j, seen := datasets[key]; seen {
				if c.Pipelines[j].Limits != p.Limits {
					add(at+".limits", "differ from pipelines[%d].limits, which targets the same dataset (its quotas are shared): make them equal", j)
				}
			} else {
				datasets[key] = i
			}
		}

		if p.DeadLetter.Path != "" {
			if j, dup := deadLetters[p.DeadLetter.Path]; dup {
				add(at+".dead_letter.path", "%q is already the dead letter of pipelines[%d]", p.DeadLetter.Path, j)
			} else {
				deadLetters[p.DeadLetter.Path] = i
			}
		}
		if p.MaxUnackedEvents < 1 {
			add(at+".max_unacked_events", "must be at least 1, got %d", p.MaxUnackedEvents)
		}
		if p.Provision.Retention != pushapi.RetentionBasicFIFO && p.Provision.Retention != pushapi.RetentionNone {
			add(at+".provision.retention", "must be basicFIFO or None, got %q", p.Provision.Retention)
		}
		if p.Provision.Mode != pushapi.ModePush && p.Provision.Mode != pushapi.ModePushStreaming {
			add(at+".provision.mode", "must be Push or PushStreaming, got %q", p.Provision.Mode)
		}
		if p.Provision.Create && p.Target.DatasetName == "" && p.HasPowerBI() {
			add(at+".provision.create", "needs target.dataset_name: a dataset is created by name")
		}
	}
	return out
}

// validateTargets checks the targets list of pipeline p (at is its path):
// each entry's type and section, unique names, and a key column that the
// schema has.
func validateTargets(at string, p Pipeline) []Problem {
	var out []Problem
	names := map[string]int{}
	if p.HasPowerBI() {
		names[TargetPowerBI] = -1
	}
	for j, t := range p.Targets {
		tat := fmt.Sprintf("%s.targets[%d]", at, j)
		name := t.Name
		if name == "" {
			name = t.Type
		}
		switch {
		case t.Name != "" && !pipelineName.MatchString(t.Name):
			out = append(out, Problem{Path: tat + ".name", Msg: fmt.Sprintf("must match %s (lower-case letters, digits, _ and -), got %q", pipelineName, t.Name)})
		case name == TargetPowerBI && p.HasPowerBI():
			out = append(out, Problem{Path: tat + ".name", Msg: "powerbi names the pipeline's Power BI target; choose another name"})
		default:
			if k, dup := names[name]; dup && k >= 0 {
				out = append(out, Problem{Path: tat + ".name", Msg: fmt.Sprintf("%q is already the name of targets[%d]: give each target its own name", name, k)})
			} else if name != "" {
				names[name] = j
			}
		}
		switch t.Type {
		case TargetFabricEventstream:
			es := t.FabricEventstream
			out = append(out, sectionProblems(tat+".fabric_eventstream", reflect.TypeOf(es), es.Validate())...)
			if k := es.KeyColumn; k != "" && !hasColumn(p.Schema.Columns, k) {
				out = append(out, Problem{Path: tat + ".fabric_eventstream.key_column", Msg: fmt.Sprintf("%q is not a column of schema.columns", k)})
			}
		case TargetPowerBI:
			out = append(out, Problem{Path: tat + ".type", Msg: "the Power BI target is the pipeline's target section (one per pipeline); list only other targets here"})
		case "":
			out = append(out, Problem{Path: tat + ".type", Msg: "required: fabric_eventstream"})
		default:
			out = append(out, Problem{Path: tat + ".type", Msg: fmt.Sprintf("must be fabric_eventstream, got %q", t.Type)})
		}
	}
	return out
}

func hasColumn(cols []schema.Column, name string) bool {
	for _, c := range cols {
		if c.Name == name {
			return true
		}
	}
	return false
}

// datasetKey identifies the dataset a target writes to.
func datasetKey(t pushapi.Target) string {
	switch {
	case t.DatasetID != "":
		return t.WorkspaceID + "/id/" + strings.ToLower(t.DatasetID)
	case t.DatasetName != "":
		return t.WorkspaceID + "/name/" + t.DatasetName
	}
	return ""
}

// checkListen reports whether addr is host:port to listen on.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port such as 127.0.0.1:9464, got %q", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port must be a number 0..65535, got %q", addr)
	}
	return nil
}
