package deploy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/source"
)

// obj is one decoded YAML mapping.
type obj = map[string]any

func get(o any, keys ...string) any {
	for _, k := range keys {
		m, ok := o.(obj)
		if !ok {
			return nil
		}
		o = m[k]
	}
	return o
}

func str(o any, keys ...string) string {
	s, _ := get(o, keys...).(string)
	return s
}

func list(o any, keys ...string) []any {
	l, _ := get(o, keys...).([]any)
	return l
}

// manifest is one Kubernetes object and where it came from.
type manifest struct {
	file string
	doc  obj
}

func (m manifest) String() string {
	return fmt.Sprintf("%s: %s %s", m.file, str(m.doc, "kind"), str(m.doc, "metadata", "name"))
}

// readManifests decodes every document of every YAML file under
// kubernetes/.
func readManifests(t *testing.T) []manifest {
	t.Helper()
	var out []manifest
	err := filepath.WalkDir("kubernetes", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		dec := yaml.NewDecoder(f)
		for i := 0; ; i++ {
			var doc obj
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return fmt.Errorf("%s document %d: %w", p, i, err)
			}
			if doc == nil {
				continue // a document of comments only
			}
			out = append(out, manifest{file: p, doc: doc})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no manifests found under kubernetes/")
	}
	return out
}

// podSpec returns the pod template's spec of a workload, or nil.
func podSpec(doc obj) obj {
	switch str(doc, "kind") {
	case "Pod":
		s, _ := get(doc, "spec").(obj)
		return s
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
		s, _ := get(doc, "spec", "template", "spec").(obj)
		return s
	}
	return nil
}

// isPushd reports whether a container runs `pushd run`.
func isPushd(c obj) bool {
	args := list(c, "args")
	return len(args) > 0 && args[0] == "run"
}

// configArg returns the -c argument of a pushd container.
func configArg(c obj) string {
	args := list(c, "args")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-c" {
			s, _ := args[i+1].(string)
			return s
		}
	}
	return ""
}

var uuidLike = regexp.MustCompile(`_ID$`)

// fakeEnv returns a plausible value for a variable the manifests set from a
// secret or leave to the operator.
func fakeEnv(name string) string {
	switch {
	case uuidLike.MatchString(name):
		return "0f6a3b4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
	case strings.Contains(name, "BOOTSTRAP"), strings.Contains(name, "BROKER"):
		return "kafka.example.com:9093"
	}
	return "fake-" + strings.ToLower(name)
}

func TestKubernetesManifests(t *testing.T) {
	manifests := readManifests(t)
	byKind := map[string]map[string]obj{} // kind -> name -> object, per file
	key := func(file, kind string) string { return file + "|" + kind }
	for _, m := range manifests {
		for _, f := range []string{"apiVersion", "kind"} {
			if str(m.doc, f) == "" {
				t.Errorf("%s: %s missing", m, f)
			}
		}
		if str(m.doc, "metadata", "name") == "" {
			t.Errorf("%s: metadata.name missing", m)
		}
		if get(m.doc, "metadata", "namespace") != nil {
			t.Errorf("%s: sets metadata.namespace; the manifests are applied with kubectl -n", m)
		}
		k := key(m.file, str(m.doc, "kind"))
		if byKind[k] == nil {
			byKind[k] = map[string]obj{}
		}
		byKind[k][str(m.doc, "metadata", "name")] = m.doc
	}

	workloads := 0
	for _, m := range manifests {
		spec := podSpec(m.doc)
		if spec == nil {
			continue
		}
		workloads++
		t.Run(m.String(), func(t *testing.T) {
			checkWorkload(t, m, spec, func(kind, name string) obj { return byKind[key(m.file, kind)][name] })
		})
	}
	if workloads < 2 {
		t.Errorf("found %d workloads, want the Kafka deployment and the sidecar example", workloads)
	}
}

