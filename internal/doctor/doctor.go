// Package doctor checks, one step after another, everything a real pushd
// deployment fails at: the config, the token from Microsoft Entra ID, access
// to the workspace, each target dataset (it exists and accepts rows), its
// table and columns against the schema, each source (Kafka brokers and
// topics, the HTTP listen address) and each dead-letter path. Every failed check says what is wrong
// and how to fix it. Doctor reads only: it never posts rows, creates or
// changes anything.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/deadletter"
	"github.com/pushd/pushd/internal/provision"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/source"
)

// Status is the outcome of one check.
type Status string

// Statuses of a check. Skip means the check could not run because an
// earlier one failed, or does not apply (an embedded emulator).
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// Check is the outcome of one step.
type Check struct {
	// Step names what was checked: "config", "token", "workspace",
	// "dataset (telemetry)", "table (telemetry)", "source (telemetry)",
	// "metrics".
	Step   string
	Status Status
	// Detail says what was found (may span lines).
	Detail string
	// Fix says what to do about a failure (empty otherwise).
	Fix string
}

// Report is every check in the order run.
type Report struct {
	Checks []Check
}

// OK reports whether no check failed.
func (r Report) OK() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return false
		}
	}
	return len(r.Checks) > 0
}

// Options configure Run.
type Options struct {
	// Path is the config file.
	Path string
	// Config changes how the config's ${ENV} and *_file are looked up
	// (zero: the process environment and file system).
	Config config.Options
	// StepTimeout bounds each network check (default 20s). Power BI
	// requests are retried within it, never longer.
	StepTimeout time.Duration
	// Logger receives the Power BI client's logs (nil: discard).
	Logger *slog.Logger
	// Report, when set, is called with each check as it completes.
	Report func(Check)
	// Getenv and DMIDir stand in for the process environment and
	// /sys/class/dmi/id where the managed-identity check looks (tests).
	Getenv func(string) string
	DMIDir string
}

// DefaultStepTimeout bounds one network check when Options.StepTimeout is 0.
const DefaultStepTimeout = 20 * time.Second

// run is the state of one Run.
type run struct {
	opts   Options
	cfg    *config.Config
	report Report
}

func (r *run) add(c Check) {
	r.report.Checks = append(r.report.Checks, c)
	if r.opts.Report != nil {
		r.opts.Report(c)
	}
}

func (r *run) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.opts.StepTimeout)
}

