package services

import (
	"context"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/store/storetest"
	"lockstep/sim"
)

// wholeReadRig is a replica, its applier and a reader, each step run to its
// end before the next.
type wholeReadRig struct {
	t *testing.T
	*storeRig
	reader *sim.Node
}

func newWholeReadRig(t *testing.T) *wholeReadRig {
	r := newStoreRig(t, 1, model.Replica)
	return &wholeReadRig{t: t, storeRig: r, reader: r.w.AddNode("reader", nil)}
}

// do runs fn as a task on n until it returns.
func (r *wholeReadRig) do(n *sim.Node, fn func(ctx context.Context)) {
	r.t.Helper()
	done := false
	n.Go("step", func(ctx context.Context) { fn(ctx); done = true })
	for !done {
		run(r.t, r.w, r.w.Now()+time.Second)
	}
}

func (r *wholeReadRig) apply(b pipeline.Batch, ddl bool) {
	r.t.Helper()
	var err error
	c := &StoreClient{From: r.applier, To: r.store, StoreKind: model.Replica, DDLReset: ddl}
	r.do(r.applier, func(ctx context.Context) { err = c.Apply(ctx, b) })
	if err != nil {
		r.t.Fatal(err)
	}
}

// begin takes a whole read's snapshot.
func (r *wholeReadRig) begin() *WholeRead {
	r.t.Helper()
	var wr *WholeRead
	var err error
	r.do(r.reader, func(ctx context.Context) { wr, err = BeginReadAll(ctx, r.reader, r.store, time.Second) })
	if err != nil {
		r.t.Fatal(err)
	}
	return wr
}

// A whole read whose snapshot came before a rebuild sees the replica as its
// snapshot had it, whatever the rebuild changed; with the reset-by-ddl bug
// it sees the rebuilt tables empty beside the old position (or fails, for
// a table gone), as on PostgreSQL (conformance runs the same cases there).
func TestWholeReadDuringReset(t *testing.T) {
	for _, c := range storetest.ResetCases {
		for _, ddl := range []bool{false, true} {
			r := newWholeReadRig(t)
			r.apply(c.Before, ddl)
			wr := r.begin()
			r.apply(c.After, ddl)
			var snap model.Snapshot
			var err error
			r.do(r.reader, func(ctx context.Context) { snap, err = wr.Finish(ctx) })
			got, detail := c.Classify(snap, err)
			if want := c.Want(ddl); got != want {
				t.Errorf("%s, reset-by-ddl=%v: the reader saw %s, want %s: %s", c.Name, ddl, got, want, detail)
			}
			// A read that starts after the rebuild sees all of it.
			r.do(r.reader, func(ctx context.Context) { snap, err = ReadAll(ctx, r.reader, r.store, time.Second) })
			if got, detail := c.Classify(snap, err); got != storetest.SawAfter {
				t.Errorf("%s, reset-by-ddl=%v: a read after the rebuild saw %s: %s", c.Name, ddl, got, detail)
			}
		}
	}
}

// A store that restarts during a whole read ends the read's transaction:
// the read fails rather than mixing two sessions.
func TestWholeReadFailsWhenTheStoreRestarts(t *testing.T) {
	c := storetest.ResetCases[0]
	r := newWholeReadRig(t)
	r.apply(c.Before, false)
	wr := r.begin()
	r.store.Crash()
	r.store.Restart()
	var err error
	r.do(r.reader, func(ctx context.Context) { _, err = wr.Finish(ctx) })
	if err == nil {
		t.Fatal("a whole read across a restart of the store succeeded")
	}
}
