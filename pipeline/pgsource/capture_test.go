package pgsource

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/realenv"
)

// syncLog is an in-memory pipeline.Log a test can read while a capture
// appends to it.
type syncLog struct {
	mu   sync.Mutex
	recs []pipeline.Record
}

func (l *syncLog) Produce(_ context.Context, txns []model.Txn) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range txns {
		l.recs = append(l.recs, pipeline.Record{Offset: int64(len(l.recs)), Txn: t})
	}
	return int64(len(l.recs) - 1), nil
}

func (l *syncLog) Fetch(_ context.Context, off int64, max int) ([]pipeline.Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if off >= int64(len(l.recs)) {
		return nil, nil
	}
	return append([]pipeline.Record(nil), l.recs[off:min(int(off)+max, len(l.recs))]...), nil
}

func (l *syncLog) End(context.Context) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(len(l.recs)), nil
}

func (l *syncLog) Start(context.Context) (int64, error)             { return 0, nil }
func (l *syncLog) Commit(context.Context, string, int64) error      { return nil }
func (l *syncLog) Committed(context.Context, string) (int64, error) { return 0, nil }

// lsnOf is the commit LSN of the transaction xid in the log, 0 when the
// log does not hold it (Source.Exec cannot tell a commit's LSN).
func (l *syncLog) lsnOf(xid uint64) model.LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if !r.Txn.Snapshot && r.Txn.XID == xid {
			return r.Txn.CommitLSN
		}
	}
	return 0
}

// waitFor polls cond until it holds, failing the test after 15s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
	}
}

// runCapture runs a capture of s into log until the returned stop is
// called; stop returns Run's error.
func runCapture(e *pgEnv, s *Stream, log pipeline.Log) (stop func() error) {
	ctx, cancel := context.WithCancel(e.ctx)
	c := &pipeline.Capture{Env: &realenv.Env{Base: ctx}, Source: s, Log: log, ConfirmEvery: time.Hour}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

// testCaptureConfirms: a capture on a real slot confirms what the log holds
// when the source goes quiet, and everything the log acknowledged when it
// is stopped. ConfirmEvery is an hour, so of the transactions streamed only
// those in the first batch are confirmed as they arrive; the old capture
// left the rest unconfirmed (the slot behind, and a restart streaming them
// again).
func testCaptureConfirms(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"t": {"v"}})
	log := &syncLog{}
	s := e.stream(Config{})
	stop := runCapture(e, s, log)
	waitFor(t, "snapshot appended", func() bool { end, _ := log.End(e.ctx); return end > 0 })
	first := e.exec(put("t", "a", model.R("v", "1")))
	waitFor(t, "first transaction appended", func() bool { return log.lsnOf(first.XID) != 0 })
	quiet := e.exec(put("t", "b", model.R("v", "2")))
	waitFor(t, "last transaction appended", func() bool { return log.lsnOf(quiet.XID) != 0 })
	last := log.lsnOf(quiet.XID).String()
	waitFor(t, "quiet source: slot at the last transaction, "+last, func() bool { return e.slotLSN(s.cfg.Slot) == last })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("capture stopped with %v", err)
	}
	s.Close(e.ctx)

	// Stopped before the source went quiet for long (Next returns none
	// only after an hour): the stop confirms.
	s = e.stream(Config{Slot: s.cfg.Slot, IdleInterval: time.Hour})
	stop = runCapture(e, s, log)
	for i := range 2 {
		txn := e.exec(put("t", fmt.Sprint("c", i), model.R("v", "3")))
		waitFor(t, "transaction appended", func() bool { return log.lsnOf(txn.XID) != 0 })
		last = log.lsnOf(txn.XID).String()
	}
	if lsn := e.slotLSN(s.cfg.Slot); lsn == last {
		t.Fatalf("slot at %s before the stop: the test cannot tell a stop's confirmation", lsn)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("capture stopped with %v", err)
	}
	s.Close(e.ctx)
	waitFor(t, "clean stop: slot at the last transaction, "+last, func() bool { return e.slotLSN(s.cfg.Slot) == last })
}