// Run runs every check in order and returns the report; it stops after the
// config check when the config is invalid.
func Run(ctx context.Context, opts Options) Report {
	if opts.StepTimeout <= 0 {
		opts.StepTimeout = DefaultStepTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &run{opts: opts}
	cfg, err := opts.Config.Load(opts.Path)
	if err != nil {
		r.add(Check{Step: "config", Status: Fail, Detail: err.Error(),
			Fix: fmt.Sprintf("correct the config where each line above says (`pushd validate -c %s` lists the same problems)", opts.Path)})
		return r.report
	}
	r.cfg = cfg
	r.add(Check{Step: "config", Status: Pass, Detail: fmt.Sprintf("%s: valid, %d pipeline(s)", opts.Path, len(cfg.Pipelines))})

	switch {
	case !cfg.UsesPowerBI() && !cfg.Emulator.Embedded:
		r.add(Check{Step: "power bi", Status: Skip, Detail: "no pipeline has a Power BI target"})
	case cfg.Emulator.Embedded:
		r.add(Check{Step: "power bi", Status: Skip, Detail: "emulator.embedded is true: pushd run starts its own Power BI emulator and creates the datasets, so there is no Power BI to check"})
	default:
		r.checkPowerBI(ctx)
	}
	for i, p := range cfg.Pipelines {
		r.checkSource(ctx, i, p)
		for j, t := range p.Targets {
			r.add(r.checkEventstream(ctx, i, p, j, t))
		}
		r.checkDeadLetter(i, p)
	}
	if cfg.Metrics.Enabled {
		r.add(r.checkListen(ctx, "metrics", cfg.Metrics.Listen, metricsKey))
	}
	return r.report
}

// checkPowerBI runs token, workspace, dataset and table checks.
func (r *run) checkPowerBI(ctx context.Context) {
	cfg := r.cfg
	pb := cfg.PowerBI
	// Retry within the step only: a check must end.
	if pb.Retry.MaxElapsed <= 0 || pb.Retry.MaxElapsed > r.opts.StepTimeout/2 {
		pb.Retry.MaxElapsed = r.opts.StepTimeout / 2
	}
	skipRest := func(why string) {
		for _, p := range powerBIPipelines(cfg) {
			r.add(Check{Step: "dataset (" + p.Name + ")", Status: Skip, Detail: why})
			r.add(Check{Step: "table (" + p.Name + ")", Status: Skip, Detail: why})
		}
	}
	hc, err := pushapi.NewHTTPClient(pb)
	if err != nil {
		r.add(Check{Step: "token", Status: Fail, Detail: err.Error(),
			Fix: "powerbi.ca_file must name a readable PEM file with the CA certificate(s) to trust (or remove it to use the system's)"})
		r.add(Check{Step: "workspace", Status: Skip, Detail: "needs a token"})
		skipRest("needs a token")
		return
	}
	if pb.Auth.ResolvedMethod() == pushapi.AuthManagedIdentity {
		if c, ok := r.managedIdentityEnvironment(); !ok {
			r.add(c)
			r.add(Check{Step: "workspace", Status: Skip, Detail: "needs a token"})
			skipRest("needs a token")
			return
		}
	}
	tokens, err := pushapi.NewTokenProvider(pb, hc, r.opts.Logger, nil)
	if err == nil {
		sctx, cancel := r.step(ctx)
		_, err = tokens.Token(sctx)
		cancel()
	}
	if err != nil {
		r.add(tokenFailure(pb, err))
		r.add(Check{Step: "workspace", Status: Skip, Detail: "needs a token"})
		skipRest("needs a token")
		return
	}
	r.add(Check{Step: "token", Status: Pass, Detail: tokenDetail(pb)})

	client, err := pushapi.NewClient(pb, tokens, hc, pushapi.ClientOptions{Logger: r.opts.Logger})
	if err != nil {
		r.add(Check{Step: "workspace", Status: Fail, Detail: err.Error(), Fix: "check powerbi.api_url and powerbi.cloud"})
		skipRest("needs the workspace")
		return
	}

	// Workspace access: list the datasets of each workspace the config uses.
	var workspaces []string
	seen := map[string]bool{}
	for _, p := range powerBIPipelines(cfg) {
		if w := strings.ToLower(p.Target.WorkspaceID); !seen[w] {
			seen[w] = true
			workspaces = append(workspaces, p.Target.WorkspaceID)
		}
	}
	datasets := map[string][]pushapi.Dataset{}
	failed := map[string]bool{}
	for _, w := range workspaces {
		sctx, cancel := r.step(ctx)
		list, err := client.ListDatasets(sctx, w)
		cancel()
		if err != nil {
			r.add(workspaceFailure(w, pb.Auth.ResolvedMethod(), err))
			failed[strings.ToLower(w)] = true
			continue
		}
		datasets[strings.ToLower(w)] = list
		r.add(Check{Step: "workspace", Status: Pass, Detail: fmt.Sprintf("%s: %d dataset(s) visible", workspaceName(w), len(list))})
	}

	for _, p := range powerBIPipelines(cfg) {
		if failed[strings.ToLower(p.Target.WorkspaceID)] {
			r.add(Check{Step: "dataset (" + p.Name + ")", Status: Skip, Detail: "needs access to " + workspaceName(p.Target.WorkspaceID)})
			r.add(Check{Step: "table (" + p.Name + ")", Status: Skip, Detail: "needs access to " + workspaceName(p.Target.WorkspaceID)})
			continue
		}
		ds, ok := r.checkDataset(ctx, client, p, datasets[strings.ToLower(p.Target.WorkspaceID)])
		if !ok {
			r.add(Check{Step: "table (" + p.Name + ")", Status: Skip, Detail: "needs the dataset"})
			continue
		}
		r.checkTable(ctx, client, p, ds)
	}
}

// powerBIPipelines returns the pipelines that write to Power BI.
func powerBIPipelines(cfg *config.Config) []config.Pipeline {
	var out []config.Pipeline
	for _, p := range cfg.Pipelines {
		if p.HasPowerBI() {
			out = append(out, p)
		}
	}
	return out
}

func workspaceName(id string) string {
	if id == "" {
		return "My workspace"
	}
	return "workspace " + id
}

func tokenDetail(pb pushapi.Config) string {
	a := pb.Auth
	method := a.ResolvedMethod()
	switch method {
	case pushapi.AuthClientSecret, pushapi.AuthClientCertificate:
		return fmt.Sprintf("%s: token obtained for client %s in tenant %s", method, a.ClientID, a.TenantID)
	case pushapi.AuthWorkloadIdentity:
		a = pb.WithEnvironment(os.Getenv).Auth
		return fmt.Sprintf("%s: token obtained for client %s in tenant %s with the federated token in %s", method, a.ClientID, a.TenantID, a.FederatedTokenFile)
	case pushapi.AuthStaticToken:
		return "static_token: a token is configured (whether Power BI accepts it shows in the workspace check)"
	}
	return method + ": token obtained"
}

// aadstsHelp explains Entra ID error codes: what they mean and the fix.
var aadstsHelp = map[string][2]string{
	"AADSTS7000215": {"invalid client secret",
		"create a new client secret (Entra ID → App registrations → your app → Certificates & secrets → New client secret) and copy its Value, not its Secret ID, into powerbi.auth.client_secret (or the file client_secret_file names)"},
	"AADSTS7000222": {"the client secret has expired",
		"create a new client secret in the app registration (Certificates & secrets) and put its Value into powerbi.auth.client_secret"},
	"AADSTS700016": {"application not found in the tenant: the client id is wrong, or the app is registered in another tenant",
		"set powerbi.auth.client_id to the app's Application (client) ID and powerbi.auth.tenant_id to the Directory (tenant) ID, both from the app registration's Overview page"},
	"AADSTS90002": {"tenant not found",
		"set powerbi.auth.tenant_id to the Directory (tenant) ID from the app registration's Overview page, and check powerbi.cloud (a national-cloud tenant is unknown to the public cloud)"},
	"AADSTS900023": {"the tenant id is not a valid tenant identifier",
		"set powerbi.auth.tenant_id to the Directory (tenant) ID (a GUID) or the tenant's domain name"},
	"AADSTS7000218": {"no client credential was sent",
		"set powerbi.auth.client_secret (or client_secret_file), or certificate_file for certificate auth"},
	"AADSTS700027": {"the client assertion was refused: the certificate is not registered with the app, or its key does not match",
		"upload the certificate's public part (.cer/.pem) to the app registration (Certificates & secrets → Certificates); certificate_file must hold that certificate and its private key"},
	"AADSTS700024": {"the client assertion is outside its valid time range",
		"synchronise this machine's clock (NTP)"},
	"AADSTS70021": {"the app has no federated credential matching the presented token",
		"add a federated credential to the app registration (or user-assigned identity) named by client_id: Certificates & secrets → Federated credentials → Kubernetes, with the cluster's OIDC issuer URL, the namespace and service account of the pod, audience api://AzureADTokenExchange"},
	"AADSTS700211": {"no federated credential of the app trusts the token's issuer",
		"set the federated credential's issuer to the cluster's OIDC issuer URL exactly (az aks show --query oidcIssuerProfile.issuerUrl), trailing slash included"},
	"AADSTS700212": {"no federated credential of the app accepts the token's audience",
		"set the federated credential's audience to api://AzureADTokenExchange (what the workload identity webhook requests)"},
	"AADSTS700213": {"no federated credential of the app matches the token's subject",
		"set the federated credential's subject to system:serviceaccount:<namespace>:<service account> of the pod (case-sensitive), or run the pod with that service account"},
	"AADSTS7002138": {"the token's subject matches a federated credential only without regard to case",
		"write the federated credential's subject with the exact case of the namespace and service account name"},
	"AADSTS7000112": {"the application is disabled",
		"enable the app's service principal (Entra ID → Enterprise applications → your app → Properties → Enabled for users to sign in)"},
	"AADSTS500011": {"the Power BI resource was not found in the tenant",
		"check powerbi.cloud (the scope follows it); the tenant must have Power BI"},
	"AADSTS53003": {"blocked by a Conditional Access policy",
		"ask your Entra ID administrator to exclude the service principal from the policy, or allow this location"},
	"AADSTS90033": {"a transient Entra ID error",
		"try again in a minute"},
}

// tokenFailure explains a failure to obtain a token.
func tokenFailure(pb pushapi.Config, err error) Check {
	c := Check{Step: "token", Status: Fail, Detail: err.Error()}
	method := pb.Auth.ResolvedMethod()
	if isTLSError(err) {
		c.Fix = caFileFix
		return c
	}
	var ae *pushapi.AuthError
	if !errors.As(err, &ae) {
		c.Fix = fmt.Sprintf("check powerbi.auth (method %s) and the files it names", method)
		if method == pushapi.AuthManagedIdentity {
			c.Fix = managedIdentityFix()
		}
		return c
	}
	if h, ok := aadstsHelp[ae.AADSTS]; ok {
		c.Detail = fmt.Sprintf("Entra ID refused the token request with %s (%s): %s", ae.AADSTS, h[0], err)
		c.Fix = h[1]
		return c
	}
	ep, _ := pb.Endpoints()
	switch {
	case ae.AADSTS != "":
		c.Fix = fmt.Sprintf("look up %s at https://login.microsoftonline.com/error?code=%s and correct powerbi.auth", ae.AADSTS, strings.TrimPrefix(ae.AADSTS, "AADSTS"))
	case method == pushapi.AuthManagedIdentity:
		c.Fix = managedIdentityFix()
	case ae.Status == 0:
		c.Fix = fmt.Sprintf("cannot reach the authority %s: check DNS, proxy (HTTPS_PROXY) and firewall rules for outbound HTTPS, and powerbi.cloud / powerbi.authority_url", ep.AuthorityHost)
	default:
		c.Fix = "correct powerbi.auth (tenant_id, client_id and the credential)"
	}
	return c
}

// fabricAPIsFix is what a service principal needs beyond a valid token.
const fabricAPIsFix = "enable the tenant setting 'Service principals can use Fabric APIs' (Fabric/Power BI admin portal → Tenant settings → Developer settings) for a security group that contains the service principal (it can take 15 minutes to apply)"

// workspaceFailure explains a failure to list a workspace's datasets with
// a token of the auth method.
func workspaceFailure(workspace, method string, err error) Check {
	c := Check{Step: "workspace", Status: Fail, Detail: fmt.Sprintf("%s: %v", workspaceName(workspace), err)}
	var ae *pushapi.APIError
	switch {
	case isTLSError(err):
		c.Fix = caFileFix
	case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized && method == pushapi.AuthStaticToken:
		// A static token is the user's own: it has expired or was made for
		// another resource. Workspace membership is not the problem yet.
		c.Fix = "Power BI refused the static token: it has expired (they last about an hour) or was issued for another resource; get a new one for https://analysis.windows.net/powerbi/api (e.g. az account get-access-token --resource https://analysis.windows.net/powerbi/api) and put it in powerbi.auth.token or the file token_file names"
	case errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden):
		c.Fix = "add the service principal to the workspace as Member or Contributor (workspace → Manage access), and " + fabricAPIsFix
		if workspace == "" {
			c.Fix = "service principals cannot use My workspace: set target.workspace_id to a workspace, then " + c.Fix
		}
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		c.Fix = "check target.workspace_id: it is the GUID after /groups/ in the workspace's URL in Power BI; the principal must also be a member of it"
	case errors.As(err, &ae):
		c.Fix = "see Power BI's message above; check target.workspace_id"
	default:
		c.Fix = "cannot reach the Power BI API: check DNS, proxy (HTTPS_PROXY) and firewall rules for outbound HTTPS to api.powerbi.com (or your cloud's API host), and powerbi.api_url"
	}
	return c
}

