package services

import (
	"context"
	"fmt"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/sim"
)

// restartLog is a log as a long-running capture leaves it: a complete
// snapshot (4 chunks) and then n streamed transactions of one change each,
// sharing their changes (only the capture's reading is measured). The slice
// is full, so a broker appending to it copies it first.
func restartLog(n int) []logEntry {
	snap := model.Txn{CommitLSN: 8, Snapshot: true}
	for i := range 128 {
		snap.Changes = append(snap.Changes, model.Change{Table: "t", PK: fmt.Sprint(i), Op: model.OpInsert, Row: model.R("v", "0")})
	}
	chunks := pipeline.SplitSnapshot(snap, 32)
	change := []model.Change{{Table: "t", PK: "1", Op: model.OpUpdate, Row: model.R("v", "1")}}
	out := make([]logEntry, 0, len(chunks)+n)
	for _, c := range chunks {
		out = append(out, logEntry{Txn: c, PID: 1, Seq: 1})
	}
	prev := snap.CommitLSN
	for i := range n {
		lsn := model.LSN(16 + 8*i)
		out = append(out, logEntry{Txn: model.Txn{XID: uint64(i + 1), CommitLSN: lsn, PrevLSN: prev, Changes: change}, PID: 1, Seq: int64(2 + i/1000)})
		prev = lsn
	}
	return out[:len(out):len(out)]
}

// startSpy is the capture's stream, noting when the capture starts
// streaming (its restart is over) and whether it took a snapshot.
type startSpy struct {
	*StreamClient
	w         *sim.World
	startedAt time.Duration
	snapshots int
}

func (s *startSpy) Start(ctx context.Context) (model.LSN, error) {
	if s.startedAt == 0 {
		s.startedAt = s.w.Now()
	}
	return s.StreamClient.Start(ctx)
}

func (s *startSpy) Snapshot(ctx context.Context) (pipeline.SnapshotReader, error) {
	s.snapshots++
	return s.StreamClient.Snapshot(ctx)
}

// readCounter counts the records the capture's fetches bring back.
type readCounter struct {
	*LogClient
	read int
}

func (r *readCounter) Fetch(ctx context.Context, off int64, max int) ([]pipeline.Record, error) {
	recs, err := r.LogClient.Fetch(ctx, off, max)
	r.read += len(recs)
	return recs, err
}

// restartOnce boots a world whose log holds entries and whose source has a
// slot, starts a capture, and returns how long (virtual time) it took to
// start streaming and how many records it read.
func restartOnce(tb testing.TB, entries []logEntry) (time.Duration, int) {
	w := sim.New(sim.Config{Seed: 1})
	defer w.Stop()
	c := NewCluster(w, "broker")
	for _, n := range c.Brokers() {
		b := n.State().(*broker)
		b.log = entries
		b.producers[1] = producerState{seq: entries[len(entries)-1].Seq, last: int64(len(entries) - 1)}
	}
	c.ackedEnd = int64(len(entries))
	db := w.AddNode("db", BootSourceDB(&Recorder{}))
	db.State().(*SourceDB).slot = slot{Exists: true, Confirmed: entries[len(entries)-1].Txn.CommitLSN}
	spy := &startSpy{w: w}
	log := &readCounter{}
	w.AddNode("capture", func(n *sim.Node) any {
		spy.StreamClient = &StreamClient{From: n, DB: db}
		log.LogClient = &LogClient{From: n, Cluster: c}
		capture := &pipeline.Capture{Env: n.Env(), Source: spy, Log: log}
		n.Go("capture", func(ctx context.Context) { _ = capture.Run(ctx) })
		return nil
	})
	begin := w.Now()
	for spy.startedAt == 0 {
		if err := w.Run(w.Now() + 100*time.Millisecond); err != nil {
			tb.Fatal(err)
		}
		if w.Now()-begin > time.Hour {
			tb.Fatalf("the capture did not start streaming within an hour (virtual) on a log of %d records", len(entries))
		}
	}
	if spy.snapshots > 0 {
		tb.Fatalf("the capture took a snapshot on a log that holds a complete one")
	}
	return spy.startedAt - begin, log.read
}

