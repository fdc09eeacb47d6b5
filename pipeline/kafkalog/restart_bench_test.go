package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/realenv"
)

// startOnly is a source for timing a capture's restart: the restart is over
// when the capture starts streaming, so Start ends the run.
type startOnly struct {
	stop      context.CancelFunc
	snapshots int
}

var errBench = errors.New("not in this benchmark")

func (s *startOnly) Snapshot(context.Context) (pipeline.SnapshotReader, error) {
	s.snapshots++
	return nil, errBench
}

func (s *startOnly) Start(context.Context) (model.LSN, error) {
	s.stop()
	return 0, context.Canceled
}

func (s *startOnly) Next(context.Context) ([]model.Txn, error) { return nil, errBench }
func (s *startOnly) Confirm(context.Context, model.LSN) error  { return errBench }

// fetchCounter counts the records a Log's fetches bring back.
type fetchCounter struct {
	*Log
	read int
}

func (f *fetchCounter) Fetch(ctx context.Context, off int64, max int) ([]pipeline.Record, error) {
	recs, err := f.Log.Fetch(ctx, off, max)
	f.read += len(recs)
	return recs, err
}

// BenchmarkCaptureRestartKafka is a capture (a new process: new clients)
// starting on a Kafka topic of 10k, 100k and 1M records that ends in
// streamed transactions, until it streams again. The topic grows between
// the sizes; filling it is not timed.
func BenchmarkCaptureRestartKafka(b *testing.B) {
	broker := startBroker(b)
	ctx := context.Background()
	cfg := Config{Brokers: []string{broker}, Topic: "restart", ReplicationFactor: 1, MinInSync: 1}
	fill, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer fill.Close()
	if err := fill.EnsureTopic(ctx); err != nil {
		b.Fatal(err)
	}
	snap := model.Txn{CommitLSN: 1, Snapshot: true}
	for i := range 128 {
		snap.Changes = append(snap.Changes, model.Change{Table: "t", PK: fmt.Sprint(i), Op: model.OpInsert, Row: model.R("v", "0")})
	}
	if _, err := fill.Produce(ctx, pipeline.SplitSnapshot(snap, 32)); err != nil {
		b.Fatal(err)
	}
	have := 0
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		for have < n {
			batch := txns(have, min(10_000, n-have))
			if _, err := fill.Produce(ctx, batch); err != nil {
				b.Fatalf("fill the topic to %d records: %v", n, err)
			}
			have += len(batch)
		}
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			read := 0
			for b.Loop() {
				l, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				counted := &fetchCounter{Log: l}
				runCtx, stop := context.WithCancel(ctx)
				src := &startOnly{stop: stop}
				c := &pipeline.Capture{Env: &realenv.Env{Base: runCtx}, Source: src, Log: counted}
				if err := c.Run(runCtx); !errors.Is(err, context.Canceled) || src.snapshots > 0 {
					b.Fatalf("restart on %d records: %v after %d snapshots; want it streaming, no snapshot", n, err, src.snapshots)
				}
				stop()
				l.Close()
				read = counted.read
			}
			b.ReportMetric(float64(read), "records-read")
		})
	}
}
