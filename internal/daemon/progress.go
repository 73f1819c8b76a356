package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pushd/pushd/internal/pushapi"
)

// announcedTokens logs the first token obtained, a milestone a user waits
// for (it proves the credentials), and stays silent on renewals.
type announcedTokens struct {
	pushapi.TokenProvider
	method string
	log    *slog.Logger
	once   sync.Once
}

func (a *announcedTokens) Token(ctx context.Context) (string, error) {
	tok, err := a.TokenProvider.Token(ctx)
	if err == nil {
		a.once.Do(func() { a.log.Info("token obtained", "method", a.method) })
	}
	return tok, err
}

// StatusLine receives the live one-line status of a run on a terminal
// (Options.StatusLine); it replaces the periodic progress log lines.
type StatusLine interface {
	Set(text string)
}

// pipelineProgress is what one progress report says of a pipeline.
type pipelineProgress struct {
	name                          string
	read, accepted, dead, waiting int64
	perSecond                     float64
	quotaUsed                     float64 // requests used / allowed over the last window; < 0 unknown
}

func (p pipelineProgress) attrs() []any {
	attrs := []any{"pipeline", p.name, "events_read", p.read, "rows_accepted", p.accepted,
		"events_per_second", roundTo(p.perSecond, 1), "events_waiting", p.waiting, "dead_lettered", p.dead}
	if p.quotaUsed >= 0 {
		attrs = append(attrs, "quota_used", fmt.Sprintf("%.0f%%", p.quotaUsed*100))
	}
	return attrs
}

func (p pipelineProgress) text() string {
	s := fmt.Sprintf("%s: %d read, %d rows accepted, %.0f/s, %d waiting, %d dead-lettered", p.name, p.read, p.accepted, p.perSecond, p.waiting, p.dead)
	if p.quotaUsed >= 0 {
		s += fmt.Sprintf(", quota %.0f%%", p.quotaUsed*100)
	}
	return s
}

func roundTo(v float64, places int) float64 {
	f := 1.0
	for range places {
		f *= 10
	}
	return float64(int64(v*f+0.5)) / f
}

// reportProgress logs, until ctx ends, the milestone "first batch
// accepted" per pipeline, and every interval a progress line per pipeline
// (or, with a status line, a live status every second instead).
func (d *Daemon) reportProgress(ctx context.Context, interval time.Duration, status StatusLine) {
	start := time.Now()
	first := map[string]bool{} // by pipeline: a reload may change the list
	last := map[string]int64{}
	lastAt := start
	tick := 200 * time.Millisecond // milestones are checked often, reports every interval
	nextReport := start.Add(interval)
	if status != nil {
		nextReport = start.Add(time.Second)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, r := range d.list() {
				if !first[r.cfg.Name] && r.p != nil {
					if s := r.p.Stats(); s.RowsAccepted > 0 {
						first[r.cfg.Name] = true
						d.log.Info("first batch accepted", "pipeline", r.cfg.Name, "rows", s.RowsAccepted, "after", now.Sub(start).Round(time.Millisecond))
					}
				}
			}
			if (interval <= 0 && status == nil) || now.Before(nextReport) {
				continue
			}
			reports := d.progress(last, now.Sub(lastAt))
			lastAt = now
			if status != nil {
				texts := make([]string, len(reports))
				for i, p := range reports {
					texts[i] = p.text()
				}
				status.Set(strings.Join(texts, " | "))
				nextReport = now.Add(time.Second)
				continue
			}
			for _, p := range reports {
				d.log.Info("progress", p.attrs()...)
			}
			nextReport = now.Add(interval)
		}
	}
}

// progress reads each pipeline's counts now; last holds the events read
// at the previous report (updated), elapsed the time since.
func (d *Daemon) progress(last map[string]int64, elapsed time.Duration) []pipelineProgress {
	st := d.status()
	requestsPerMinute := map[string]int{}
	for _, r := range d.list() {
		requestsPerMinute[r.cfg.Name] = r.cfg.Limits.WithDefaults().RequestsPerMinute
	}
	out := make([]pipelineProgress, 0, len(st.Pipelines))
	for _, ps := range st.Pipelines {
		c := ps.Counts
		p := pipelineProgress{name: ps.Name, read: c.EventsRead, accepted: c.RowsAccepted,
			dead: c.RowsDeadLettered + c.EventsDeadLettered, waiting: c.EventsRead - c.EventsAcked, quotaUsed: -1}
		if elapsed > 0 {
			since := last[ps.Name]
			if since > c.EventsRead {
				since = 0 // a reload restarted it: its counts start again
			}
			p.perSecond = float64(c.EventsRead-since) / elapsed.Seconds()
		}
		last[ps.Name] = c.EventsRead
		for _, m := range ps.Metrics {
			switch m.Name {
			case "pushd_kafka_lag_messages":
				// Records not yet read join the events read but not acked.
				for _, s := range m.Series {
					p.waiting += int64(s.Value)
				}
			case "pushd_powerbi_quota_requests_remaining":
				// Until a used ratio is published: what the window has left
				// of the requests a minute allowed.
				allowed := float64(requestsPerMinute[ps.Name])
				for _, s := range m.Series {
					if p.quotaUsed < 0 && allowed > 0 {
						p.quotaUsed = max(0, 1-s.Value/allowed)
					}
				}
			case "pushd_powerbi_quota_used_ratio":
				p.quotaUsed = -1 // the published ratio wins over the estimate
				for _, s := range m.Series {
					if s.Labels["quota"] == "requests" || s.Labels["quota"] == "" {
						p.quotaUsed = max(p.quotaUsed, s.Value)
					}
				}
			}
		}
		out = append(out, p)
	}
	return out
}