// checkDataset checks that the pipeline's dataset exists and accepts rows.
func (r *run) checkDataset(ctx context.Context, client *pushapi.Client, p config.Pipeline, inWorkspace []pushapi.Dataset) (pushapi.Dataset, bool) {
	step := "dataset (" + p.Name + ")"
	t := p.Target
	sctx, cancel := r.step(ctx)
	ds, err := provision.FindDataset(sctx, client, t)
	cancel()
	what := fmt.Sprintf("dataset %q", t.DatasetName)
	if t.DatasetID != "" {
		what = "dataset id " + t.DatasetID
	}
	if provision.IsNotFound(err) {
		fix := fmt.Sprintf("set provision.create: true for this pipeline and run `pushd provision -c %s` to create it, or point target.dataset_name/dataset_id at an existing push dataset", r.opts.Path)
		if p.Provision.Create && t.DatasetID == "" {
			fix = fmt.Sprintf("run `pushd provision -c %s` to create it (provision.create is true)", r.opts.Path)
		}
		r.add(Check{Step: step, Status: Fail,
			Detail: fmt.Sprintf("%s not found in %s (datasets there: %s)", what, workspaceName(t.WorkspaceID), datasetNames(inWorkspace)),
			Fix:    fix})
		return ds, false
	}
	if err != nil {
		fix := "see the message above"
		if strings.Contains(err.Error(), "ambiguous") {
			fix = "several datasets share this name: set target.dataset_id to the one to use (and remove dataset_name)"
		}
		r.add(Check{Step: step, Status: Fail, Detail: err.Error(), Fix: fix})
		return ds, false
	}
	if !ds.AddRowsAPIEnabled {
		r.add(Check{Step: step, Status: Fail,
			Detail: fmt.Sprintf("dataset %q (%s) does not accept rows (addRowsAPIEnabled is false): it is not a push dataset", ds.Name, ds.ID),
			Fix:    "pushd can add rows only to push datasets created through the API (mode Push or PushStreaming); point target at one, or create one with provision.create: true and a new dataset_name"})
		return ds, false
	}
	r.add(Check{Step: step, Status: Pass, Detail: fmt.Sprintf("dataset %q (%s) exists and accepts rows", ds.Name, ds.ID)})
	return ds, true
}

