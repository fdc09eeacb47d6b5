package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/pgsource/pgtest"
	"lockstep/pipeline/store/storetest"
)

// TestPostgres runs every test against one throwaway cluster.
func TestPostgres(t *testing.T) {
	dsn := pgtest.Start(t)
	open := func(t *testing.T) *pgxpool.Pool {
		t.Helper()
		pool, err := pgxpool.New(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return pool
	}
	t.Run("ReplicaConformance", func(t *testing.T) {
		storetest.Run(t, storetest.Harness{Kind: model.Replica, Open: func(t *testing.T, blind bool) storetest.Store {
			r, err := NewReplica(ctx(t), open(t), Options{Blind: blind})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}})
	})
	t.Run("SearchConformance", func(t *testing.T) {
		storetest.Run(t, storetest.Harness{Kind: model.Search, Open: func(t *testing.T, blind bool) storetest.Store {
			s, err := NewSearch(ctx(t), open(t), Options{Blind: blind})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}})
	})
	t.Run("ReplicaUnique", func(t *testing.T) {
		n := 0
		storetest.RunUnique(t, func(t *testing.T, immediate bool) storetest.Store {
			n++
			r, err := NewReplica(ctx(t), open(t), Options{Prefix: fmt.Sprintf("uniq%d_", n), ImmediateUnique: immediate})
			if err != nil {
				t.Fatal(err)
			}
			return r
		})
	})
	t.Run("ReplicaTables", func(t *testing.T) { testReplicaTables(t, open(t)) })
	t.Run("ReplicaBatchIsAtomic", func(t *testing.T) { testReplicaAtomic(t, open(t)) })
	t.Run("SearchBulksAreNot", func(t *testing.T) { testSearchNotAtomic(t, open(t)) })
	t.Run("SearchQuery", func(t *testing.T) { testSearchQuery(t, open(t)) })
	t.Run("ConcurrentAppliers", func(t *testing.T) { testConcurrentAppliers(t, open(t)) })
	t.Run("Prefixes", func(t *testing.T) { testPrefixes(t, open(t)) })
	t.Run("DroppedDocsLosePosition", func(t *testing.T) { testDroppedDocs(t, open(t)) })
	t.Run("SearchRevsFrom", func(t *testing.T) { testSearchRevsFrom(t, open(t)) })
	t.Run("SearchOverlappingRebuilds", func(t *testing.T) { testSearchOverlappingRebuilds(t, open(t)) })
	t.Run("ReplicaReadBeginsDuringReset", func(t *testing.T) { testReadBeginsDuringReset(t, open(t)) })
}

// A whole read that begins while a rebuild that drops a table is under way
// sees the rebuild whole. The rebuild holds the definitions' table's lock
// from before its first DROP; the reader locks that table before its
// first query, so its snapshot comes after the rebuild's commit. (A reader
// whose snapshot came first, its lock wait only at the definitions, would
// find the dropped table made again and empty to it, beside the old
// position: a torn read.) A third session reading the table holds the
// rebuild at its DROP, with the lock taken, while the reader begins.
func testReadBeginsDuringReset(t *testing.T, pool *pgxpool.Pool) {
	c := storetest.ResetCases[1] // a column added: the table is made again
	r, err := NewReplica(ctx(t), pool, Options{Prefix: "during_"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(ctx(t), c.Before); err != nil {
		t.Fatal(err)
	}
	holder, err := pool.Begin(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(ctx(t)) }()
	if _, err := holder.Exec(ctx(t), `SELECT count(*) FROM during_replica.t`); err != nil {
		t.Fatal(err)
	}
	reset := make(chan error, 1)
	go func() { reset <- r.Apply(ctx(t), c.After) }()
	if err := pgtest.AwaitLockWaiters(ctx(t), pool, 1, nil); err != nil {
		t.Fatal(err)
	}
	type read struct {
		snap model.Snapshot
		err  error
	}
	reads := make(chan read, 1)
	go func() {
		w, err := r.BeginRead(ctx(t))
		if err != nil {
			reads <- read{err: err}
			return
		}
		snap, err := w.Finish(ctx(t))
		reads <- read{snap, err}
	}()
	if err := pgtest.AwaitLockWaiters(ctx(t), pool, 2, nil); err != nil {
		t.Fatal(err)
	}
	if err := holder.Commit(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-reset; err != nil {
		t.Fatalf("the rebuild: %v", err)
	}
	got := <-reads
	if saw, detail := c.Classify(got.snap, got.err); saw != storetest.SawAfter {
		t.Fatalf("a read that began during the rebuild saw %s, want the rebuild whole: %s", saw, detail)
	}
}

// Two rebuilds of an empty index overlap: both are Fresh, and the index has
// no position until a rebuild's last request. The second's reset, between
// the first's requests, removes what the first wrote; the first must not go
// on to save its position over an index without those documents (it did:
// the Fresh check still passed). Here the second stops after its reset, as
// a crashed applier would, and the first is refused at its next request.
func testSearchOverlappingRebuilds(t *testing.T, pool *pgxpool.Pool) {
	opts := Options{Prefix: "overlap_", BulkDocs: 4}
	first, err := NewSearch(ctx(t), pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	second, err := NewSearch(ctx(t), pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	snap := model.Txn{CommitLSN: 0x50, Snapshot: true}
	for i := range 16 {
		snap.Changes = append(snap.Changes, ins(fmt.Sprintf("k%02d", i), model.R("v", "1")))
	}
	rebuild := pipeline.Batch{Reset: true, Fresh: true, Txns: []model.Txn{snap}, Position: pos(1, 0x50)}
	errCrashed := errors.New("crashed after its reset")
	requests := 0
	first.afterBulk = func() error {
		if requests++; requests == 3 { // its reset and two bulks of documents
			second.afterBulk = func() error { return errCrashed }
			if err := second.Apply(ctx(t), rebuild); !errors.Is(err, errCrashed) {
				t.Fatalf("the second rebuild: %v", err)
			}
		}
		return nil
	}
	err = first.Apply(ctx(t), rebuild)
	got, rerr := first.ReadAll(ctx(t))
	if rerr != nil {
		t.Fatal(rerr)
	}
	if got.HasPosition && len(got.Docs) != len(snap.Changes) {
		t.Fatalf("the first rebuild (%v) saved %s over %d of %d documents", err, got.Position, len(got.Docs), len(snap.Changes))
	}
	if !errors.Is(err, pipeline.ErrPositionMismatch) || got.HasPosition {
		t.Fatalf("the first rebuild after another's reset: %v, position saved: %v; want refused, none", err, got.HasPosition)
	}
}

// The search index counts revisions from the snapshot it was last reset to
// (seen in the soak: after a mid-run snapshot every document counted one
// revision, and the checker, counting from the first commit, called 48,283
// of them lost). It says so in ReadAll's RevsFrom, which the checker judges
// revisions from.
func testSearchRevsFrom(t *testing.T, pool *pgxpool.Pool) {
	s, err := NewSearch(ctx(t), pool, Options{Prefix: "revsfrom_"})
	if err != nil {
		t.Fatal(err)
	}
	upd := func(lsn model.LSN, v string) model.Txn {
		return model.Txn{CommitLSN: lsn, Changes: []model.Change{{Table: "t", PK: "a", Op: model.OpUpdate, Row: model.R("v", v)}}}
	}
	read := func() (model.LSN, int) {
		snap, err := s.ReadAll(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return snap.RevsFrom, snap.Docs[model.Key{Table: "t", PK: "a"}].Revs
	}
	steps := []struct {
		b        pipeline.Batch
		from     model.LSN
		revs     int
		happened string
	}{
		{pipeline.Batch{Txns: []model.Txn{{CommitLSN: 0x10, Changes: []model.Change{ins("a", model.R("v", "1"))}}, upd(0x20, "2")}, Position: pos(2, 0x20)}, 0, 2, "an insert and an update"},
		{pipeline.Batch{Reset: true, Txns: []model.Txn{{CommitLSN: 0x25, Snapshot: true, Changes: []model.Change{ins("a", model.R("v", "2"))}}, upd(0x30, "3")}, Position: pos(4, 0x30)}, 0x25, 2, "a reset to a snapshot at 0/25 and an update"},
		{pipeline.Batch{Txns: []model.Txn{upd(0x40, "4")}, Position: pos(5, 0x40)}, 0x25, 3, "one more update"},
	}
	for _, st := range steps {
		if err := s.Apply(ctx(t), st.b); err != nil {
			t.Fatal(err)
		}
		if from, revs := read(); from != st.from || revs != st.revs {
			t.Fatalf("after %s: counts from %s, a has %d revs; want from %s, %d revs", st.happened, from, revs, st.from, st.revs)
		}
	}
}

// Documents dropped under a store take its position with them (seen: a
// replica's data table dropped under a running applier came back empty at
// the next start and the applier carried on from its saved position, 1 of
// 11 rows, "caught up"). While the table is gone the store has no
// position; a store opened again over the empty table has none either; a
// rebuild recreates the table.
func testDroppedDocs(t *testing.T, pool *pgxpool.Pool) {
	for _, kind := range []model.StoreKind{model.Replica, model.Search} {
		t.Run(kind.String(), func(t *testing.T) {
			opts := Options{Prefix: "dropped_" + kind.String() + "_"}
			open := func() pipeline.Store {
				var st pipeline.Store
				var err error
				if kind == model.Replica {
					st, err = NewReplica(ctx(t), pool, opts)
				} else {
					st, err = NewSearch(ctx(t), pool, opts)
				}
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
			st := open()
			one := model.Txn{CommitLSN: 10, Changes: []model.Change{ins("a", model.R("v", "1"))}}
			if err := st.Apply(ctx(t), pipeline.Batch{Txns: []model.Txn{one}, Position: pos(1, 10)}); err != nil {
				t.Fatal(err)
			}
			// The replica's documents are its tables, listed in
			// Prefix+"replica_tables"; the search index's are one table.
			docs := opts.Prefix + kind.String() + "_docs"
			if kind == model.Replica {
				docs = opts.Prefix + "replica_tables"
			}
			if _, err := pool.Exec(ctx(t), `DROP TABLE `+docs); err != nil {
				t.Fatal(err)
			}
			if p, ok, err := st.Position(ctx(t)); err != nil || ok {
				t.Fatalf("with its documents dropped the store says it is at %v (%v, %v); want no position", p, ok, err)
			}
			st = open() // the applier restarts: the table is created again, empty
			if p, ok, err := st.Position(ctx(t)); err != nil || ok {
				t.Fatalf("opened over a new, empty documents table the store says it is at %v (%v, %v); want no position", p, ok, err)
			}
			if _, err := pool.Exec(ctx(t), `DROP TABLE `+docs); err != nil {
				t.Fatal(err)
			}
			// The rebuild of a running store whose table is gone.
			if err := st.Apply(ctx(t), pipeline.Batch{Reset: true, Txns: []model.Txn{one}, Position: pos(1, 10)}); err != nil {
				t.Fatalf("rebuild after the table was dropped: %v", err)
			}
			if p, ok, err := st.Position(ctx(t)); err != nil || !ok || p != pos(1, 10) {
				t.Fatalf("after the rebuild: %v, %v, %v; want at 1/10", p, ok, err)
			}
			if kind == model.Replica {
				// A data table dropped takes the position too.
				if _, err := pool.Exec(ctx(t), `DROP TABLE `+opts.Prefix+`replica.t`); err != nil {
					t.Fatal(err)
				}
				if p, ok, err := st.Position(ctx(t)); err != nil || ok {
					t.Fatalf("with table t dropped the replica says it is at %v (%v, %v); want no position", p, ok, err)
				}
				if err := st.Apply(ctx(t), pipeline.Batch{Reset: true, Txns: []model.Txn{one}, Position: pos(1, 10)}); err != nil {
					t.Fatalf("rebuild after table t was dropped: %v", err)
				}
			}
			var n int
			rows := docs
			if kind == model.Replica {
				rows = opts.Prefix + "replica.t"
			}
			if err := pool.QueryRow(ctx(t), `SELECT count(*) FROM `+rows).Scan(&n); err != nil || n != 1 {
				t.Fatalf("after the rebuild the table holds %d documents (%v); want 1", n, err)
			}
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func ins(pk string, row model.Row) model.Change {
	return model.Change{Table: "t", PK: pk, Op: model.OpInsert, Row: row}
}

func pos(off int64, lsn model.LSN) model.Position { return model.Position{Offset: off, LSN: lsn} }

// PostgreSQL refuses a NUL byte in text, which makes a statement in the
// middle of a batch fail.
var bad = model.R("v", "bad\x00value")

// A replica batch that fails part way leaves no trace: no document, no
// position.
func testReplicaAtomic(t *testing.T, pool *pgxpool.Pool) {
	r, err := NewReplica(ctx(t), pool, Options{Prefix: "atomic_"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(ctx(t), pipeline.Batch{Txns: []model.Txn{{CommitLSN: 10, Changes: []model.Change{ins("a", model.R("v", "1"))}}}, Position: pos(1, 10)}); err != nil {
		t.Fatal(err)
	}
	before, err := r.ReadAll(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	b := pipeline.Batch{Base: &before.Position, Position: pos(4, 40), Txns: []model.Txn{
		{CommitLSN: 20, Changes: []model.Change{ins("b", model.R("v", "2")), {Table: "t", PK: "a", Op: model.OpDelete}}},
		{CommitLSN: 30, Changes: []model.Change{ins("c", bad)}},
		{CommitLSN: 40, Changes: []model.Change{ins("d", model.R("v", "4"))}},
	}}
	if err := r.Apply(ctx(t), b); err == nil {
		t.Fatal("a batch with a NUL byte applied")
	}
	after, err := r.ReadAll(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !equalSnap(before, after) {
		t.Fatalf("a failed batch changed the replica: %+v -> %+v", before, after)
	}
	if err := r.Apply(ctx(t), pipeline.Batch{Txns: []model.Txn{{CommitLSN: math.MaxInt64 + 1}}, Position: pos(5, math.MaxInt64+1)}); err == nil {
		t.Fatal("an LSN above the bigint range was accepted")
	}
}

func equalSnap(a, b model.Snapshot) bool {
	if a.HasPosition != b.HasPosition || a.Position != b.Position || len(a.Docs) != len(b.Docs) {
		return false
	}
	for k, d := range a.Docs {
		if b.Docs[k] != d {
			return false
		}
	}
	return true
}

// The search index takes a batch in bulk requests with no atomicity across
// them: a failure leaves the earlier requests applied and the position
// where it was, and applying the batch again completes it exactly once.
func testSearchNotAtomic(t *testing.T, pool *pgxpool.Pool) {
	s, err := NewSearch(ctx(t), pool, Options{Prefix: "bulk_"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Clear(ctx(t)); err != nil {
		t.Fatal(err)
	}
	start := pos(0, 0)
	if err := s.Apply(ctx(t), pipeline.Batch{Position: start}); err != nil {
		t.Fatal(err)
	}
	var txns []model.Txn
	for i := range 20 {
		txns = append(txns, model.Txn{CommitLSN: model.LSN(10 + i), Changes: []model.Change{ins(fmt.Sprint("k", i), model.R("v", fmt.Sprint("word", i)))}})
	}
	broken := slices.Clone(txns)
	broken[17] = model.Txn{CommitLSN: 27, Changes: []model.Change{ins("k17", bad)}}
	b := pipeline.Batch{Txns: broken, Position: pos(20, 29), Base: &start}
	if err := s.Apply(ctx(t), b); err == nil {
		t.Fatal("a batch with a NUL byte applied")
	}
	snap, err := s.ReadAll(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Docs) != BulkDocs || snap.Position != start {
		t.Fatalf("after a failure in the second bulk request: %d docs at %s, want the first %d at %s", len(snap.Docs), snap.Position, BulkDocs, start)
	}
	b.Txns = txns
	if err := s.Apply(ctx(t), b); err != nil {
		t.Fatal(err)
	}
	snap, err = s.ReadAll(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Docs) != 20 || snap.Position != b.Position {
		t.Fatalf("after applying again: %d docs at %s", len(snap.Docs), snap.Position)
	}
	for k, d := range snap.Docs {
		if d.Revs != 1 {
			t.Fatalf("%s counted %d revisions, want 1", k, d.Revs)
		}
	}
}

// The index is searchable by the document's terms.
func testSearchQuery(t *testing.T, pool *pgxpool.Pool) {
	s, err := NewSearch(ctx(t), pool, Options{Prefix: "query_"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Clear(ctx(t)); err != nil {
		t.Fatal(err)
	}
	err = s.Apply(ctx(t), pipeline.Batch{Position: pos(2, 20), Txns: []model.Txn{
		{CommitLSN: 10, Changes: []model.Change{
			{Table: "users", PK: "u1", Op: model.OpInsert, Row: model.R("name", "Ann Lee", "bio", "likes Tango")},
			{Table: "users", PK: "u2", Op: model.OpInsert, Row: model.R("name", "Bo Lee", "bio", "golf")},
		}},
		{CommitLSN: 20, Changes: []model.Change{{Table: "users", PK: "u3", Op: model.OpInsert, Row: model.R("name", "Cy", "bio", "tango")}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	query := func(terms string, want ...string) {
		t.Helper()
		keys, err := s.Query(ctx(t), terms)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range keys {
			got = append(got, k.PK)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Query(%q) = %v, want %v", terms, got, want)
		}
	}
	query("tango", "u1", "u3")
	query("LEE", "u1", "u2")
	query("ann lee", "u1")
	query("chess")
	err = s.Apply(ctx(t), pipeline.Batch{Position: pos(3, 30), Base: new(pos(2, 20)), Txns: []model.Txn{
		{CommitLSN: 30, Changes: []model.Change{{Table: "users", PK: "u1", Op: model.OpDelete}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	query("tango", "u3")
}

// Two appliers sending a batch from the same base: one wins, the other is
// refused, and the store holds the winner's batch only. For the search index
// that holds for batches of one bulk request; with more, the loser's earlier
// requests may land before the winner moves the position (no atomicity
// across requests), as in a search engine.
func testConcurrentAppliers(t *testing.T, pool *pgxpool.Pool) {
	r, err := NewReplica(ctx(t), pool, Options{Prefix: "race_"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSearch(ctx(t), pool, Options{Prefix: "race_"})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []storetest.Store{r, s} {
		docs := 20
		if st.Kind() == model.Search {
			docs = BulkDocs
		}
		t.Run(st.Kind().String(), func(t *testing.T) {
			if err := st.Clear(ctx(t)); err != nil {
				t.Fatal(err)
			}
			base := pos(0, 0)
			if err := st.Apply(ctx(t), pipeline.Batch{Position: base}); err != nil {
				t.Fatal(err)
			}
			for round := range 5 {
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for i := range 2 {
					wg.Go(func() {
						var changes []model.Change
						for j := range docs {
							changes = append(changes, ins(fmt.Sprint("k", j), model.R("writer", fmt.Sprint(i))))
						}
						next := pos(base.Offset+1, base.LSN+model.LSN(1+i))
						errs[i] = st.Apply(ctx(t), pipeline.Batch{Txns: []model.Txn{{CommitLSN: next.LSN, Changes: changes}}, Position: next, Base: &base})
					})
				}
				wg.Wait()
				winner := storetest.OneWinner(t, round, base, errs)
				snap, err := st.ReadAll(ctx(t))
				if err != nil {
					t.Fatal(err)
				}
				want := pos(base.Offset+1, base.LSN+model.LSN(1+winner))
				if snap.Position != want {
					t.Fatalf("round %d: position %s, want the winner's %s", round, snap.Position, want)
				}
				for k, d := range snap.Docs {
					if d.LSN != want.LSN {
						t.Fatalf("round %d: %s holds %+v, not the winner's write", round, k, d)
					}
				}
				base = want
			}
		})
	}
}

// Stores with different prefixes share a database without seeing each
// other; the same prefix is the same store.
func testPrefixes(t *testing.T, pool *pgxpool.Pool) {
	if _, err := NewReplica(ctx(t), pool, Options{Prefix: "Bad-Prefix"}); err == nil {
		t.Fatal("a prefix that is not a plain identifier was accepted")
	}
	a, err := NewReplica(ctx(t), pool, Options{Prefix: "one_"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewReplica(ctx(t), pool, Options{Prefix: "two_", Name: "replica2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*Replica{a, b} {
		if err := st.Clear(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Apply(ctx(t), pipeline.Batch{Txns: []model.Txn{{CommitLSN: 10, Changes: []model.Change{ins("a", model.R("v", "1"))}}}, Position: pos(1, 10)}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.Position(ctx(t)); err != nil || ok {
		t.Fatalf("the other prefix's store has a position: %v, %v", ok, err)
	}
	snap, err := b.ReadAll(ctx(t))
	if err != nil || len(snap.Docs) != 0 || snap.Store != "replica2" {
		t.Fatalf("the other prefix's store: %+v, %v", snap, err)
	}
	again, err := NewReplica(ctx(t), pool, Options{Prefix: "one_"})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok, err := again.Position(ctx(t)); err != nil || !ok || p != pos(1, 10) {
		t.Fatalf("same prefix, new store: position %s, %v, %v", p, ok, err)
	}
}

// The replica's tables are the source's: typed columns, a composite key, a
// table without a key (lockstep_key), unique constraints checked at commit
// (or at each row with ImmediateUnique). Values come back in the text form
// they went in with, the definitions survive a new connection, and a table
// or column with no definition is made as text.
func testReplicaTables(t *testing.T, pool *pgxpool.Pool) {
	accounts := model.Table{Name: "accounts",
		Columns: []model.Column{{Name: "branch", Type: "integer"}, {Name: "id", Type: "text"}, {Name: "balance", Type: "numeric(12,2)"},
			{Name: "opened", Type: "date"}, {Name: "owner", Type: "character varying(20)"}},
		Key: []string{"branch", "id"}, Unique: [][]string{{"owner"}}}
	events := model.Table{Name: "events", Columns: []model.Column{{Name: "seq", Type: "integer"}, {Name: "note", Type: "text"}}}
	snap := model.Txn{CommitLSN: 0x10, Snapshot: true, Schema: []model.Table{accounts, events}, Changes: []model.Change{
		{Table: "accounts", PK: "1,a", Op: model.OpInsert, Row: model.R("balance", "10.50", "opened", "2024-02-29", "owner", "ann")},
		{Table: "accounts", PK: "2,b", Op: model.OpInsert, Row: model.R("balance", "0.00", "owner", "bob")},
		{Table: "events", PK: `(1,"a b")`, Op: model.OpInsert, Row: model.R("seq", "1", "note", "a b")},
	}}
	r, err := NewReplica(ctx(t), pool, Options{Prefix: "typed_"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(ctx(t), pipeline.Batch{Reset: true, Txns: []model.Txn{snap}, Position: pos(1, 0x10)}); err != nil {
		t.Fatal(err)
	}
	var cols []string
	rows, err := pool.Query(ctx(t), `SELECT column_name || ' ' || data_type FROM information_schema.columns
		WHERE table_schema = 'typed_replica' AND table_name = 'accounts' ORDER BY ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, c)
	}
	if want := []string{"branch integer", "id text", "balance numeric", "opened date", "owner character varying", "lockstep_lsn bigint"}; !slices.Equal(cols, want) {
		t.Fatalf("columns %q, want %q", cols, want)
	}
	var key, uniq string
	if err := pool.QueryRow(ctx(t), `SELECT
		(SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'typed_replica.accounts'::regclass AND contype = 'p'),
		(SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'typed_replica.accounts'::regclass AND contype = 'u')`).Scan(&key, &uniq); err != nil {
		t.Fatal(err)
	}
	if key != "PRIMARY KEY (branch, id)" || uniq != "UNIQUE (owner) DEFERRABLE INITIALLY DEFERRED" {
		t.Fatalf("constraints %q and %q", key, uniq)
	}
	// Swap the owners, delete the event, and write tables and a column
	// no definition has.
	swap := model.Txn{CommitLSN: 0x20, Changes: []model.Change{
		{Table: "accounts", PK: "1,a", Op: model.OpUpdate, Row: model.R("balance", "10.50", "opened", "2024-02-29", "owner", "bob")},
		{Table: "accounts", PK: "2,b", Op: model.OpUpdate, Row: model.R("balance", "1.25", "owner", "ann", "extra", "new column")},
		{Table: "events", PK: `(1,"a b")`, Op: model.OpDelete},
		{Table: "later", PK: "k", Op: model.OpInsert, Row: model.R("v", "1")},
		{Table: "nulls", PK: "k", Op: model.OpInsert, Row: model.Row{}}, // a row of NULLs: no column to infer
	}}
	if err := r.Apply(ctx(t), pipeline.Batch{Txns: []model.Txn{swap}, Position: pos(2, 0x20), Base: new(pos(1, 0x10))}); err != nil {
		t.Fatal(err)
	}
	truth := model.NewState()
	truth.Apply(snap)
	truth.Apply(swap)
	r2, err := NewReplica(ctx(t), pool, Options{Prefix: "typed_"}) // a new connection knows the tables
	if err != nil {
		t.Fatal(err)
	}
	got, err := r2.ReadAll(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if d := diffDocs(got.Docs, truth.Project(model.Replica)); d != "" {
		t.Fatalf("after the swap:%s", d)
	}
	if d, ok, err := r2.Read(ctx(t), model.Key{Table: "accounts", PK: "2,b"}); err != nil || !ok || d.Value != "balance=1.25;extra=new column;owner=ann" || d.LSN != 0x20 {
		t.Fatalf("read 2,b: %+v %v %v", d, ok, err)
	}
	defs, err := r2.Tables(ctx(t))
	if err != nil || len(defs) != 4 || defs[0].Name != "accounts" || defs[2].Name != "later" || defs[3].Name != "nulls" {
		t.Fatalf("tables %+v, %v", defs, err)
	}
	if c, ok := defs[0].Column("extra"); !ok || c.Type != "text" {
		t.Fatalf("the added column: %+v %v", c, ok)
	}
	// A value the column's type refuses fails the batch.
	bad := model.Txn{CommitLSN: 0x30, Changes: []model.Change{{Table: "events", PK: "(x,)", Op: model.OpInsert, Row: model.R("seq", "x")}}}
	if err := r2.Apply(ctx(t), pipeline.Batch{Txns: []model.Txn{bad}, Position: pos(3, 0x30), Base: new(pos(2, 0x20))}); err == nil {
		t.Fatal("an integer column took x")
	}
	// Dual writes: the application creates the tables.
	d, err := NewReplica(ctx(t), pool, Options{Prefix: "typed_dual_"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CreateTables(ctx(t), []model.Table{accounts}); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx(t), model.Txn{CommitLSN: 0x10, Changes: snap.Changes[:2]}); err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx(t), model.Txn{CommitLSN: 0x20, Changes: []model.Change{{Table: "accounts", PK: "2,b", Op: model.OpUpdate, Row: model.R("owner", "ann")}}}); err == nil {
		t.Fatal("a duplicate owner was written")
	}
}

func diffDocs(got, want model.Docs) string {
	var out string
	for _, k := range model.SortedKeys(want) {
		if g, ok := got[k]; !ok || g != want[k] {
			out += fmt.Sprintf("\n  %v: %+v (%v), want %+v", k, g, ok, want[k])
		}
	}
	for _, k := range model.SortedKeys(got) {
		if _, ok := want[k]; !ok {
			out += fmt.Sprintf("\n  %v: %+v, want absent", k, got[k])
		}
	}
	return out
}
