package pgxa_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/pgsource"
	"lockstep/pipeline/pgsource/pgtest"
	"lockstep/pipeline/realenv"
	"lockstep/pipeline/store/pgstore"
	"lockstep/pipeline/twopc"
)

// PREPARE TRANSACTION needs max_prepared_transactions above its default 0.
func init() { pgtest.Settings["max_prepared_transactions"] = "20" }

// memLog is a decision log in memory that can kill its coordinator (end
// its context) the moment a decision is durable.
type memLog struct {
	ds       []twopc.Decision
	onCommit func()
}

func (l *memLog) Commit(_ context.Context, d twopc.Decision) error {
	l.ds = append(l.ds, d)
	if l.onCommit != nil {
		l.onCommit()
	}
	return nil
}

func (l *memLog) Done(_ context.Context, gid string) error {
	l.ds = slices.DeleteFunc(l.ds, func(d twopc.Decision) bool { return d.GID == gid })
	return nil
}

func (l *memLog) Decisions(context.Context) ([]twopc.Decision, error) { return slices.Clone(l.ds), nil }

// The coordinator on real PostgreSQL, with the source, the replica and the
// search index each a database of its own: one killed the moment it logged
// its decision leaves the transaction prepared in all three, invisible,
// and its row locked (another transaction on it gets ErrLockTimeout); one
// killed before deciding leaves another prepared on the source. A new
// coordinator's recovery commits the first everywhere and rolls back the
// second (presumed abort): nothing is left in doubt. The simulated
// participants' rules are these.
func TestCoordinatorOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: needs a PostgreSQL server (-short)")
	}
	cluster := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := func() *pgxpool.Pool {
		p, err := pgxpool.New(ctx, pgtest.NewDatabase(t, cluster))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	srcPool := pool()
	if err := pgsource.CreateTables(ctx, srcPool, map[string][]string{"t": {"v"}}); err != nil {
		t.Fatal(err)
	}
	replica, err := pgstore.NewReplica(ctx, pool(), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := replica.CreateTables(ctx, []model.Table{{Name: "t", Columns: []model.Column{{Name: "pk", Type: "text"}, {Name: "v", Type: "text"}}, Key: []string{"pk"}}}); err != nil {
		t.Fatal(err)
	}
	search, err := pgstore.NewSearch(ctx, pool(), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src := &pgsource.Prepared{Source: pgsource.Source{Pool: srcPool}, LockTimeout: 200 * time.Millisecond}
	stores := []twopc.Store{pgstore.PreparedReplica(replica), pgstore.PreparedSearch(search)}
	put := func(pk, v string) pipeline.TxnFunc {
		return func(tx pipeline.Tx) error { tx.Put("t", pk, model.R("v", v)); return nil }
	}
	log := &memLog{}
	coordinator := func(id string) *twopc.Coordinator {
		return &twopc.Coordinator{Env: &realenv.Env{}, ID: id, Source: src, Stores: stores, Log: log}
	}
	prepared := func() [][]string {
		var out [][]string
		for _, l := range []func(context.Context) ([]string, error){src.Prepared, stores[0].Prepared, stores[1].Prepared} {
			gids, err := l(ctx)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, gids)
		}
		return out
	}
	visible := func(k string) (docs []string) {
		for _, read := range []func(context.Context, model.Key) (model.Doc, bool, error){replica.Read, search.Read} {
			d, ok, err := read(ctx, model.Key{Table: "t", PK: k})
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				docs = append(docs, d.Value)
			}
		}
		return docs
	}

	killed, kill := context.WithCancel(ctx)
	log.onCommit = kill
	if err := coordinator("c#1").Do(killed, put("a", "1")); !errors.Is(err, context.Canceled) {
		t.Fatalf("the killed coordinator's transaction: %v, want it cut off by the kill", err)
	}
	log.onCommit = nil
	if _, err := src.Prepare(ctx, "c#1.2", put("b", "1")); err != nil { // killed before deciding
		t.Fatal(err)
	}
	if got, want := prepared(), [][]string{{"c#1.1", "c#1.2"}, {"c#1.1"}, {"c#1.1"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("prepared (source, replica, search): %v, want %v", got, want)
	}
	if docs := visible("a"); len(docs) != 0 {
		t.Errorf("a prepared transaction is visible in the stores: %v", docs)
	}
	if _, err := src.Prepare(ctx, "other", put("a", "2")); !errors.Is(err, twopc.ErrLockTimeout) {
		t.Errorf("a transaction on the in-doubt row: %v, want ErrLockTimeout", err)
	}
	if err := stores[0].CommitPrepared(ctx, "no-such", 0); !errors.Is(err, twopc.ErrUnknownGID) {
		t.Errorf("commit of an unknown gid: %v, want ErrUnknownGID", err)
	}

	restarted := coordinator("c#2")
	if err := restarted.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if got := prepared(); slices.ContainsFunc(got, func(g []string) bool { return len(g) > 0 }) || len(log.ds) != 0 {
		t.Fatalf("after recovery: prepared %v, decisions %v; want none", got, log.ds)
	}
	if docs := visible("a"); len(docs) != 2 {
		t.Errorf("the decided transaction after recovery: %v in the replica and the search index, want it in both", docs)
	}
	if docs := visible("b"); len(docs) != 0 {
		t.Errorf("the undecided transaction reached the stores: %v", docs)
	}
	var n int
	if err := srcPool.QueryRow(ctx, "SELECT count(*) FROM t WHERE pk = 'a' AND v = '1'").Scan(&n); err != nil || n != 1 {
		t.Errorf("the source: %d rows a=1 (%v), want 1", n, err)
	}
	if err := restarted.Do(ctx, put("a", "3")); err != nil {
		t.Errorf("a transaction on the row once it was resolved: %v", err)
	}
}
