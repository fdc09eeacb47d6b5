package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"lockstep/model"
	"lockstep/pipeline"
)

// Unique constraints in a replica. A source transaction's net changes (one
// per row, model.Net) may break a unique constraint half-way when applied
// one row at a time, though the transaction's end state breaks none: a
// swap of two values, a value moved to a row the transaction touched
// before it deleted the row that held it. A replica whose constraints are
// checked at commit (DEFERRABLE INITIALLY DEFERRED) takes those; one whose
// constraints are checked at every row (immediate) refuses them. Both
// refuse a transaction whose end state holds a value twice. UniqueCases
// are such transactions with what each replica must do, run by RunUnique
// against a real replica and by the simulated replica's own test, so the
// simulator refuses exactly what PostgreSQL refuses.

// UniqueTable is the cases' table: email is unique, age an integer.
var UniqueTable = model.Table{Name: "u",
	Columns: []model.Column{{Name: "pk", Type: "text"}, {Name: "email", Type: "text"}, {Name: "age", Type: "integer"}},
	Key:     []string{"pk"}, Unique: [][]string{{"email"}}}

func urow(email, age string) model.Row {
	r := model.Row{}
	if email != "" {
		r.Set("email", email)
	}
	if age != "" {
		r.Set("age", age)
	}
	return r
}

func uchange(op model.Op, pk string, row model.Row) model.Change {
	return model.Change{Table: "u", PK: pk, Op: op, Row: row}
}

// UniqueSnapshot is where every case starts: a holds x, b holds y, n1 no
// email (NULL), at LSN 0x10, with the table's definition.
var UniqueSnapshot = model.Txn{CommitLSN: 0x10, Snapshot: true, Schema: []model.Table{UniqueTable}, Changes: []model.Change{
	uchange(model.OpInsert, "a", urow("x", "30")),
	uchange(model.OpInsert, "b", urow("y", "41")),
	uchange(model.OpInsert, "n1", urow("", "7")),
}}

// UniqueCase is a net transaction at LSN 0x20 after UniqueSnapshot, and
// whether a replica takes it with deferred and with immediate constraints.
type UniqueCase struct {
	Name                string
	Txn                 model.Txn
	Deferred, Immediate bool
}

func utxn(changes ...model.Change) model.Txn {
	return model.Txn{XID: 0x20, CommitLSN: 0x20, Changes: changes}
}

// UniqueCases are the shapes the workloads write and the ones they must
// never reach a replica as.
var UniqueCases = []UniqueCase{
	{"swap", utxn(uchange(model.OpUpdate, "a", urow("y", "30")), uchange(model.OpUpdate, "b", urow("x", "41"))), true, false},
	{"move to a row touched first, then delete the holder",
		utxn(uchange(model.OpUpdate, "b", urow("x", "42")), uchange(model.OpDelete, "a", nil)), true, false},
	{"delete then insert under another key", utxn(uchange(model.OpDelete, "a", nil), uchange(model.OpInsert, "c", urow("x", "5"))), true, true},
	{"the holder moves on first", utxn(uchange(model.OpUpdate, "a", urow("z", "30")), uchange(model.OpUpdate, "b", urow("x", "41"))), true, true},
	{"the holder moves on second", utxn(uchange(model.OpUpdate, "b", urow("x", "41")), uchange(model.OpUpdate, "a", urow("z", "30"))), true, false},
	{"a second NULL", utxn(uchange(model.OpInsert, "n2", urow("", "8"))), true, true},
	{"a duplicate at the end", utxn(uchange(model.OpUpdate, "b", urow("x", "41"))), false, false},
	{"a duplicate inserted", utxn(uchange(model.OpInsert, "c", urow("y", "1"))), false, false},
}

// RunUnique applies each case to a replica that open returns empty, with
// immediate constraints or deferred ones: after UniqueSnapshot (a reset
// batch), the case as a guarded batch on top. A case taken must leave the
// replica at the source's state; one refused must be refused as a unique
// violation (SQLSTATE 23505 on PostgreSQL; the error need not say so in
// Go terms) and leave the replica as it was, position included.
func RunUnique(t *testing.T, open func(t *testing.T, immediate bool) Store) {
	for _, immediate := range []bool{false, true} {
		for _, c := range UniqueCases {
			name := c.Name + "/deferred"
			want := c.Deferred
			if immediate {
				name, want = c.Name+"/immediate", c.Immediate
			}
			t.Run(name, func(t *testing.T) {
				ctx := context.Background()
				st := open(t, immediate)
				p0 := model.Position{Offset: 1, LSN: 0x10}
				if err := st.Apply(ctx, pipeline.Batch{Reset: true, Txns: []model.Txn{UniqueSnapshot}, Position: p0}); err != nil {
					t.Fatalf("the snapshot: %v", err)
				}
				before, err := st.ReadAll(ctx)
				if err != nil {
					t.Fatal(err)
				}
				err = st.Apply(ctx, pipeline.Batch{Txns: []model.Txn{c.Txn}, Position: model.Position{Offset: 2, LSN: 0x20}, Base: &p0})
				if (err == nil) != want {
					t.Fatalf("taken=%v (%v), want %v", err == nil, err, want)
				}
				if errors.Is(err, pipeline.ErrPositionMismatch) {
					t.Fatalf("refused for its position, not its values: %v", err)
				}
				after, rerr := st.ReadAll(ctx)
				if rerr != nil {
					t.Fatal(rerr)
				}
				wantDocs := before.Docs
				if err == nil {
					s := model.NewState()
					s.Apply(UniqueSnapshot)
					s.Apply(c.Txn)
					wantDocs = s.Project(model.Replica)
				}
				if d := diff(after.Docs, wantDocs); d != "" {
					t.Fatalf("documents:%s", d)
				}
				if err != nil && !reflect.DeepEqual(after.Position, before.Position) {
					t.Fatalf("a refused batch moved the position to %v", after.Position)
				}
			})
		}
	}
}