func datasetNames(list []pushapi.Dataset) string {
	if len(list) == 0 {
		return "none"
	}
	names := make([]string, 0, len(list))
	for _, d := range list {
		names = append(names, fmt.Sprintf("%q", d.Name))
	}
	sort.Strings(names)
	if len(names) > 10 {
		names = append(names[:10], fmt.Sprintf("and %d more", len(list)-10))
	}
	return strings.Join(names, ", ")
}

// checkTable checks the pipeline's table and its columns against the schema.
func (r *run) checkTable(ctx context.Context, client *pushapi.Client, p config.Pipeline, ds pushapi.Dataset) {
	step := "table (" + p.Name + ")"
	sctx, cancel := r.step(ctx)
	tables, err := client.GetTables(sctx, p.Target.WorkspaceID, ds.ID)
	cancel()
	if err != nil {
		r.add(Check{Step: step, Status: Fail, Detail: err.Error(), Fix: "see the message above"})
		return
	}
	want := provision.TableFor(p)
	var have *pushapi.Table
	names := make([]string, 0, len(tables))
	for i := range tables {
		names = append(names, fmt.Sprintf("%q", tables[i].Name))
		if tables[i].Name == want.Name {
			have = &tables[i]
		}
	}
	if have == nil {
		r.add(Check{Step: step, Status: Fail,
			Detail: fmt.Sprintf("dataset %q has no table %q (its tables: %s)", ds.Name, want.Name, strings.Join(names, ", ")),
			Fix:    "set target.table to one of its tables; Power BI cannot add a table to an existing push dataset, so a new table needs a new dataset (a new dataset_name with provision.create: true, then `pushd provision`)"})
		return
	}
	d := provision.Diff(*have, want)
	if d.Match() {
		detail := fmt.Sprintf("table %q has the %d column(s) of the schema with their types", have.Name, len(want.Columns))
		if len(d.Extra) > 0 {
			detail += fmt.Sprintf("; Power BI also has %s, which pushd leaves empty", strings.Join(d.Extra, ", "))
		}
		r.add(Check{Step: step, Status: Pass, Detail: detail})
		return
	}
	var problems, fixes []string
	if len(d.Missing) > 0 {
		cols := make([]string, len(d.Missing))
		for i, c := range d.Missing {
			cols[i] = c.Name + " (" + c.DataType + ")"
		}
		problems = append(problems, fmt.Sprintf("columns missing in Power BI: %s", strings.Join(cols, ", ")))
		fixes = append(fixes, fmt.Sprintf("run `pushd provision -c %s` to add the missing columns (it keeps the existing ones)", r.opts.Path))
	}
	for _, m := range d.Retyped {
		problems = append(problems, fmt.Sprintf("column %s is %s in Power BI but %s in the config", m.Column, m.Have, m.Want))
	}
	if len(d.Retyped) > 0 {
		fixes = append(fixes, "the push API cannot change a column's type: set the config's type to Power BI's, or use a new dataset")
	}
	for _, m := range d.Renamed {
		problems = append(problems, fmt.Sprintf("column %s is called %s in Power BI", m.Want, m.Have))
	}
	if len(d.Renamed) > 0 {
		fixes = append(fixes, "write the column names as Power BI has them")
	}
	r.add(Check{Step: step, Status: Fail,
		Detail: fmt.Sprintf("table %q does not match the schema: %s", have.Name, strings.Join(problems, "; ")),
		Fix:    strings.Join(fixes, "; ")})
}

