package conformance

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/pgsource"
	"lockstep/pipeline/pgsource/pgtest"
	"lockstep/pipeline/store/pgstore"
)

// The transactions that left every store wrong on real PostgreSQL 15, run
// against a real server, decoded from pgoutput and applied to the real
// replica and search adapters: as the applier hands them over (net) the
// stores end equal to the source's table; as raw changes (the old rule,
// bug switch lsn-only-version) they do not.
func TestFieldDefectsOnRealPostgres(t *testing.T) {
	ctx, dsn, src, pool, exec := realSource(t)
	big := strings.Repeat("0123456789abcdef", 300) // 4,800 bytes, stored out of line
	// The default replica identity (the key), as applications have it.
	exec(`CREATE TABLE t (pk text PRIMARY KEY, v text, blob text)`,
		`ALTER TABLE t ALTER COLUMN blob SET STORAGE EXTERNAL`,
		`CREATE PUBLICATION lockstep FOR TABLE t`,
		`INSERT INTO t VALUES ('1','a',NULL), ('2','b',NULL), ('3','c',NULL), ('6','f',NULL), ('7','g','`+big+`')`)
	stream, err := pgsource.NewStream(pgsource.Config{DSN: src, Slot: "field"})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close(context.Background())
	snap, err := pipeline.ReadSnapshot(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	// One transaction each, as reported.
	shapes := [][]string{
		{`UPDATE t SET v='f1' WHERE pk='6'`, `UPDATE t SET v='f2' WHERE pk='6'`},
		{`INSERT INTO t VALUES ('5','e',NULL)`, `UPDATE t SET v='e2' WHERE pk='5'`},
		{`UPDATE t SET v='b2' WHERE pk='2'`, `DELETE FROM t WHERE pk='2'`},
		{`UPDATE t SET v='a2' WHERE pk='1'`, `UPDATE t SET pk='101' WHERE pk='1'`},
		{`DELETE FROM t WHERE pk='3'`, `INSERT INTO t VALUES ('3','c2',NULL)`},
		{`UPDATE t SET v='g2' WHERE pk='7'`}, // blob unchanged: not sent
		{`UPDATE t SET pk='107' WHERE pk='7'`, `UPDATE t SET v='g3' WHERE pk='107'`},
	}
	for _, s := range shapes {
		exec(s...)
	}
	if _, err := stream.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var txns []model.Txn
	for len(txns) < len(shapes) {
		got, err := stream.Next(ctx)
		if err != nil {
			t.Fatalf("stream after %d of %d transactions: %v", len(txns), len(shapes), err)
		}
		txns = append(txns, got...)
	}
	sawUnchanged := false
	for _, txn := range txns {
		for _, c := range txn.Changes {
			sawUnchanged = sawUnchanged || len(c.Unchanged) > 0
		}
	}
	if !sawUnchanged {
		t.Fatalf("no change marked an unchanged TOAST column: %v", txns)
	}

	want := sourceDocs(ctx, t, pool)
	for _, mode := range []struct {
		name string
		net  bool
	}{{"net", true}, {"raw", false}} {
		batch := pipeline.Batch{Txns: []model.Txn{snap}, Reset: true, Position: model.Position{Offset: int64(len(txns) + 1), LSN: txns[len(txns)-1].CommitLSN}}
		for _, txn := range txns {
			if mode.net {
				txn = model.Net(txn)
			}
			batch.Txns = append(batch.Txns, txn)
		}
		spool, err := pgxpool.New(ctx, pgtest.NewDatabase(t, dsn))
		if err != nil {
			t.Fatal(err)
		}
		defer spool.Close()
		replica, err := pgstore.NewReplica(ctx, spool, pgstore.Options{Prefix: mode.name + "_"})
		if err != nil {
			t.Fatal(err)
		}
		search, err := pgstore.NewSearch(ctx, spool, pgstore.Options{Prefix: mode.name + "_"})
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range []interface {
			pipeline.Store
			ReadAll(context.Context) (model.Snapshot, error)
		}{replica, search} {
			if err := st.Apply(ctx, batch); err != nil {
				t.Fatalf("%s %s: %v", mode.name, st.Kind(), err)
			}
			got, err := st.ReadAll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			diff := docsDiff(got.Docs, want, st.Kind())
			switch {
			case mode.net && diff != "":
				t.Errorf("%s applied net transactions and differs from the source: %s", st.Kind(), diff)
			case !mode.net && diff == "":
				t.Errorf("%s applied raw changes and still equals the source: the test does not exercise the old rule", st.Kind())
			}
		}
	}
}

// realSource starts a throwaway PostgreSQL 15 (dsn) with a source database
// (src, pool) and returns a context that ends with the test and exec, which
// runs statements in one transaction, failing the test on an error.
func realSource(t *testing.T) (ctx context.Context, dsn, src string, pool *pgxpool.Pool, exec func(sql ...string)) {
	t.Helper()
	dsn = pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	src = pgtest.NewDatabase(t, dsn)
	pool, err := pgxpool.New(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	exec = func(sql ...string) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range sql {
			if _, err := tx.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return ctx, dsn, src, pool, exec
}

// sourceDocs is the source table as rows (NULL columns absent, as the
// decoder gives them).
func sourceDocs(ctx context.Context, t *testing.T, pool *pgxpool.Pool) map[model.Key]model.Row {
	rows, err := pool.Query(ctx, `SELECT pk, v, blob FROM t`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[model.Key]model.Row{}
	for rows.Next() {
		var pk string
		var v, blob *string
		if err := rows.Scan(&pk, &v, &blob); err != nil {
			t.Fatal(err)
		}
		r := model.Row{}
		if v != nil {
			r.Set("v", *v)
		}
		if blob != nil {
			r.Set("blob", *blob)
		}
		out[model.Key{Table: "t", PK: pk}] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// docsDiff compares a store's documents with the rows they must project.
func docsDiff(got model.Docs, want map[model.Key]model.Row, kind model.StoreKind) string {
	var out []string
	for k, r := range want {
		d, ok := got[k]
		w := model.ProjectEntry(kind, model.Entry{Row: r})
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s missing", k))
		case d.Value != w.Value:
			out = append(out, fmt.Sprintf("%s = %.60q, want %.60q", k, d.Value, w.Value))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("%s should not be there", k))
		}
	}
	return strings.Join(out, "; ")
}
