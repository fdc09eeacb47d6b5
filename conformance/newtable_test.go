package conformance

import (
	"context"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/pgsource"
	"lockstep/pipeline/pgsource/pgtest"
	"lockstep/pipeline/store/pgstore"
)

// A table created after the snapshot reaches the replica typed, as the
// snapshot's tables do: the stream carries its definition (pgoutput's
// Relation message: columns, type OIDs, key) with the first transaction
// that changes it, and a column added later to any table gets its type the
// same way. Before, both came out as text until the next snapshot.
func TestTablesCreatedAfterTheSnapshotAreTyped(t *testing.T) {
	ctx, dsn, src, _, exec := realSource(t)
	exec(`CREATE TABLE t (pk text PRIMARY KEY, v text)`)
	exec(`INSERT INTO t VALUES ('a', 'x')`)
	stream, err := pgsource.NewStream(pgsource.Config{DSN: src, Slot: "typed"})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close(context.Background())
	snap, err := pipeline.ReadSnapshot(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Start(ctx); err != nil {
		t.Fatal(err)
	}
	exec(`CREATE TABLE items (id int PRIMARY KEY, price numeric(10,2), day date, tags text[])`)
	exec(`INSERT INTO items VALUES (1, 1.5, '2026-12-03', '{a,b}')`)
	exec(`ALTER TABLE items ADD COLUMN qty smallint`)
	exec(`ALTER TABLE t ADD COLUMN n int`)
	exec(`INSERT INTO items VALUES (2, 2.25, NULL, NULL, 3)`)
	exec(`UPDATE t SET n = 7 WHERE pk = 'a'`)
	exec(`INSERT INTO t VALUES ('end', 'end')`)
	var txns []model.Txn
	for done := false; !done; {
		got, err := stream.Next(ctx)
		if err != nil {
			t.Fatalf("stream after %d transactions: %v", len(txns), err)
		}
		for _, txn := range got {
			txns = append(txns, model.Net(txn))
			done = done || len(txn.Changes) > 0 && txn.Changes[0].PK == "end"
		}
	}

	rpool, err := pgxpool.New(ctx, pgtest.NewDatabase(t, dsn))
	if err != nil {
		t.Fatal(err)
	}
	defer rpool.Close()
	replica, err := pgstore.NewReplica(ctx, rpool, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := pipeline.Batch{Reset: true, Txns: append([]model.Txn{snap}, txns...), Position: model.Position{Offset: int64(len(txns) + 1), LSN: txns[len(txns)-1].CommitLSN}}
	if err := replica.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	types := func(table string) map[string]string {
		rows, err := rpool.Query(ctx, `SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
			WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE 'lockstep_%'`, "lockstep_replica."+table)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var name, typ string
			if err := rows.Scan(&name, &typ); err != nil {
				t.Fatal(err)
			}
			out[name] = typ
		}
		return out
	}
	if got, want := types("items"), map[string]string{"id": "integer", "price": "numeric(10,2)", "day": "date", "tags": "text[]", "qty": "smallint"}; !reflect.DeepEqual(got, want) {
		t.Errorf("the replica's items, created after the snapshot: columns %v, want %v", got, want)
	}
	if got, want := types("t"), map[string]string{"pk": "text", "v": "text", "n": "integer"}; !reflect.DeepEqual(got, want) {
		t.Errorf("the replica's t, a column added after the snapshot: columns %v, want %v", got, want)
	}
	tables, err := replica.Tables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == "items" && !reflect.DeepEqual(tb.Key, []string{"id"}) {
			t.Errorf("items is keyed by %v, want [id]", tb.Key)
		}
	}
	got, err := replica.ReadAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[model.Key]string{
		{Table: "items", PK: "1"}: model.R("price", "1.50", "day", "2026-12-03", "tags", "{a,b}").Encode(),
		{Table: "items", PK: "2"}: model.R("price", "2.25", "qty", "3").Encode(),
		{Table: "t", PK: "a"}:     model.R("v", "x", "n", "7").Encode(),
		{Table: "t", PK: "end"}:   model.R("v", "end").Encode(),
	}
	for k, v := range want {
		if d, ok := got.Docs[k]; !ok || d.Value != v {
			t.Errorf("replica %s = %q (%v), want %q", k, d.Value, ok, v)
		}
	}
}
