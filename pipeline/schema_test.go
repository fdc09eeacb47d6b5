package pipeline

import (
	"reflect"
	"testing"

	"lockstep/model"
)

var defs = []model.Table{{Name: "users", Columns: []model.Column{{Name: "pk"}, {Name: "email"}}, Key: []string{"pk"}, Unique: [][]string{{"email"}}}}

// A snapshot cut into chunks carries its table definitions in the first
// chunk only; the rest would repeat them for nothing.
func TestSplitSnapshotKeepsSchemaInFirstChunk(t *testing.T) {
	snap := model.Txn{CommitLSN: 10, Snapshot: true, Schema: defs}
	for i := range 5 {
		snap.Changes = append(snap.Changes, model.Change{Table: "users", PK: string(rune('a' + i)), Op: model.OpInsert, Row: model.Row{}})
	}
	chunks := SplitSnapshot(snap, 2)
	if len(chunks) != 3 {
		t.Fatalf("%d chunks, want 3", len(chunks))
	}
	for i, c := range chunks {
		if want := i == 0; (c.Schema != nil) != want || (want && !reflect.DeepEqual(c.Schema, defs)) {
			t.Errorf("chunk %d has schema %v", i, c.Schema)
		}
	}
}

// A rebuild's fold carries the definitions of the last snapshot it folds,
// so the replica it resets creates its tables from them; a snapshot
// without definitions (an older log) leaves none.
func TestFoldKeepsTheLastSnapshotsSchema(t *testing.T) {
	older := []model.Table{{Name: "old", Columns: []model.Column{{Name: "pk"}}, Key: []string{"pk"}}}
	snap1 := model.Txn{CommitLSN: 10, Snapshot: true, Schema: older}
	snap2 := model.Txn{CommitLSN: 30, Snapshot: true, Schema: defs}
	txn := model.Txn{CommitLSN: 40, Changes: []model.Change{{Table: "users", PK: "a", Op: model.OpInsert, Row: model.R("email", "x")}}}
	b := Fold([]Batch{
		{Reset: true, Txns: []model.Txn{snap1}, Position: model.Position{Offset: 1, LSN: 10}},
		{Reset: true, Txns: []model.Txn{snap2, txn}, Position: model.Position{Offset: 3, LSN: 40}},
	})
	if !b.Reset || len(b.Txns) != 1 || !reflect.DeepEqual(b.Txns[0].Schema, defs) {
		t.Fatalf("fold: %+v, want the second snapshot's schema", b)
	}
	b = Fold([]Batch{{Reset: true, Txns: []model.Txn{{CommitLSN: 10, Snapshot: true}}, Position: model.Position{Offset: 1, LSN: 10}}})
	if b.Txns[0].Schema != nil {
		t.Fatalf("fold of a snapshot without definitions has %v", b.Txns[0].Schema)
	}
}
