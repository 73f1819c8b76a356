package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/batcher"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/secret"
	"github.com/pushd/pushd/internal/source"
)

// TestRunStopsOnAFullTableWithoutSplitting: a table that holds as many rows
// as its dataset allows refuses every row. The 10,000-row batch is not
// split into thousands of requests looking for a bad row: one request,
// then the pipeline stops saying why, nothing is dead-lettered and no
// event is acknowledged (they come again once the table has room).
func TestRunStopsOnAFullTableWithoutSplitting(t *testing.T) {
	ec := emulator.DefaultConfig()
	ec.Limits = ec.Limits.WithoutQuotas()
	ec.Limits.NoneRetentionMaxRows = 1_000
	emu, err := emulator.Start(ec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	id, err := emu.CreateDataset("", emulator.CreateDatasetRequest{Name: "full", Tables: []emulator.Table{{Name: "t", Columns: []emulator.Column{
		{Name: "id", DataType: "Int64"}, {Name: "name", DataType: "String"}}}}}, emulator.RetentionNone)
	if err != nil {
		t.Fatal(err)
	}
	cfg := pushapi.Config{APIURL: emu.URL(), Auth: pushapi.AuthConfig{Method: pushapi.AuthStaticToken, Token: secret.Value(emu.IssueToken())}}
	tokens, err := pushapi.NewTokenProvider(cfg, emu.Client(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	client, err := pushapi.NewClient(cfg, tokens, emu.Client(), pushapi.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// Fill the table to its maximum first.
	fill := make([]json.RawMessage, 1_000)
	for i := range fill {
		fill[i] = json.RawMessage(fmt.Sprintf(`{"id":%d}`, -i-1))
	}
	if err := client.PostRows(context.Background(), pushapi.Target{DatasetID: id, Table: "t"}, fill); err != nil {
		t.Fatal(err)
	}

	events := make([]string, 10_000)
	for i := range events {
		events[i] = fmt.Sprintf(`{"id":%d,"name":"n%d"}`, i+1, i)
	}
	src := newSliceSource(events...)
	src.block = true
	dl := &memDeadLetter{}
	p, err := New(Options{
		Name:       "full",
		Source:     src,
		Mapper:     testMapper(t),
		Batch:      batcher.Config{MaxRows: 10_000, MaxBytes: 16_000_000, Linger: time.Second},
		Target:     pushapi.Target{DatasetID: id, Table: "t"},
		Sender:     client,
		DeadLetter: dl,
		MaxUnacked: 10_000,
		Senders:    1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = p.Run(ctx)
	if !errors.Is(err, pushapi.ErrTableRefused) || !strings.Contains(err.Error(), "neither split nor dead-lettered and the pipeline stops") {
		t.Fatalf("Run error = %v, want the table refusal saying what pushd does", err)
	}
	posts := int64(0)
	for _, n := range emu.Stats().Requests[emulator.RoutePostRows] {
		posts += n
	}
	if posts-1 > 2 { // the fill, then the batch (two if the batch was cut)
		t.Errorf("%d POST rows requests after the fill, want the batch sent once, not split row by row", posts-1)
	}
	if len(dl.got) != 0 {
		t.Errorf("%d rows dead-lettered, want none: no row is at fault", len(dl.got))
	}
	for i, e := range src.acks {
		if e == nil || errors.Is(e, source.ErrDeadLettered) {
			t.Fatalf("event %d acked with %v, want a delivery error (it must come again)", i, e)
		}
	}
}