// BenchmarkCaptureRestart is a capture starting on a simulated Kafka log of
// 10k, 100k and 1M records that ends in streamed transactions: the time
// (wall and virtual) and the records read until it streams again must not
// grow with the log.
func BenchmarkCaptureRestart(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			entries := restartLog(n)
			b.ReportAllocs()
			b.ResetTimer()
			var virt time.Duration
			var read int
			for b.Loop() {
				virt, read = restartOnce(b, entries)
			}
			b.ReportMetric(float64(virt.Microseconds())/1000, "virtual-ms")
			b.ReportMetric(float64(read), "records-read")
		})
	}
}

// A capture restart on a long simulated log reads a bounded tail: the old
// scan read every record back to the snapshot at the log's start.
func TestCaptureRestartReadsATail(t *testing.T) {
	for _, n := range []int{1000, 50_000} {
		virt, read := restartOnce(t, restartLog(n))
		if read > 300 {
			t.Errorf("%d records: the restart read %d of them, want a tail of at most 300", n, read)
		}
		if virt > time.Second {
			t.Errorf("%d records: the restart took %s (virtual), want under a second", n, virt)
		}
	}
}

// captureRig is a source, a log and a capture streaming between them, with
// a writer node committing to the source.
type captureRig struct {
	w       *sim.World
	db      *sim.Node
	cluster *Cluster
	writer  *sim.Node
}

func newCaptureRig(t *testing.T, seed uint64) *captureRig {
	t.Helper()
	w := newWorld(t, seed)
	r := &captureRig{w: w, cluster: NewCluster(w, "broker")}
	r.db = w.AddNode("db", BootSourceDB(&Recorder{}))
	r.writer = w.AddNode("writer", nil)
	w.AddNode("capture", func(n *sim.Node) any {
		c := &pipeline.Capture{Env: n.Env(), Source: &StreamClient{From: n, DB: r.db}, Log: &LogClient{From: n, Cluster: r.cluster}}
		n.Go("capture", func(ctx context.Context) { _ = c.Run(ctx) })
		return nil
	})
	return r
}

// commitAt commits one transaction per time given, from the writer.
func (r *captureRig) commitAt(times ...time.Duration) {
	r.writer.Go("app", func(ctx context.Context) {
		for i, at := range times {
			sleepUntil(ctx, r.writer, at)
			_, _ = (&SourceClient{From: r.writer, DB: r.db}).Exec(ctx, put(fmt.Sprint("k", i), "v"))
		}
	})
}

// lastInLog is the commit LSN of the log's last streamed transaction.
func (r *captureRig) lastInLog() model.LSN {
	var last model.LSN
	for _, rec := range r.cluster.Records() {
		if !rec.Txn.Snapshot {
			last = rec.Txn.CommitLSN
		}
	}
	return last
}

// When the source goes quiet, the capture confirms what the log holds: the
// slot reaches the last transaction appended. The old capture confirmed
// only when a new transaction arrived, at most every ConfirmEvery, so a
// last one appended within ConfirmEvery of the confirmation before it
// stayed unconfirmed for as long as the source was quiet.
func TestCaptureConfirmsWhenTheSourceGoesQuiet(t *testing.T) {
	r := newCaptureRig(t, 11)
	r.commitAt(time.Second, time.Second+50*time.Millisecond, time.Second+100*time.Millisecond)
	run(t, r.w, 3*time.Second)

	db := r.db.State().(*SourceDB)
	last := db.LastLSN()
	if got := r.lastInLog(); got != last {
		t.Fatalf("the log ends at %s, want the last commit %s", got, last)
	}
	if got := db.Confirmed(); got != last {
		t.Fatalf("after 2s quiet the slot is confirmed at %s, want the last transaction appended, %s", got, last)
	}
}
