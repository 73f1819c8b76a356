package pipeline

import (
	"context"
	"math"
	"time"

	"github.com/pushd/pushd/internal/source"
)

// monitorInterval is how often the monitor runs.
const monitorInterval = time.Second

// monitor runs once a second while the pipeline reads: it ticks the reduce
// stage (windows closed by the clock, intervals), decides whether an
// overloaded pipeline reduces, and updates the freshness, unacked and rate
// metrics. Without a reduction, it warns once a minute when the input
// outgrows what the dataset's quota carries.
type monitor struct {
	p     *Pipeline
	st    *reduceStage // nil without a reduction
	rate  float64      // rows mapped a second, smoothed
	prev  int64        // rows mapped at the previous run
	warnT time.Time    // last over-quota warning
}

// run loops until ctx ends.
func (m *monitor) run(ctx, sendCtx context.Context, b *fanOut) {
	t := time.NewTicker(monitorInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.step(sendCtx, b, now)
		}
	}
}

// step is one run of the monitor.
func (m *monitor) step(ctx context.Context, b *fanOut, now time.Time) {
	p := m.p
	mapped := p.rowsMapped.Load()
	// An exponential average over about ten seconds.
	m.rate += (float64(mapped-m.prev)/monitorInterval.Seconds() - m.rate) * 0.2
	m.prev = mapped
	quota := p.opts.QuotaRowsPerSecond

	if st := m.st; st != nil {
		if st.overload != nil {
			var backlog float64
			if bl, ok := p.opts.Source.(source.Backlogger); ok {
				backlog = float64(bl.Backlog())
			}
			backlog += float64(len(p.sem))
			on := st.overload.Update(backlog, m.rate, quota)
			if was := st.active.Swap(on); was != on {
				p.log.Info("reduce: overload changed", "reducing", on, "backlog", int64(backlog),
					"input_rows_per_second", math.Round(m.rate), "quota_rows_per_second", math.Round(quota))
				if !on {
					st.flush(ctx, b) // send what was held; rows pass through from now
				}
			}
		}
		st.tick(ctx, b, now)
		st.updateMetrics(p.metrics)
	} else if quota > 0 && m.rate > quota && now.Sub(m.warnT) >= time.Minute {
		m.warnT = now
		p.log.Warn("input exceeds what the dataset's quota can carry and no reduction is configured: the backlog grows and the data gets older; add a reduce section (mode aggregate, latest or sample, see the README)",
			"input_rows_per_second", math.Round(m.rate), "quota_rows_per_second", math.Round(quota),
			"suggestion", "reduce: {mode: aggregate, window: 10s, group_by: [<key column>], aggregates: [{name: events, function: count}]}")
	}
	m.updateMetrics(now)
}

// updateMetrics sets the gauges.
func (m *monitor) updateMetrics(now time.Time) {
	p := m.p
	if p.metrics == nil {
		return
	}
	name := p.opts.Name
	p.metrics.unacked.WithLabelValues(name).Set(float64(len(p.sem)))
	p.metrics.inputRate.WithLabelValues(name).Set(m.rate)
	p.metrics.quotaRate.WithLabelValues(name).Set(p.opts.QuotaRowsPerSecond)
	newest := p.newestAccepted.Load()
	if m.st != nil {
		newest = max(newest, m.st.newest.Load())
	}
	if newest > 0 {
		p.metrics.freshness.WithLabelValues(name).Set(max(0, now.Sub(time.UnixMilli(newest)).Seconds()))
	}
}
