package main

import (
	"fmt"
	"io"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/source"
)

// explainShares tells, for `pushd validate`, which part of its dataset's
// quotas each pipeline keeps to when it is not the whole: a Kafka source's
// share of the partitions, or limits.share.
func explainShares(w io.Writer, cfg *config.Config) {
	for i, p := range cfg.Pipelines {
		l := p.Limits.WithDefaults()
		switch {
		case p.Source.Type == source.TypeKafka:
			fmt.Fprintf(w, "pipelines[%d] (%s): quota share: the part of the dataset's quotas that this process's assigned partitions are of all partitions of its topics, recomputed at every rebalance of group %s\n",
				i, p.Name, p.Source.Kafka.GroupID)
		case l.Share < 1:
			fmt.Fprintf(w, "pipelines[%d] (%s): quota share %g (limits.share): %s; the other processes writing the dataset should take %g together at most\n",
				i, p.Name, l.Share, shareQuotas(l), 1-l.Share)
		}
	}
}

// shareQuotas says what a share of l's quotas allows, rounded down as the
// limiter does.
func shareQuotas(l pushapi.Limits) string {
	at := func(q int) int { return max(1, int(float64(q)*l.Share+1e-9)) }
	return fmt.Sprintf("%d requests per %s, %d rows per %s, %d in flight",
		at(l.RequestsPerMinute), l.RequestWindow, at(l.RowsPerHour), l.RowsWindow, at(l.MaxInFlight))
}
