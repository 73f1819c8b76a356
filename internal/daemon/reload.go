package daemon

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/provision"
	"github.com/pushd/pushd/internal/source"
)

// Reload applies a new config to the running daemon (pushd run on
// SIGHUP). Only the pipelines section can change in place: a change
// anywhere else, to a stdin pipeline (its input is consumed) or to the
// limits of a dataset pushd writes to (its limiter keeps the quota
// windows), or, with the embedded emulator, a table it cannot create,
// refuses the whole reload and changes nothing. Otherwise the
// pipelines that changed or were removed are drained (sent, acked,
// committed, closed) and then the changed and added ones start; the
// unchanged ones keep running untouched. A summary line at info says what
// changed. cfg must be a validated config (config.Load).
func (d *Daemon) Reload(ctx context.Context, cfg *config.Config) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	select {
	case <-d.started:
	case <-ctx.Done():
		return ctx.Err()
	}
	plan := planReload(d.list(), cfg.Pipelines)
	if err := d.refuse(ctx, cfg, plan); err != nil {
		return err
	}
	if len(plan.drain) == 0 && len(plan.build) == 0 {
		d.log.Info("config reloaded", plan.summary()...)
		return nil
	}
	if d.emu != nil && len(plan.build) > 0 {
		// The embedded emulator holds only what the config named: create
		// what the new config adds, before anything stops.
		if err := d.provisionEmbedded(ctx, cfg); err != nil {
			d.log.Error("config reload refused: the embedded emulator cannot hold the new config", "err", err)
			return fmt.Errorf("config not reloaded: %w", err)
		}
	}

	d.mu.Lock()
	if d.stopped || d.runCtx.Err() != nil {
		d.mu.Unlock()
		d.log.Warn("config reload ignored: pushd is stopping")
		return errors.New("config not reloaded: pushd is stopping")
	}
	d.reloading = true
	runCtx := d.runCtx
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.reloading = false
		d.endIfIdleLocked()
		d.mu.Unlock()
	}()

	// Drain first: a changed HTTP source listens on the same address, a
	// changed Kafka source joins the same group once the old one has
	// committed and left it.
	for _, r := range plan.drain {
		if r.http != nil {
			r.http.Drain()
		}
		r.cancel()
	}
	for _, r := range plan.drain {
		<-r.done
	}
	if runCtx.Err() != nil {
		// A signal came during the drain: pushd stops, nothing starts.
		d.log.Warn("config reload cut short: pushd is stopping; the drained pipelines are not started again")
		return errors.New("config not fully reloaded: pushd is stopping")
	}
	d.forgetRemoved(plan, cfg)
	err := d.startPlan(runCtx, cfg, plan)
	d.log.Info("config reloaded", plan.summary()...)
	return err
}

// forgetRemoved deletes the metric series of the pipelines the reload
// removed, which would otherwise report their last values until pushd
// exits. A Kafka group's series go only when no pipeline of cfg reads it.
func (d *Daemon) forgetRemoved(plan reloadPlan, cfg *config.Config) {
	groups := map[string]bool{}
	for _, pc := range cfg.Pipelines {
		if pc.Source.Type == source.TypeKafka {
			groups[pc.Source.Kafka.GroupID] = true
		}
	}
	for _, r := range plan.drain {
		if plan.changed[r.cfg.Name] {
			continue
		}
		d.deps.pl.Forget(r.cfg.Name)
		d.deps.dl.Forget(r.cfg.Name)
		for _, tc := range r.cfg.Targets {
			if tc.Type == config.TargetFabricEventstream {
				d.deps.es.Forget(r.cfg.Name + "/" + targetName(tc))
			}
		}
		if r.cfg.Source.Type == source.TypeKafka && !groups[r.cfg.Source.Kafka.GroupID] {
			d.deps.kafka.Forget(r.cfg.Source.Kafka.GroupID)
		}
	}
}