// checkSource checks that a pipeline's source can start.
func (r *run) checkSource(ctx context.Context, i int, p config.Pipeline) {
	step := "source (" + p.Name + ")"
	switch p.Source.Type {
	case source.TypeStdin:
		r.add(Check{Step: step, Status: Pass, Detail: "stdin: nothing to check"})
	case source.TypeHTTP:
		r.add(r.checkListen(ctx, step, p.Source.HTTP.Listen, fmt.Sprintf("pipelines[%d].source.http.listen", i)))
	case source.TypeKafka:
		sctx, cancel := r.step(ctx)
		c := checkKafka(sctx, p.Source.Kafka, fmt.Sprintf("pipelines[%d].source.kafka", i))
		cancel()
		c.Step = step
		r.add(c)
	}
}

// checkDeadLetter checks the pipeline's dead-letter path as `pushd run`
// does at start (deadletter.Open), changing nothing.
func (r *run) checkDeadLetter(i int, p config.Pipeline) {
	step := "dead letter (" + p.Name + ")"
	path := p.DeadLetter.Path
	if err := deadletter.Check(path); err != nil {
		r.add(Check{Step: step, Status: Fail, Detail: err.Error(),
			Fix: fmt.Sprintf("let the user pushd runs as create and append to %s, or set pipelines[%d].dead_letter.path to a file it can", path, i)})
		return
	}
	r.add(Check{Step: step, Status: Pass, Detail: path + ": pushd can append to it"})
}

