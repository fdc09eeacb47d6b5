package store

import (
	"slices"
	"testing"

	"lockstep/model"
)

func ch(op model.Op, pk string, row model.Row) model.Change {
	return model.Change{Table: "t", PK: pk, Op: op, Row: row}
}

func TestKeys(t *testing.T) {
	got := Keys([]model.Txn{
		{Changes: []model.Change{ch(model.OpInsert, "b", nil), ch(model.OpDelete, "a", nil)}},
		{Changes: []model.Change{{Table: "t", PK: "c", OldPK: "b", Op: model.OpUpdate}, {Table: "s", PK: "z", OldPK: "z", Op: model.OpUpdate}}},
	})
	want := []model.Key{{Table: "s", PK: "z"}, {Table: "t", PK: "a"}, {Table: "t", PK: "b"}, {Table: "t", PK: "c"}}
	if !slices.Equal(got, want) {
		t.Fatalf("Keys = %v, want %v", got, want)
	}
}

func TestOverlayGuardAndTombstones(t *testing.T) {
	k := model.Key{Table: "t", PK: "k"}
	loaded := map[model.Key]Slot{k: {Doc: model.Doc{Value: "old", LSN: 10, Revs: 2}, Live: true}}
	o := NewOverlay(model.Search, true, loaded)
	o.Apply(ch(model.OpUpdate, "k", model.R("v", "stale")), 10) // same version: skipped
	if s := o.Get(k); s.Doc.Value != "old" {
		t.Fatalf("a change at the stored version applied: %+v", s)
	}
	o.Apply(ch(model.OpUpdate, "k", model.R("v", "New words")), 20)
	if s := o.Get(k); s.Doc != (model.Doc{Value: "new words", LSN: 20, Revs: 3}) {
		t.Fatalf("update: %+v", s)
	}
	o.Apply(ch(model.OpDelete, "k", nil), 30)
	if s := o.Get(k); !s.Tomb || s.Live || s.Doc.LSN != 30 {
		t.Fatalf("delete in search: %+v, want a tombstone at 30", s)
	}
	o.Apply(ch(model.OpInsert, "k", model.R("v", "again")), 25) // redelivered: stays deleted
	if s := o.Get(k); !s.Tomb {
		t.Fatalf("an older insert resurrected a tombstone: %+v", s)
	}
	o.Apply(ch(model.OpUpdate, "k", model.R("v", "again")), 40)
	if s := o.Get(k); s.Doc != (model.Doc{Value: "again", LSN: 40, Revs: 1}) || !s.Live {
		t.Fatalf("write after a tombstone: %+v, want a fresh count", s)
	}
	if ws := o.Changed(); len(ws) != 1 || ws[0].Key != k || !ws[0].Slot.Live {
		t.Fatalf("Changed = %+v", ws)
	}
	if loaded[k].Doc.Value != "old" {
		t.Fatal("the overlay modified the loaded slots")
	}

	// The cache keeps no tombstone; a blind overlay skips the guard.
	c := NewOverlay(model.Cache, false, loaded)
	c.Apply(ch(model.OpUpdate, "k", model.R("v", "older")), 5)
	if s := c.Get(k); s.Doc != (model.Doc{Value: "v=older", LSN: 5}) {
		t.Fatalf("blind cache write: %+v", s)
	}
	c.Apply(model.Change{Table: "t", PK: "j", OldPK: "k", Op: model.OpUpdate, Row: model.R("v", "moved")}, 6)
	if s := c.Get(k); s != (Slot{}) {
		t.Fatalf("moved key still there in the cache: %+v", s)
	}
	if d := c.Docs(); len(d) != 1 || d[model.Key{Table: "t", PK: "j"}].Value != "v=moved" {
		t.Fatalf("Docs = %v", d)
	}
}

func TestChunks(t *testing.T) {
	var txns []model.Txn
	for i := range 7 {
		txns = append(txns, model.Txn{CommitLSN: model.LSN(i + 1), Changes: []model.Change{ch(model.OpInsert, "a", nil), ch(model.OpInsert, "b", nil), ch(model.OpInsert, "c", nil)}})
	}
	chunks := Chunks(txns, 16)
	if len(chunks) != 2 || len(chunks[0]) != 16 || len(chunks[1]) != 5 {
		t.Fatalf("21 changes in chunks of 16: %d chunks", len(chunks))
	}
	if chunks[0][15].LSN != 6 || chunks[1][4].LSN != 7 {
		t.Fatalf("chunk LSNs: %d, %d", chunks[0][15].LSN, chunks[1][4].LSN)
	}
	if Chunks(nil, 16) != nil {
		t.Fatal("no changes, some chunks")
	}
}