// refuse returns why cfg cannot be applied in place, logged at error, or
// nil.
func (d *Daemon) refuse(ctx context.Context, cfg *config.Config, plan reloadPlan) error {
	if keys := keysOutsidePipelines(d.cfg, cfg); len(keys) > 0 {
		d.log.Error("config reload refused: a restart is needed to change these keys", "keys", strings.Join(keys, ", "))
		return fmt.Errorf("config not reloaded: a restart is needed to change %s", strings.Join(keys, ", "))
	}
	for _, r := range plan.drain {
		if r.cfg.Source.Type == source.TypeStdin && plan.changed[r.cfg.Name] {
			d.log.Error("config reload refused: a stdin pipeline cannot be restarted (its input is consumed)", "pipeline", r.cfg.Name)
			return fmt.Errorf("config not reloaded: pipeline %s reads stdin and cannot be restarted; restart pushd to change it", r.cfg.Name)
		}
	}
	if d.client == nil && cfg.UsesPowerBI() {
		d.log.Error("config reload refused: a restart is needed to start writing to Power BI (no pipeline did)")
		return errors.New("config not reloaded: no pipeline wrote to Power BI at start; restart pushd to add a Power BI target")
	}
	if bad := d.changedLimits(ctx, cfg, plan.building()); len(bad) > 0 {
		d.log.Error("config reload refused: a restart is needed to change the limits of a dataset pushd writes to", "keys", strings.Join(bad, ", "))
		return fmt.Errorf("config not reloaded: a restart is needed to change %s (the limiter of a dataset keeps its quota windows)", strings.Join(bad, ", "))
	}
	return nil
}

// startPlan builds and starts the pipelines the plan builds, once the
// ones it drains have ended. A pipeline that cannot be built (its HTTP
// address taken, its eventstream unreachable) is logged; when it changed,
// its previous config starts again instead, so that a reload never leaves
// a source unread that was read before.
func (d *Daemon) startPlan(runCtx context.Context, cfg *config.Config, plan reloadPlan) error {
	var errs []error
	next := make([]*running, 0, len(cfg.Pipelines))
	var start []*running
	for i, pc := range cfg.Pipelines {
		if r := plan.keep[pc.Name]; r != nil {
			next = append(next, r)
			continue
		}
		r, err := d.buildPipeline(runCtx, i, pc)
		if err != nil {
			r.discard()
			errs = append(errs, err)
			r = d.restartPrevious(runCtx, i, pc.Name, plan.old[pc.Name], err)
			if r == nil {
				continue
			}
		}
		next = append(next, r)
		start = append(start, r)
	}
	d.mu.Lock()
	d.pipelines = next
	for _, r := range start {
		d.startLocked(r)
	}
	d.mu.Unlock()
	return errors.Join(errs...)
}

// restartPrevious builds the i-th pipeline, name, again with old's config
// after its new config failed with err: nil when it was added (no old),
// or when that fails too.
func (d *Daemon) restartPrevious(runCtx context.Context, i int, name string, old *running, err error) *running {
	if old == nil {
		d.log.Error("config reload: pipeline not started", "pipeline", name, "err", err)
		return nil
	}
	r, perr := d.buildPipeline(runCtx, i, old.cfg)
	if perr != nil {
		r.discard()
		d.log.Error("config reload: pipeline not started, nor with its previous config", "pipeline", name, "err", err, "previous_err", perr)
		return nil
	}
	d.log.Error("config reload: pipeline not changed, its previous config runs again", "pipeline", name, "err", err)
	return r
}

// provisionEmbedded creates in the embedded emulator what cfg names.
func (d *Daemon) provisionEmbedded(ctx context.Context, cfg *config.Config) error {
	actions, err := provision.Plan(ctx, d.client, cfg, provision.Options{CreateAll: true})
	if err != nil {
		return fmt.Errorf("provisioning the embedded emulator: %w", err)
	}
	if _, err := provision.Apply(ctx, d.client, actions); err != nil {
		return fmt.Errorf("provisioning the embedded emulator: %w", err)
	}
	return nil
}

// keysOutsidePipelines names the top-level keys, other than pipelines,
// whose values differ between old and new.
func keysOutsidePipelines(old, new *config.Config) []string {
	var keys []string
	o, n := reflect.ValueOf(*old), reflect.ValueOf(*new)
	for i := range o.NumField() {
		name, _, _ := strings.Cut(o.Type().Field(i).Tag.Get("yaml"), ",")
		if name == "pipelines" || name == "-" {
			continue
		}
		if !reflect.DeepEqual(o.Field(i).Interface(), n.Field(i).Interface()) {
			keys = append(keys, name)
		}
	}
	return keys
}