// checkWorkload checks a pod spec and validates the pushd config each pushd
// container runs, with the environment and files the pod gives it.
func checkWorkload(t *testing.T, m manifest, spec obj, lookup func(kind, name string) obj) {
	volumes := map[string]obj{}
	for _, v := range list(spec, "volumes") {
		volumes[str(v, "name")] = v.(obj)
	}
	if get(spec, "securityContext", "runAsNonRoot") != true {
		t.Error("spec.securityContext.runAsNonRoot must be true")
	}
	pushdContainers := 0
	for _, ci := range list(spec, "containers") {
		c := ci.(obj)
		name := str(c, "name")
		if name == "" || str(c, "image") == "" {
			t.Errorf("container %q: name and image required", name)
		}
		for _, vm := range list(c, "volumeMounts") {
			if volumes[str(vm, "name")] == nil {
				t.Errorf("container %s: volumeMount %q names no volume", name, str(vm, "name"))
			}
		}
		if !isPushd(c) {
			continue
		}
		pushdContainers++

		// Ports, probes, annotations.
		ports := map[string]int{}
		for _, p := range list(c, "ports") {
			n, _ := get(p, "containerPort").(int)
			ports[str(p, "name")] = n
		}
		metricsPort := ports["metrics"]
		if metricsPort == 0 {
			t.Fatalf("container %s: no port named metrics", name)
		}
		for probe, wantPath := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
			if p := str(c, probe, "httpGet", "path"); p != wantPath {
				t.Errorf("container %s: %s path %q, want %q", name, probe, p, wantPath)
			}
			switch port := get(c, probe, "httpGet", "port").(type) {
			case string:
				if ports[port] != metricsPort {
					t.Errorf("container %s: %s port %q is not the metrics port", name, probe, port)
				}
			case int:
				if port != metricsPort {
					t.Errorf("container %s: %s port %d, want %d", name, probe, port, metricsPort)
				}
			default:
				t.Errorf("container %s: %s has no httpGet port", name, probe)
			}
		}
		ann, _ := get(m.doc, "spec", "template", "metadata", "annotations").(obj)
		if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(metricsPort) {
			t.Errorf("pod annotations %v: want prometheus.io/scrape \"true\" and prometheus.io/port %q", ann, strconv.Itoa(metricsPort))
		}
		if get(c, "securityContext", "readOnlyRootFilesystem") != true || get(c, "securityContext", "allowPrivilegeEscalation") != false {
			t.Errorf("container %s: want readOnlyRootFilesystem true and allowPrivilegeEscalation false", name)
		}
		for _, r := range []string{"requests.cpu", "requests.memory", "limits.memory"} {
			if str(c, append([]string{"resources"}, strings.Split(r, ".")...)...) == "" {
				t.Errorf("container %s: resources.%s missing", name, r)
			}
		}

		// The environment the pod gives pushd, for ${VAR}.
		env := map[string]string{}
		for _, e := range list(c, "env") {
			n := str(e, "name")
			switch {
			case get(e, "value") != nil:
				env[n] = str(e, "value")
			case get(e, "valueFrom", "secretKeyRef") != nil:
				secret := lookup("Secret", str(e, "valueFrom", "secretKeyRef", "name"))
				k := str(e, "valueFrom", "secretKeyRef", "key")
				if get(secret, "stringData", k) == nil && get(secret, "data", k) == nil {
					t.Errorf("env %s: Secret %q with key %q is not in %s", n, str(e, "valueFrom", "secretKeyRef", "name"), k, m.file)
				}
				env[n] = fakeEnv(n)
			default:
				env[n] = fakeEnv(n)
			}
		}

		// The AKS workload identity webhook's variables, in a pod that asks
		// for them with a service account that names the identity.
		labels, _ := get(m.doc, "spec", "template", "metadata", "labels").(obj)
		sa := lookup("ServiceAccount", str(spec, "serviceAccountName"))
		clientID := str(sa, "metadata", "annotations", "azure.workload.identity/client-id")
		if labels["azure.workload.identity/use"] == "true" {
			if clientID == "" {
				t.Errorf("pod label azure.workload.identity/use is set, but its ServiceAccount %q (in %s) has no azure.workload.identity/client-id annotation", str(spec, "serviceAccountName"), m.file)
			}
			for k, v := range map[string]string{"AZURE_CLIENT_ID": clientID, "AZURE_TENANT_ID": fakeEnv("AZURE_TENANT_ID"),
				"AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/", "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token"} {
				env[k] = v
			}
		}

		// The files the pod mounts: the config from a ConfigMap, secrets
		// from Secrets. writable are the mounts pushd may write to.
		files := map[string]string{}
		var writable []string
		for _, vmi := range list(c, "volumeMounts") {
			vm := vmi.(obj)
			v := volumes[str(vm, "name")]
			mount, sub := str(vm, "mountPath"), str(vm, "subPath")
			var data obj
			switch {
			case get(v, "configMap") != nil:
				cm := lookup("ConfigMap", str(v, "configMap", "name"))
				if cm == nil {
					t.Errorf("volume %s: ConfigMap %q is not in %s", str(vm, "name"), str(v, "configMap", "name"), m.file)
				}
				data, _ = get(cm, "data").(obj)
			case get(v, "secret") != nil:
				s := lookup("Secret", str(v, "secret", "secretName"))
				if s == nil {
					t.Errorf("volume %s: Secret %q is not in %s", str(vm, "name"), str(v, "secret", "secretName"), m.file)
				}
				data, _ = get(s, "stringData").(obj)
				if items := list(v, "secret", "items"); len(items) > 0 {
					picked := obj{}
					for _, it := range items {
						picked[str(it, "path")] = data[str(it, "key")]
					}
					data = picked
				}
			default:
				if get(vm, "readOnly") != true {
					writable = append(writable, mount)
				}
				continue
			}
			for k, val := range data {
				s, _ := val.(string)
				switch {
				case sub == "":
					files[path.Join(mount, k)] = s
				case sub == k:
					files[mount] = s
				}
			}
		}

		cfgPath := configArg(c)
		text, ok := files[cfgPath]
		if !ok {
			t.Fatalf("container %s runs -c %q, which no ConfigMap mount provides (mounted: %v)", name, cfgPath, keys(files))
		}
		cfg := parseConfig(t, m.file+": "+cfgPath, text, env, files)
		if cfg == nil {
			continue
		}

		// The config fits the pod.
		if cfg.PowerBI.Auth.ResolvedMethod() == pushapi.AuthWorkloadIdentity && labels["azure.workload.identity/use"] != "true" {
			t.Errorf("%s: auth method workload_identity, but the pod lacks the label azure.workload.identity/use: \"true\" (the webhook injects nothing)", cfgPath)
		}
		if source.IsLoopback(cfg.Metrics.Listen) {
			t.Errorf("%s: metrics.listen %s is loopback: the kubelet's probes cannot reach it (use 0.0.0.0:%d)", cfgPath, cfg.Metrics.Listen, metricsPort)
		}
		if _, port, _ := net.SplitHostPort(cfg.Metrics.Listen); port != strconv.Itoa(metricsPort) {
			t.Errorf("%s: metrics.listen %s, want port %d (the container's metrics port)", cfgPath, cfg.Metrics.Listen, metricsPort)
		}
		if cfg.Metrics.Path != str(ann, "prometheus.io/path") && str(ann, "prometheus.io/path") != "" {
			t.Errorf("%s: metrics.path %s but prometheus.io/path %s", cfgPath, cfg.Metrics.Path, str(ann, "prometheus.io/path"))
		}
		grace, _ := get(spec, "terminationGracePeriodSeconds").(int)
		if time.Duration(grace)*time.Second <= cfg.ShutdownTimeout {
			t.Errorf("terminationGracePeriodSeconds %d must exceed shutdown_timeout %s", grace, cfg.ShutdownTimeout)
		}
		for _, p := range cfg.Pipelines {
			if !under(p.DeadLetter.Path, writable) {
				t.Errorf("pipeline %s: dead_letter.path %s is not on a writable volume (%v); the root file system is read-only", p.Name, p.DeadLetter.Path, writable)
			}
		}
	}
	if pushdContainers != 1 {
		t.Errorf("found %d pushd containers, want 1", pushdContainers)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// parseConfig validates a pushd config: ${VAR} resolves only to env, and
// *_file only to files.
func parseConfig(t *testing.T, name, text string, env, files map[string]string) *config.Config {
	t.Helper()
	opts := config.Options{
		LookupEnv: func(n string) (string, bool) {
			v, ok := env[n]
			return v, ok
		},
		ReadFile: func(p string) ([]byte, error) {
			if v, ok := files[p]; ok {
				return []byte(v), nil
			}
			return nil, fmt.Errorf("open %s: %w", p, fs.ErrNotExist)
		},
	}
	cfg, err := opts.Parse([]byte(text), name)
	if err != nil {
		t.Errorf("config %s is invalid:\n%v", name, err)
		return nil
	}
	return cfg
}

// unit is a systemd unit file: section -> key -> values.
type unit map[string]map[string][]string

func readUnit(t *testing.T, p string) (unit, []string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	var comments []string
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#"):
			comments = append(comments, line)
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot read line %q", p, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u, comments
}

func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func TestSystemd(t *testing.T) {
	u, comments := readUnit(t, "systemd/pushd.service")
	for _, kv := range []struct{ section, key, want string }{
		{"Service", "ExecStart", "/usr/local/bin/pushd run -c /etc/pushd/pushd.yaml"},
		{"Service", "Restart", "on-failure"},
		{"Service", "KillSignal", "SIGTERM"},
		{"Service", "ExecReload", "/bin/kill -HUP $MAINPID"}, // after pushd validate: see below
		{"Service", "ProtectSystem", "strict"},
		{"Service", "StateDirectory", "pushd"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if got := u.get(kv.section, kv.key); got != kv.want {
			t.Errorf("[%s] %s = %q, want %q", kv.section, kv.key, got, kv.want)
		}
	}
	// systemctl reload checks the file before pushd reloads it.
	if r := u["Service"]["ExecReload"]; len(r) != 2 || r[0] != "/usr/local/bin/pushd validate -c /etc/pushd/pushd.yaml" {
		t.Errorf("[Service] ExecReload = %q, want pushd validate then kill -HUP", r)
	}
	if u.get("Service", "DynamicUser") != "yes" && u.get("Service", "User") == "" {
		t.Error("[Service] needs DynamicUser=yes or User=")
	}
	if u.get("Service", "EnvironmentFile") == "" {
		t.Error("[Service] EnvironmentFile missing: the secrets come from it")
	}

	// The variables the unit's comment says pushd.env holds are the only
	// environment the config gets.
	env := map[string]string{}
	envLine := regexp.MustCompile(`^#\s+([A-Z][A-Z0-9_]*)=`)
	for _, c := range comments {
		if m := envLine.FindStringSubmatch(c); m != nil {
			env[m[1]] = fakeEnv(m[1])
		}
	}
	text, err := os.ReadFile("systemd/pushd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parseConfig(t, "systemd/pushd.yaml", string(text), env, nil)
	if cfg == nil {
		return
	}
	stop, err := time.ParseDuration(u.get("Service", "TimeoutStopSec"))
	if err != nil || stop <= cfg.ShutdownTimeout {
		t.Errorf("TimeoutStopSec %q must be a duration longer than shutdown_timeout %s", u.get("Service", "TimeoutStopSec"), cfg.ShutdownTimeout)
	}
	state := "/var/lib/" + u.get("Service", "StateDirectory")
	for _, p := range cfg.Pipelines {
		if !under(p.DeadLetter.Path, []string{state}) {
			t.Errorf("pipeline %s: dead_letter.path %s is outside the StateDirectory %s (ProtectSystem=strict makes the rest read-only)", p.Name, p.DeadLetter.Path, state)
		}
	}
}