// Revs describes ProjectChange's revision rule exactly, for every kind and
// kind of change.
func TestRevsMatchesProjectChange(t *testing.T) {
	changes := []model.Change{
		ch(model.OpInsert, "k", model.R("v", "a")),
		ch(model.OpUpdate, "k", model.R("v", "a")),
		{Table: "t", PK: "k", Op: model.OpInsert, Row: model.R("v", "a"), Revs: 4},
		{Table: "t", PK: "k", Op: model.OpUpdate, Row: model.R("v", "a"), Revs: 2},
	}
	for _, kind := range []model.StoreKind{model.Replica, model.Cache, model.Search} {
		for _, c := range changes {
			fresh, relative, step := Revs(kind, c, 9)
			if want := model.ProjectChange(kind, c, 9, model.Doc{}, false); fresh != want {
				t.Fatalf("%s %s: fresh %+v, want %+v", kind, c, fresh, want)
			}
			for _, prev := range []int{0, 1, 2, 7} {
				want := model.ProjectChange(kind, c, 9, model.Doc{Value: "x", LSN: 3, Revs: prev}, true).Revs
				got := fresh.Revs
				if relative {
					got = prev + step
				}
				if got != want {
					t.Fatalf("%s %s over a document with %d revisions: %d, want %d", kind, c, prev, got, want)
				}
			}
		}
	}
}

// Unchanged columns come from rows written earlier in the same batch (a
// snapshot that reset the store, an earlier transaction) before the store's
// own rows; the store is asked only for the rest, once per key.
func TestResolveUnchanged(t *testing.T) {
	big := "BIG"
	snap := model.Txn{CommitLSN: 10, Snapshot: true, Changes: []model.Change{
		{Table: "t", PK: "7", Op: model.OpInsert, Row: model.R("v", "g", "blob", big)}}}
	moved := model.Txn{CommitLSN: 20, Changes: []model.Change{
		{Table: "t", PK: "107", OldPK: "7", Op: model.OpUpdate, Row: model.R("v", "g3"), Unchanged: []string{"blob"}}}}
	other := model.Txn{CommitLSN: 30, Changes: []model.Change{
		{Table: "t", PK: "9", Op: model.OpUpdate, Row: model.R("v", "i"), Unchanged: []string{"blob"}}}}
	var asked []model.Key
	load := func(keys []model.Key) (map[model.Key]model.Row, error) {
		asked = append(asked, keys...)
		return map[model.Key]model.Row{{Table: "t", PK: "9"}: model.R("v", "h", "blob", "STORED")}, nil
	}
	out, err := ResolveUnchanged([]model.Txn{snap, moved, other}, load)
	if err != nil {
		t.Fatal(err)
	}
	if got := out[1].Changes[0]; got.Row.Get("blob") != big || len(got.Unchanged) != 0 {
		t.Errorf("moved row = %+v, want the snapshot's blob filled in", got)
	}
	if got := out[2].Changes[0]; got.Row.Get("blob") != "STORED" || got.Row.Get("v") != "i" {
		t.Errorf("row 9 = %+v, want the stored blob and the new v", got)
	}
	if len(asked) != 1 || asked[0].PK != "9" {
		t.Errorf("asked the store for %v, want only t/9", asked)
	}
}

// A batch applied again after a partial application (a search index's bulk
// requests; the outcome of the first try unknown): the first try moved row
// 7 to 107, so the store holds 107, resolved then, and no longer 7 (or a
// later row there). The move's unchanged columns and those of a later
// update of 107 must come from 107's stored row. Resolved from the missing
// old key, the big value was lost on the search index (partitions seed 164
// of the campaign).
func TestResolveUnchangedAfterAPartialApply(t *testing.T) {
	moved := model.Txn{CommitLSN: 20, Changes: []model.Change{
		{Table: "t", PK: "7", Op: model.OpDelete},
		{Table: "t", PK: "107", Op: model.OpInsert, Row: model.R("v", "g3"), Unchanged: []string{"blob"}, From: "7"}}}
	later := model.Txn{CommitLSN: 30, Changes: []model.Change{
		{Table: "t", PK: "107", Op: model.OpUpdate, Row: model.R("v", "g4"), Unchanged: []string{"blob"}}}}
	for _, stored := range []map[model.Key]model.Row{
		{{Table: "t", PK: "107"}: model.R("v", "g3", "blob", "BIG")},                                                          // 7 deleted by the first try
		{{Table: "t", PK: "107"}: model.R("v", "g3", "blob", "BIG"), {Table: "t", PK: "7"}: model.R("v", "new", "blob", "X")}, // 7 written again since
	} {
		load := func(keys []model.Key) (map[model.Key]model.Row, error) {
			out := map[model.Key]model.Row{}
			for _, k := range keys {
				if r, ok := stored[k]; ok {
					out[k] = r
				}
			}
			return out, nil
		}
		out, err := ResolveUnchanged([]model.Txn{moved, later}, load)
		if err != nil {
			t.Fatal(err)
		}
		if got := out[0].Changes[1].Row; got.Get("blob") != "BIG" {
			t.Errorf("stored %v: the move's row %v, want 107's stored blob", stored, got)
		}
		if got := out[1].Changes[0].Row; got.Get("blob") != "BIG" || got.Get("v") != "g4" {
			t.Errorf("stored %v: the later update's row %v, want the blob kept and the new v", stored, got)
		}
	}
}
