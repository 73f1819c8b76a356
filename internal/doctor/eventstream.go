package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/eventstream"
)

// checkEventstream connects to a fabric_eventstream target's bootstrap
// server over TLS, authenticates with its connection string (SASL PLAIN as
// $ConnectionString) and checks that its topic exists, as pushd run does at
// start.
func (r *run) checkEventstream(ctx context.Context, i int, p config.Pipeline, j int, t config.Target) Check {
	name := t.Name
	if name == "" {
		name = t.Type
	}
	key := fmt.Sprintf("pipelines[%d].targets[%d].fabric_eventstream", i, j)
	c := Check{Step: "eventstream (" + p.Name + "/" + name + ")"}
	es, err := eventstream.New(t.FabricEventstream, eventstream.Options{Name: p.Name + "/" + name, Logger: r.opts.Logger})
	if err != nil {
		c.Status, c.Detail = Fail, err.Error()
		c.Fix = fmt.Sprintf("check %s.tls: the files must exist and hold PEM certificates", key)
		return c
	}
	defer es.Close()
	cfg := es.Config()
	sctx, cancel := r.step(ctx)
	partitions, err := es.Check(sctx)
	cancel()
	if err != nil {
		c.Status, c.Detail = Fail, err.Error()
		c.Fix = eventstreamFix(err, key)
		return c
	}
	c.Status = Pass
	c.Detail = fmt.Sprintf("connected to %s over TLS as %s; topic %s (%d partitions)", cfg.BootstrapServer, eventstream.SASLUser, cfg.Topic, partitions)
	return c
}

// eventstreamFix says what to change for a failed eventstream check.
func eventstreamFix(err error, key string) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "authentication failed"):
		return fmt.Sprintf("copy the connection string again from the eventstream's custom endpoint (SAS Key Authentication tab) into %s.auth.connection_string (or its _file); a regenerated key invalidates the old one", key)
	case strings.Contains(msg, "not found on"):
		return fmt.Sprintf("set %s.topic to the eventstream's entity name (Topic name on the custom endpoint page), or leave it out to use the connection string's EntityPath", key)
	case errors.Is(err, eventstream.ErrRefused):
		return fmt.Sprintf("the connection string's key must grant Send on the entity; check %s.auth", key)
	case strings.Contains(msg, "certificate"):
		return fmt.Sprintf("the endpoint's certificate is not trusted: check %s.tls.ca_file and tls.server_name", key)
	}
	return fmt.Sprintf("check %s.bootstrap_server (host:9093) and that this host may reach it (outbound TCP 9093)", key)
}
