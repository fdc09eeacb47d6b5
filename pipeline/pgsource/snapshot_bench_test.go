package pgsource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/logcodec"
	"lockstep/pipeline/pgsource/pgtest"
	"lockstep/pipeline/realenv"
)

// BenchmarkCaptureSnapshot measures the capture's memory while it takes the
// first snapshot of a table of 1M rows (pgbench_accounts' shape, 100k with
// -short) on a real PostgreSQL 15 and appends it: peak RSS and peak heap,
// two ways in one run. "streamed" is the capture (two scans of the
// snapshot, one chunk appended at a time); "whole" is what it did before:
// the whole snapshot read into one transaction, sorted, cut into chunks and
// appended in one produce call. The log encodes every record as kafkalog
// does and keeps nothing, so the figures are the capture's own.
//
//	go test ./pipeline/pgsource -run '^$' -bench CaptureSnapshot -benchtime 1x
func BenchmarkCaptureSnapshot(b *testing.B) {
	rows := 1_000_000
	if testing.Short() {
		rows = 100_000
	}
	dsn := pgtest.NewDatabase(b, pgtest.Start(b))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
		INSERT INTO accounts SELECT i, 1 + i / 100000, 0, '' FROM generate_series(1, `+strconv.Itoa(rows)+`) i`); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `VACUUM ANALYZE accounts`); err != nil {
		b.Fatal(err)
	}
	conn.Close(ctx)
	for _, way := range []struct {
		name     string
		snapshot func(ctx context.Context, s *Stream, log pipeline.Log) error
	}{
		{"streamed", func(ctx context.Context, s *Stream, log pipeline.Log) error {
			runCtx, stop := context.WithCancel(ctx)
			defer stop()
			c := &pipeline.Capture{Env: &realenv.Env{Base: runCtx}, Source: stopAtStart{s, stop}, Log: log}
			if err := c.Run(runCtx); !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		}},
		{"whole", func(ctx context.Context, s *Stream, log pipeline.Log) error {
			snap, err := pipeline.ReadSnapshot(ctx, s)
			if err != nil {
				return err
			}
			sortByKey(snap.Changes)
			chunks, err := pipeline.SplitTxn(snap, 2000, pipeline.DefaultMaxTxnBytes)
			if err != nil {
				return err
			}
			_, err = log.Produce(ctx, chunks)
			return err
		}},
	} {
		b.Run(way.name, func(b *testing.B) {
			var rss, heap uint64
			for b.Loop() {
				s, err := NewStream(Config{DSN: dsn})
				if err != nil {
					b.Fatal(err)
				}
				log := &encodingLog{}
				m := startMemWatch()
				err = way.snapshot(ctx, s, log)
				rss, heap = m.stop()
				s.Close(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if log.rows != rows {
					b.Fatalf("%d rows appended, want %d", log.rows, rows)
				}
			}
			b.ReportMetric(float64(rss)/(1<<20), "peak-rss-MB")
			b.ReportMetric(float64(heap)/(1<<20), "peak-heap-MB")
		})
	}
}

// stopAtStart ends the capture's run when it starts streaming: its snapshot
// is in the log.
type stopAtStart struct {
	*Stream
	stop context.CancelFunc
}

func (s stopAtStart) Start(context.Context) (model.LSN, error) {
	s.stop()
	return 0, context.Canceled
}

// encodingLog encodes what it is given, as kafkalog does before it sends,
// and keeps only how many records and rows it took.
type encodingLog struct {
	recs, rows int
}

func (l *encodingLog) Produce(_ context.Context, txns []model.Txn) (int64, error) {
	enc := make([][]byte, len(txns))
	for i, t := range txns {
		v, err := logcodec.EncodeTxn(t)
		if err != nil {
			return 0, err
		}
		enc[i] = v
		l.rows += len(t.Changes)
	}
	l.recs += len(enc)
	return int64(l.recs - 1), nil
}

func (l *encodingLog) Fetch(context.Context, int64, int) ([]pipeline.Record, error) {
	return nil, nil
}
func (l *encodingLog) Start(context.Context) (int64, error)             { return 0, nil }
func (l *encodingLog) End(context.Context) (int64, error)               { return int64(l.recs), nil }
func (l *encodingLog) Commit(context.Context, string, int64) error      { return nil }
func (l *encodingLog) Committed(context.Context, string) (int64, error) { return 0, nil }

// sortByKey orders a snapshot's rows as the capture's snapshot did before it
// streamed them.
func sortByKey(cs []model.Change) {
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].Key().Less(cs[j].Key()) })
}

// memWatch samples the heap in use every few milliseconds and reads the
// process's peak RSS (VmHWM), reset when it starts.
type memWatch struct {
	done chan struct{}
	wg   sync.WaitGroup
	heap uint64
}

func startMemWatch() *memWatch {
	runtime.GC()
	debug.FreeOSMemory()
	// Linux: writing 5 resets the peak resident set size to the current one.
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	m := &memWatch{done: make(chan struct{})}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		var ms runtime.MemStats
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			m.heap = max(m.heap, ms.HeapInuse)
			select {
			case <-m.done:
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

func (m *memWatch) stop() (rss, heap uint64) {
	close(m.done)
	m.wg.Wait()
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb uint64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			rss = kb << 10
		}
	}
	return rss, m.heap
}
