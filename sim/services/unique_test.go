package services

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/store/storetest"
)

// uniqueT is table t with its column v unique.
var uniqueT = model.Table{Name: "t", Columns: []model.Column{{Name: "pk", Type: "text"}, {Name: "v", Type: "text"}}, Key: []string{"pk"}, Unique: [][]string{{"v"}}}

// The replica keeps the source's unique constraints, checked when a batch
// commits, or at every row written with the unique-row-by-row bug: it
// takes and refuses exactly the shared cases (storetest.UniqueCases) that
// PostgreSQL takes and refuses (pgstore runs them too). A refused batch
// changes nothing, not even after a crash, and the index is rebuilt at
// boot. The cache and the search index keep no constraints.
func TestReplicaUniqueConstraints(t *testing.T) {
	p0 := pos(1, 0x10)
	for _, c := range storetest.UniqueCases {
		for _, immediate := range []bool{false, true} {
			r := newStoreRig(t, 3, model.Replica)
			st := r.store.State().(*Store)
			if err := st.applyBatch(pipeline.Batch{Reset: true, Txns: []model.Txn{storetest.UniqueSnapshot}, Position: p0}, true, immediate, false); err != nil {
				t.Fatalf("%s: the snapshot: %v", c.Name, err)
			}
			before := r.snapshot()
			err := st.applyBatch(pipeline.Batch{Txns: []model.Txn{c.Txn}, Position: pos(2, 0x20), Base: &p0}, true, immediate, false)
			want := c.Deferred
			if immediate {
				want = c.Immediate
			}
			if got := err == nil; got != want {
				t.Errorf("%s (immediate=%v): applied=%v (%v), want %v", c.Name, immediate, got, err, want)
				continue
			}
			if err == nil {
				if d := diffDocs(r.snapshot().Docs, truth(storetest.UniqueSnapshot, c.Txn).Project(model.Replica)); d != "" {
					t.Errorf("%s (immediate=%v): after the batch:%s", c.Name, immediate, d)
				}
				continue
			}
			var uv *model.UniqueViolationError
			switch {
			case !errors.As(err, &uv) || uv.Table != "u":
				t.Errorf("%s (immediate=%v): refused with %v, want a unique violation on u", c.Name, immediate, err)
			case !immediate && !uv.Deferred:
				t.Errorf("%s: refused at the write; deferred constraints are checked at commit", c.Name)
			case immediate && c.Deferred && uv.Deferred:
				t.Errorf("%s: refused at commit; immediate constraints refuse it at the write", c.Name)
			}
			if got := r.snapshot(); !reflect.DeepEqual(got, before) {
				t.Errorf("%s (immediate=%v): a refused batch changed the store: %+v, was %+v", c.Name, immediate, got, before)
			}
			r.store.Crash()
			r.store.Restart()
			if got := r.snapshot(); !reflect.DeepEqual(got.Docs, before.Docs) || got.Position != before.Position {
				t.Errorf("%s (immediate=%v): after a crash the refused batch shows: %+v, was %+v", c.Name, immediate, got, before)
			}
			// The index was rebuilt: the same duplicate is refused again,
			// and the store takes a good batch.
			st = r.store.State().(*Store)
			dup := model.Change{Table: "u", PK: "c", Op: model.OpInsert, Row: model.R("email", "x")}
			if err := st.applyBatch(pipeline.Batch{Txns: []model.Txn{txn(0x20, dup)}, Position: pos(2, 0x20), Base: &p0}, true, immediate, false); err == nil {
				t.Errorf("%s (immediate=%v): after a restart a duplicate of x was taken", c.Name, immediate)
			}
			dup.Row = model.R("email", "fresh")
			if err := st.applyBatch(pipeline.Batch{Txns: []model.Txn{txn(0x20, dup)}, Position: pos(2, 0x20), Base: &p0}, true, immediate, false); err != nil {
				t.Errorf("%s (immediate=%v): after a restart: %v", c.Name, immediate, err)
			}
		}
	}
	for _, kind := range []model.StoreKind{model.Cache, model.Search} {
		r := newStoreRig(t, 3, kind)
		st := r.store.State().(*Store)
		if err := st.applyBatch(pipeline.Batch{Reset: true, Txns: []model.Txn{storetest.UniqueSnapshot}, Position: p0}, true, true, false); err != nil {
			t.Fatal(err)
		}
		dup := model.Txn{CommitLSN: 0x20, Changes: []model.Change{{Table: "u", PK: "b", Op: model.OpUpdate, Row: model.R("email", "x")}}}
		if err := st.applyBatch(pipeline.Batch{Txns: []model.Txn{dup}, Position: pos(2, 0x20), Base: &p0}, true, true, false); err != nil {
			t.Errorf("%s: refused %v; it keeps no constraints", kind, err)
		}
	}
}