// healthzTimeout bounds the GET /healthz that tells whether pushd itself
// holds an address in use.
const healthzTimeout = 2 * time.Second

// checkListen checks that addr (the value of key) can be listened on. An
// address in use passes when pushd itself holds it, as it does when doctor
// runs beside a running pushd (in its pod, or on its systemd host): for the
// metrics address, pushd answers GET /healthz there; for an HTTP source,
// pushd answers /healthz on this config's metrics address.
func (r *run) checkListen(ctx context.Context, step, addr, key string) Check {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		_ = ln.Close()
		return Check{Step: step, Status: Pass, Detail: fmt.Sprintf("%s is free to listen on", addr)}
	}
	c := Check{Step: step, Status: Fail, Detail: fmt.Sprintf("cannot listen on %s: %v", addr, err)}
	if !errors.Is(err, syscall.EADDRINUSE) {
		c.Fix = fmt.Sprintf("set %s to an address of this host and a port this user may open (ports below 1024 need root or CAP_NET_BIND_SERVICE)", key)
		return c
	}
	c.Fix = fmt.Sprintf("another process listens on %s; stop it or change %s", addr, key)
	m := r.cfg.Metrics
	switch {
	case key == metricsKey:
		if r.servesHealthz(ctx, addr) {
			return Check{Step: step, Status: Pass,
				Detail: fmt.Sprintf("%s is in use, and it answers GET /healthz with ok: pushd is already serving here", addr)}
		}
		c.Detail += "; it does not answer GET /healthz as pushd does"
	case m.Enabled:
		if r.servesHealthz(ctx, m.Listen) {
			return Check{Step: step, Status: Pass,
				Detail: fmt.Sprintf("%s is in use, and pushd answers GET /healthz on %s (%s) of this config: pushd is already serving here", addr, metricsKey, m.Listen)}
		}
		c.Detail += fmt.Sprintf("; nothing answers GET /healthz on %s (%s), so it is not this config's pushd", metricsKey, m.Listen)
	default:
		c.Detail += "; metrics.enabled is false, so doctor cannot tell whether it is pushd"
	}
	return c
}

// metricsKey is the config key of the metrics address.
const metricsKey = "metrics.listen"

// servesHealthz reports whether a pushd answers GET /healthz at the listen
// address addr (an unspecified host is reached on loopback) with 200 "ok".
func (r *run) servesHealthz(ctx context.Context, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); host == "" || ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, min(healthzTimeout, r.opts.StepTimeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return false
	}
	// A transport of its own: no proxy for a local address, no idle
	// connection left behind.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	return err == nil && resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok"
}