// changedLimits names, for each pipeline the reload would build, limits
// that differ from those its dataset's limiter runs with (a dataset named
// by name is looked up; one not found yet has no limiter).
func (d *Daemon) changedLimits(ctx context.Context, cfg *config.Config, build map[string]bool) []string {
	var bad []string
	for i, pc := range cfg.Pipelines {
		if !build[pc.Name] || !pc.HasPowerBI() {
			continue
		}
		t, err := d.client.ResolveTarget(ctx, pc.Target)
		if err != nil {
			continue
		}
		d.mu.Lock()
		prev, ok := d.limits[strings.ToLower(t.DatasetID)]
		d.mu.Unlock()
		if ok && prev != pc.Limits {
			bad = append(bad, fmt.Sprintf("pipelines[%d].limits (%s)", i, pc.Name))
		}
	}
	return bad
}

// reloadPlan is what a reload does, by pipeline name.
type reloadPlan struct {
	keep    map[string]*running // unchanged: left running
	old     map[string]*running // changed: the one running now
	changed map[string]bool
	drain   []*running          // changed and removed
	build   []string            // changed and added, in config order
	kind    map[string][]string // "changed", "added", "removed", "unchanged"
}

// planReload compares the running pipelines with the new config's.
func planReload(current []*running, next []config.Pipeline) reloadPlan {
	p := reloadPlan{keep: map[string]*running{}, old: map[string]*running{}, changed: map[string]bool{}, kind: map[string][]string{}}
	byName := make(map[string]*running, len(current))
	for _, r := range current {
		byName[r.cfg.Name] = r
	}
	inNext := make(map[string]bool, len(next))
	for _, pc := range next {
		inNext[pc.Name] = true
		r := byName[pc.Name]
		switch {
		case r == nil:
			p.kind["added"] = append(p.kind["added"], pc.Name)
			p.build = append(p.build, pc.Name)
		case reflect.DeepEqual(r.cfg, pc) && r.files == filesDigest(pc):
			p.kind["unchanged"] = append(p.kind["unchanged"], pc.Name)
			p.keep[pc.Name] = r
		default:
			p.kind["changed"] = append(p.kind["changed"], pc.Name)
			p.changed[pc.Name] = true
			p.old[pc.Name] = r
			p.drain = append(p.drain, r)
			p.build = append(p.build, pc.Name)
		}
	}
	for _, r := range current {
		if !inNext[r.cfg.Name] {
			p.kind["removed"] = append(p.kind["removed"], r.cfg.Name)
			p.drain = append(p.drain, r)
		}
	}
	return p
}

// filesDigest digests the files a pipeline's config names by path and
// reads only when the pipeline starts (its Kafka source's TLS CA,
// certificate and key), so that a reload notices one changed in place (a
// rotated certificate) and restarts the pipeline. A file that cannot be
// read counts as empty: starting the pipeline says why.
func filesDigest(pc config.Pipeline) [sha256.Size]byte {
	h := sha256.New()
	if pc.Source.Type == source.TypeKafka {
		t := pc.Source.Kafka.TLS
		for _, name := range []string{t.CAFile, t.CertFile, t.KeyFile} {
			var data []byte
			if name != "" {
				data, _ = os.ReadFile(name)
			}
			fmt.Fprintf(h, "%d:", len(data))
			h.Write(data)
		}
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// building reports the pipelines the plan builds.
func (p reloadPlan) building() map[string]bool {
	m := make(map[string]bool, len(p.build))
	for _, name := range p.build {
		m[name] = true
	}
	return m
}

// names lists the pipelines of one kind as "[a b]".
func (p reloadPlan) names(kind string) string {
	return "[" + strings.Join(p.kind[kind], " ") + "]"
}

// summary is the attributes of the info line a reload logs.
func (p reloadPlan) summary() []any {
	return []any{"changed", p.names("changed"), "added", p.names("added"),
		"removed", p.names("removed"), "unchanged", p.names("unchanged")}
}