// Dual writes' replica gets its tables from CreateTables and refuses a
// write that leaves a duplicate.
func TestReplicaDirectWriteKeepsConstraints(t *testing.T) {
	r := newStoreRig(t, 5, model.Replica)
	st := r.store.State().(*Store)
	st.CreateTables([]model.Table{uniqueT})
	if err := st.Load(txn(0x10, ins("a", "x"), ins("b", "y"))); err != nil {
		t.Fatal(err)
	}
	var swapErr, dupErr error
	r.applier.Go("write", func(ctx context.Context) {
		swapErr = r.client().Write(ctx, txn(0x20, upd("a", "y"), upd("b", "x")))
		dupErr = r.client().Write(ctx, txn(0x30, upd("a", "x")))
	})
	run(t, r.w, time.Second)
	var uv *model.UniqueViolationError
	if swapErr != nil || !errors.As(dupErr, &uv) {
		t.Fatalf("swap: %v, duplicate: %v; want the swap taken and the duplicate refused", swapErr, dupErr)
	}
}

// The source refuses a statement that would give two rows one unique
// value, as PostgreSQL's constraints checked at each statement do, and
// takes the ways applications move values: parked on a third value for a
// swap, deleted then inserted, moved with the row's key. Its snapshot
// carries the definitions; the index survives a crash.
func TestSourceUniqueConstraints(t *testing.T) {
	r := newSourceRig(t, 2)
	if err := r.source().Define(uniqueT); err != nil {
		t.Fatal(err)
	}
	if err := r.source().Define(uniqueT); err == nil {
		t.Fatal("a table defined twice")
	}
	exec := func(fn pipeline.TxnFunc) error {
		_, err := r.source().Exec(fn)
		return err
	}
	set := func(pk, v string) func(pipeline.Tx) { return func(tx pipeline.Tx) { tx.Put("t", pk, row(v)) } }
	do := func(steps ...func(pipeline.Tx)) pipeline.TxnFunc {
		return func(tx pipeline.Tx) error {
			for _, s := range steps {
				s(tx)
			}
			return nil
		}
	}
	if err := exec(do(set("a", "x"), set("b", "y"), func(tx pipeline.Tx) { tx.Put("t", "n1", model.Row{}); tx.Put("t", "n2", model.Row{}) })); err != nil {
		t.Fatal(err)
	}
	refused := func(what string, fn pipeline.TxnFunc) {
		t.Helper()
		var uv *model.UniqueViolationError
		if err := exec(fn); !errors.As(err, &uv) {
			t.Errorf("%s: %v, want a unique violation", what, err)
		}
	}
	refused("a duplicate", do(set("c", "x")))
	refused("a swap without parking", do(set("a", "y"), set("b", "x")))
	refused("a duplicate of a value written in the transaction", do(set("c", "z"), set("d", "z")))
	for _, c := range []struct {
		what string
		fn   pipeline.TxnFunc
	}{
		{"a swap parked on a third value", do(set("a", "p"), set("b", "x"), set("a", "y"))},
		{"delete then insert elsewhere", do(func(tx pipeline.Tx) { tx.Delete("t", "a") }, set("c", "y+"))},
		{"a rename keeps the value", do(func(tx pipeline.Tx) { tx.Rekey("t", "c", "d") })},
	} {
		if err := exec(c.fn); err != nil {
			t.Errorf("%s: %v", c.what, err)
		}
	}
	if err := exec(do(func(tx pipeline.Tx) { tx.Delete("t", "b") }, set("e", "x"))); err != nil {
		t.Errorf("the value x freed by a delete in the same transaction: %v", err)
	}
	if schema := r.source().Schema(); !reflect.DeepEqual(schema, []model.Table{uniqueT}) {
		t.Fatalf("snapshot schema %+v; want %+v", schema, uniqueT)
	}
	r.db.Crash()
	r.db.Restart()
	refused("after a restart, a duplicate", do(set("f", "x")))
	refused("after a restart, a duplicate of a moved value", do(set("f", "y+")))
	if err := exec(do(set("f", "y"))); err != nil {
		t.Errorf("after a restart, y is free: %v", err)
	}
}
