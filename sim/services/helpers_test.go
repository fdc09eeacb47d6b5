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

// Shared helpers for the services' tests. Tasks never call t.Fatal (they run
// on coroutines, not on the test goroutine): they record what they saw in
// variables the test checks after w.Run returns.

// newWorld returns a world for seed whose leftover tasks are stopped when the
// test ends.
func newWorld(t *testing.T, seed uint64) *sim.World {
	t.Helper()
	w := sim.New(sim.Config{Seed: seed})
	t.Cleanup(func() { w.Stop() })
	return w
}

// run advances w to virtual time until and fails the test if a task panicked.
func run(t *testing.T, w *sim.World, until time.Duration) {
	t.Helper()
	if err := w.Run(until); err != nil {
		t.Fatal(err)
	}
}

// sleepUntil parks the running task on n until virtual time at.
func sleepUntil(ctx context.Context, n *sim.Node, at time.Duration) {
	if d := at - n.World().Now(); d > 0 {
		_ = n.Env().Sleep(ctx, d)
	}
}

func row(v string) model.Row { return model.R("v", v) }

// put is a one-row upsert transaction on table t.
func put(pk, v string) pipeline.TxnFunc {
	return func(tx pipeline.Tx) error { tx.Put("t", pk, row(v)); return nil }
}

// txn is a hand-built committed transaction at lsn.
func txn(lsn model.LSN, changes ...model.Change) model.Txn {
	return model.Txn{XID: uint64(lsn), CommitLSN: lsn, Changes: changes}
}

func ins(pk, v string) model.Change {
	return model.Change{Table: "t", PK: pk, Op: model.OpInsert, Row: row(v)}
}

func upd(pk, v string) model.Change {
	return model.Change{Table: "t", PK: pk, Op: model.OpUpdate, Row: row(v)}
}

func del(pk string) model.Change { return model.Change{Table: "t", PK: pk, Op: model.OpDelete} }

func key(pk string) model.Key { return model.Key{Table: "t", PK: pk} }

// lsns lists the commit LSNs of txns.
func lsns(txns []model.Txn) []model.LSN {
	out := make([]model.LSN, len(txns))
	for i, t := range txns {
		out[i] = t.CommitLSN
	}
	return out
}

// truth replays txns into the state a correct store must project.
func truth(txns ...model.Txn) *model.State {
	s := model.NewState()
	for _, c := range txns {
		s.Apply(c)
	}
	return s
}

// diffDocs describes how got differs from want, or returns "" when equal.
func diffDocs(got, want model.Docs) string {
	var out string
	for _, k := range model.SortedKeys(want) {
		if g, ok := got[k]; !ok {
			out += fmt.Sprintf("\n  %v: missing, want %+v", k, want[k])
		} else if g != want[k] {
			out += fmt.Sprintf("\n  %v: %+v, want %+v", k, g, want[k])
		}
	}
	for _, k := range model.SortedKeys(got) {
		if _, ok := want[k]; !ok {
			out += fmt.Sprintf("\n  %v: %+v, want absent", k, got[k])
		}
	}
	return out
}
