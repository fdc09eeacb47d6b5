package pgsource

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"lockstep/model"
	"lockstep/pipeline"
	"lockstep/pipeline/pgsource/pgtest"
)

// TestPostgres runs the adapters against a real PostgreSQL 15 on loopback:
// one throwaway cluster, a database of its own for each subtest, all in
// parallel.
func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: needs a PostgreSQL server (-short)")
	}
	dsn := pgtest.Start(t)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, dsn string)
	}{
		{"SnapshotThenStream", testSnapshotThenStream},
		{"ConfirmResume", testConfirmResume},
		{"MultiRowAtomic", testMultiRowAtomic},
		{"AbortedNeverAppears", testAbortedNeverAppears},
		{"Keepalive", testKeepalive},
		{"SourceRoundTrip", testSourceRoundTrip},
		{"KeyChangeAndToast", testKeyChangeAndToast},
		{"ToastShapes", testToastShapes},
		{"UnchangedToast", testUnchangedToast},
		{"CheckTables", testCheckTables},
		{"WholeRowKey", testWholeRowKey},
		{"KeylessAtRuntime", testKeylessAtRuntime},
		{"Truncate", testTruncate},
		{"SnapshotMapping", testSnapshotMapping},
		{"SlotLifecycle", testSlotLifecycle},
		{"CaptureConfirms", testCaptureConfirms},
		{"SnapshotSchema", testSnapshotSchema},
		{"SnapshotSQLASCII", testSnapshotSQLASCII},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, pgtest.NewDatabase(t, dsn))
		})
	}
}

type pgEnv struct {
	t    *testing.T
	ctx  context.Context
	dsn  string
	pool *pgxpool.Pool
	src  *Source
}

var slotCount atomic.Int64

func newEnv(t *testing.T, dsn string, tables map[string][]string) *pgEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	t.Cleanup(cancel)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if tables != nil {
		if err := CreateTables(ctx, pool, tables); err != nil {
			t.Fatal(err)
		}
	}
	return &pgEnv{t: t, ctx: ctx, dsn: dsn, pool: pool, src: &Source{Pool: pool}}
}

// stream makes a Stream on a slot no other subtest uses (unless cfg names
// one), closed when the test ends.
func (e *pgEnv) stream(cfg Config) *Stream {
	e.t.Helper()
	if cfg.DSN == "" {
		cfg.DSN = e.dsn
	}
	if cfg.Slot == "" {
		cfg.Slot = fmt.Sprintf("slot%d", slotCount.Add(1))
	}
	s, err := NewStream(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func (e *pgEnv) exec(fn pipeline.TxnFunc) model.Txn {
	e.t.Helper()
	txn, err := e.src.Exec(e.ctx, fn)
	if err != nil {
		e.t.Fatalf("Exec: %v", err)
	}
	return txn
}

func (e *pgEnv) sql(q string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

func (e *pgEnv) start(s *Stream) model.Txn {
	e.t.Helper()
	snap, err := pipeline.ReadSnapshot(e.ctx, s)
	if err != nil {
		e.t.Fatalf("Snapshot: %v", err)
	}
	from, err := s.Start(e.ctx)
	if err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	if from != snap.CommitLSN {
		e.t.Fatalf("Start after Snapshot at %s returned %s", snap.CommitLSN, from)
	}
	return snap
}

// collect reads exactly n transactions.
func (e *pgEnv) collect(s *Stream, n int) []model.Txn {
	e.t.Helper()
	var got []model.Txn
	for len(got) < n {
		txns, err := s.Next(e.ctx)
		if err != nil {
			e.t.Fatalf("Next after %d of %d transactions: %v", len(got), n, err)
		}
		got = append(got, txns...)
	}
	if len(got) > n {
		e.t.Fatalf("want %d transactions, got %d: %v", n, len(got), got)
	}
	return got
}

// next is Next, asked again while it returns nothing (the source is quiet).
func (e *pgEnv) next(s *Stream) ([]model.Txn, error) {
	for {
		txns, err := s.Next(e.ctx)
		if err != nil || len(txns) > 0 {
			return txns, err
		}
	}
}

// idle reads s for d, expecting nothing: it returns what came and the
// error that ended the reading (context.DeadlineExceeded when nothing
// did), and how many times Next returned empty meanwhile.
func (e *pgEnv) idle(s *Stream, d time.Duration) ([]model.Txn, int, error) {
	ctx, cancel := context.WithTimeout(e.ctx, d)
	defer cancel()
	var got []model.Txn
	empty := 0
	for {
		txns, err := s.Next(ctx)
		if err != nil {
			return got, empty, err
		}
		if len(txns) == 0 {
			empty++
		}
		got = append(got, txns...)
	}
}

// slotLSN is the slot's confirmed_flush_lsn as the server reports it.
func (e *pgEnv) slotLSN(slot string) string {
	e.t.Helper()
	var lsn string
	if err := e.pool.QueryRow(e.ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&lsn); err != nil {
		e.t.Fatal(err)
	}
	return lsn
}

func put(table, pk string, row model.Row) pipeline.TxnFunc {
	return func(tx pipeline.Tx) error { tx.Put(table, pk, row); return nil }
}

func sameChanges(t *testing.T, what string, got, want model.Txn) {
	t.Helper()
	if got.XID != want.XID || !reflect.DeepEqual(got.Changes, want.Changes) {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

// testSnapshotThenStream: concurrent writers run before, during and after
// the snapshot; the snapshot plus the stream must be exactly the committed
// history: every streamed transaction is one Exec committed, whole and in
// commit order, none already in the snapshot, none committed after the
// snapshot missing, and replaying both gives the final table.
func testSnapshotThenStream(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"acct": {"v"}})
	for i := range 10 {
		e.exec(func(tx pipeline.Tx) error {
			for j := range 4 {
				tx.Put("acct", fmt.Sprintf("k%02d", i*4+j), model.R("v", fmt.Sprintf("pre-%d-%d", i, j)))
			}
			return nil
		})
	}
	s := e.stream(Config{})

	type done struct {
		txn   model.Txn
		at    time.Time // Exec returned: it committed before this
		begun time.Time // Exec was called: it committed after this
	}
	var mu sync.Mutex
	var committed []done
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), 7))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				begun := time.Now()
				txn, err := e.src.Exec(e.ctx, func(tx pipeline.Tx) error {
					for j := range 1 + rng.IntN(3) {
						k := fmt.Sprintf("k%02d", rng.IntN(60))
						if rng.IntN(4) == 0 {
							tx.Delete("acct", k)
						} else {
							tx.Put("acct", k, model.R("v", fmt.Sprintf("w%d-%d-%d", w, n, j)))
						}
					}
					return nil
				})
				if err != nil {
					if isCode(err, "40001") || isCode(err, "40P01") {
						continue // serialization failure or deadlock: nothing committed
					}
					t.Errorf("worker %d: %v", w, err)
					return
				}
				mu.Lock()
				committed = append(committed, done{txn, time.Now(), begun})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	snapStart := time.Now()
	snap := e.start(s)
	snapDone := time.Now()

	var streamed []model.Txn
	for time.Since(snapDone) < time.Second {
		txns, err := s.Next(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		streamed = append(streamed, txns...)
	}
	close(stop)
	wg.Wait()
	marker := e.exec(put("acct", "zz", model.R("v", "marker")))
	for streamed[len(streamed)-1].XID != marker.XID {
		txns, err := s.Next(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		streamed = append(streamed, txns...)
	}
	committed = append(committed, done{marker, time.Now(), time.Now()})

	byXID := map[uint64]done{}
	for _, d := range committed {
		if len(d.txn.Changes) > 0 {
			byXID[d.txn.XID] = d
		}
	}
	inSnap := map[model.Key]string{}
	for _, c := range snap.Changes {
		inSnap[c.Key()] = c.Row.Encode()
	}
	seen := map[uint64]bool{}
	last := snap.CommitLSN
	for _, got := range streamed {
		if got.CommitLSN <= last {
			t.Errorf("txn %d at %s is not after %s", got.XID, got.CommitLSN, last)
		}
		last = got.CommitLSN
		if seen[got.XID] {
			t.Errorf("xid %d streamed twice", got.XID)
		}
		seen[got.XID] = true
		want, ok := byXID[got.XID]
		if !ok {
			t.Errorf("streamed %v, which no Exec committed", got)
			continue
		}
		sameChanges(t, "streamed vs committed", got, want.txn)
		if want.at.Before(snapStart) {
			t.Errorf("xid %d committed before the snapshot began, yet streamed (overlap)", got.XID)
		}
		for _, c := range got.Changes {
			if c.Op != model.OpDelete && inSnap[c.Key()] == c.Row.Encode() {
				t.Errorf("xid %d wrote %s = %s, which the snapshot already holds (overlap)", got.XID, c.Key(), c.Row.Encode())
			}
		}
	}
	var after int
	for xid, d := range byXID {
		// Only a transaction begun after the snapshot surely committed
		// after its consistent point; one that merely returned late (a busy
		// machine) may be in the snapshot instead.
		if d.begun.After(snapDone) {
			after++
			if !seen[xid] {
				t.Errorf("xid %d committed after the snapshot but never streamed (gap): %v", xid, d.txn)
			}
		}
	}
	if after < 10 {
		t.Errorf("only %d transactions committed after the snapshot: the test proves little", after)
	}

	state := model.NewState()
	state.Apply(snap)
	for _, txn := range streamed {
		state.Apply(txn)
	}
	rows, err := e.pool.Query(e.ctx, "SELECT pk, v FROM acct")
	if err != nil {
		t.Fatal(err)
	}
	final := model.NewState()
	var changes []model.Change
	for rows.Next() {
		var pk, v string
		if err := rows.Scan(&pk, &v); err != nil {
			t.Fatal(err)
		}
		changes = append(changes, model.Change{Table: "acct", PK: pk, Op: model.OpInsert, Row: model.R("v", v)})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	final.Apply(model.Txn{Changes: changes})
	if state.Hash() != final.Hash() || state.Len() != final.Len() {
		t.Errorf("snapshot + stream gives %d rows (hash %x), the table has %d (hash %x)", state.Len(), state.Hash(), final.Len(), final.Hash())
	}
	t.Logf("snapshot of %d rows at %s, %d transactions streamed, %d committed in all", len(snap.Changes), snap.CommitLSN, len(streamed), len(byXID))
}

// testConfirmResume: after a confirm, a new session starts right after the
// confirmed transaction; without one, it redelivers from the same place.
func testConfirmResume(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"t": {"v"}})
	s := e.stream(Config{})
	e.start(s)
	var want []model.Txn
	for i := range 10 {
		want = append(want, e.exec(put("t", fmt.Sprintf("k%d", i), model.R("v", "1"))))
	}
	got := e.collect(s, 10)
	for i := range got {
		sameChanges(t, fmt.Sprintf("txn %d", i), got[i], want[i])
	}
	if err := s.Confirm(e.ctx, got[4].CommitLSN); err != nil {
		t.Fatal(err)
	}
	// The server records the position.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if lsn := e.slotLSN(s.cfg.Slot); lsn == got[4].CommitLSN.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot's confirmed_flush_lsn is %s, want %s", e.slotLSN(s.cfg.Slot), got[4].CommitLSN)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Close(e.ctx)

	for round := range 2 { // the second round confirms nothing: the same again
		s2 := e.stream(Config{Slot: s.cfg.Slot})
		from, err := s2.Start(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if from != got[4].CommitLSN {
			t.Fatalf("round %d: Start = %s, want the confirmed %s", round, from, got[4].CommitLSN)
		}
		again := e.collect(s2, 5)
		for i := range again {
			if again[i].CommitLSN != got[5+i].CommitLSN {
				t.Errorf("round %d: txn %d at %s, first time at %s", round, i, again[i].CommitLSN, got[5+i].CommitLSN)
			}
			sameChanges(t, fmt.Sprintf("round %d, redelivered txn %d", round, i), again[i], want[5+i])
		}
		ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
		extra, err := s2.Next(ctx)
		cancel()
		if len(extra) > 0 || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("round %d: after the redelivery Next = %v, %v; want nothing until the deadline", round, extra, err)
		}
		s2.Close(e.ctx)
	}
}

// testMultiRowAtomic: a transaction of many rows over two tables arrives as
// one Txn, and interleaved transactions arrive whole, in commit order.
func testMultiRowAtomic(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"a": {"v"}, "b": {"v", "w"}})
	for i := range 5 {
		e.exec(put("a", fmt.Sprintf("old%d", i), model.R("v", "x")))
	}
	s := e.stream(Config{})
	e.start(s)
	big := e.exec(func(tx pipeline.Tx) error {
		for i := range 40 {
			tx.Put("a", fmt.Sprintf("r%02d", i), model.R("v", fmt.Sprint(i)))
			tx.Put("b", fmt.Sprintf("r%02d", i), model.R("v", fmt.Sprint(i), "w", "y"))
		}
		for i := range 5 {
			tx.Delete("a", fmt.Sprintf("old%d", i))
		}
		return nil
	})
	if len(big.Changes) != 85 {
		t.Fatalf("Exec recorded %d changes, want 85", len(big.Changes))
	}
	got := e.collect(s, 1)
	sameChanges(t, "85-change transaction", got[0], big)

	// A begins first and commits last; B commits in between.
	txA, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback(e.ctx)
	txB, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txB.Rollback(e.ctx)
	mustExec := func(tx pgx.Tx, q string) {
		if _, err := tx.Exec(e.ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mustExec(txA, "INSERT INTO a VALUES ('a1', '1')")
	mustExec(txB, "INSERT INTO a VALUES ('b1', '1')")
	mustExec(txA, "INSERT INTO a VALUES ('a2', '2')")
	if err := txB.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(txA, "UPDATE a SET v = '3' WHERE pk = 'a1'")
	if err := txA.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	got = e.collect(s, 2)
	ins := func(pk, v string, op model.Op) model.Change {
		return model.Change{Table: "a", PK: pk, Op: op, Row: model.R("v", v)}
	}
	if !reflect.DeepEqual(got[0].Changes, []model.Change{ins("b1", "1", model.OpInsert)}) ||
		!reflect.DeepEqual(got[1].Changes, []model.Change{ins("a1", "1", model.OpInsert), ins("a2", "2", model.OpInsert), ins("a1", "3", model.OpUpdate)}) {
		t.Errorf("interleaved transactions: got %v", got)
	}
}

// testAbortedNeverAppears: rolled-back transactions and subtransactions
// never reach the stream.
func testAbortedNeverAppears(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"t": {"v"}})
	s := e.stream(Config{})
	e.start(s)

	overdraw := errors.New("would overdraw")
	aborted, err := e.src.Exec(e.ctx, func(tx pipeline.Tx) error {
		tx.Put("t", "bad1", model.R("v", "phantom"))
		return overdraw
	})
	if !errors.Is(err, overdraw) || aborted.XID == 0 || len(aborted.Changes) != 1 || aborted.CommitLSN != 0 {
		t.Fatalf("aborted Exec = %v, %v; want the rolled-back write, its xid and the fn's error", aborted, err)
	}

	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rawXID uint64
	if err := tx.QueryRow(e.ctx, "INSERT INTO t VALUES ('bad2', 'phantom') RETURNING pg_current_xact_id()::text::bigint").Scan(&rawXID); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}

	tx, err = e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"INSERT INTO t VALUES ('ok1', 'v')", "SAVEPOINT sp", "INSERT INTO t VALUES ('bad3', 'phantom')",
		"ROLLBACK TO SAVEPOINT sp", "INSERT INTO t VALUES ('ok2', 'v')",
	} {
		if _, err := tx.Exec(e.ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	after := e.exec(put("t", "after", model.R("v", "v")))

	got := e.collect(s, 2)
	for _, txn := range got {
		if txn.XID == aborted.XID || txn.XID == rawXID&0xFFFFFFFF {
			t.Errorf("a rolled-back transaction was streamed: %v", txn)
		}
		for _, c := range txn.Changes {
			if c.Row.Get("v") == "phantom" {
				t.Errorf("a rolled-back value was streamed: %v", txn)
			}
		}
	}
	wantSP := []model.Change{
		{Table: "t", PK: "ok1", Op: model.OpInsert, Row: model.R("v", "v")},
		{Table: "t", PK: "ok2", Op: model.OpInsert, Row: model.R("v", "v")},
	}
	if !reflect.DeepEqual(got[0].Changes, wantSP) {
		t.Errorf("transaction with a rolled-back savepoint: got %v, want %v", got[0].Changes, wantSP)
	}
	sameChanges(t, "after", got[1], after)
}

// testKeepalive: with wal_sender_timeout at 2s and status updates due only
// every 10s, a stream idle for 5s survives only by answering keepalives.
func testKeepalive(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"t": {"v"}})
	short, err := pgtest.WithParam(dsn, "wal_sender_timeout", "2s")
	if err != nil {
		t.Fatal(err)
	}
	s := e.stream(Config{DSN: short})
	snap := e.start(s)
	pid := s.repl.PID()

	txns, empty, err := e.idle(s, 5*time.Second)
	if len(txns) > 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("idle Next = %v, %v; want nothing until the deadline", txns, err)
	}
	// Next returned empty about once per IdleInterval (1s), so that a
	// capture can confirm meanwhile.
	if empty < 3 || empty > 5 {
		t.Errorf("in 5s idle Next returned empty %d times, want about 5 (once a second)", empty)
	}
	if s.keepalives == 0 {
		t.Error("no keepalive asked for a reply in 5s with wal_sender_timeout=2s")
	}
	var n int
	if err := e.pool.QueryRow(e.ctx, "SELECT count(*) FROM pg_stat_replication WHERE pid = $1", int64(pid)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("walsender %d is gone after the idle period", pid)
	}
	want := e.exec(put("t", "k", model.R("v", "after idle")))
	got := e.collect(s, 1)
	sameChanges(t, "after idle", got[0], want)
	// Replies carried the confirmed position, not the server's WAL end:
	// nothing was confirmed, so the slot has not moved.
	if _, _, err := e.idle(s, 2500*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("idle Next: %v", err)
	}
	if lsn := e.slotLSN(s.cfg.Slot); lsn != snap.CommitLSN.String() {
		t.Errorf("slot confirmed_flush_lsn moved to %s without a Confirm (snapshot at %s)", lsn, snap.CommitLSN)
	}
	t.Logf("answered %d keepalives in 5s", s.keepalives)
}

// testSourceRoundTrip: what Exec returns is what the stream delivers for
// that XID.
func testSourceRoundTrip(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"users": {"name", "email"}, "orders": {"item", "qty"}})
	e.exec(put("users", "u1", model.R("name", "ann", "email", "a@x")))
	s := e.stream(Config{})
	e.start(s)

	txn := e.exec(func(tx pipeline.Tx) error {
		if r, ok := tx.Get("users", "u1"); !ok || !reflect.DeepEqual(r, model.R("name", "ann", "email", "a@x")) {
			t.Errorf("Get(u1) = %v, %v", r, ok)
		}
		tx.Put("users", "u1", model.R("name", "ann2", "email", "a@x"))
		if r, _ := tx.Get("users", "u1"); r.Get("name") != "ann2" {
			t.Errorf("Get does not see the transaction's own write: %v", r)
		}
		tx.Put("users", "u2", model.R("name", "bob"))
		tx.Put("orders", "o1", model.R("item", "pen", "qty", "3"))
		tx.Delete("orders", "nope")
		tx.Put("orders", "o1", model.R("qty", "4"))
		tx.Delete("users", "u1")
		if _, ok := tx.Get("users", "u1"); ok {
			t.Error("Get sees a row the transaction deleted")
		}
		return nil
	})
	want := []model.Change{
		{Table: "users", PK: "u1", Op: model.OpUpdate, Row: model.R("name", "ann2", "email", "a@x")},
		{Table: "users", PK: "u2", Op: model.OpInsert, Row: model.R("name", "bob")},
		{Table: "orders", PK: "o1", Op: model.OpInsert, Row: model.R("item", "pen", "qty", "3")},
		{Table: "orders", PK: "o1", Op: model.OpUpdate, Row: model.R("item", "pen", "qty", "4")},
		{Table: "users", PK: "u1", Op: model.OpDelete},
	}
	if !reflect.DeepEqual(txn.Changes, want) || txn.XID == 0 || txn.CommitLSN != 0 {
		t.Errorf("Exec returned %v, want xid set, lsn 0, changes %v", txn, want)
	}
	got := e.collect(s, 1)
	sameChanges(t, "streamed vs Exec", got[0], txn)

	// A failed statement rolls everything back and says why.
	_, err := e.src.Exec(e.ctx, func(tx pipeline.Tx) error {
		tx.Put("users", "u9", model.R("name", "never"))
		tx.Put("missing", "x", model.R("v", "1"))
		return nil
	})
	if !isCode(err, "42P01") || !strings.Contains(err.Error(), "missing/x") {
		t.Errorf("Exec on a missing table: err = %v, want undefined_table naming it", err)
	}
	next := e.exec(put("users", "u3", model.R("name", "cy")))
	got = e.collect(s, 1)
	sameChanges(t, "after the failed Exec", got[0], next)
}

func randomText(t *testing.T, n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testKeyChangeAndToast: a key change carries the old key; an unchanged
// TOASTed value is filled in from the old row under REPLICA IDENTITY FULL
// and named in Unchanged, never a placeholder, without it.
func testKeyChangeAndToast(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"docs": {"big", "small"}})
	e.sql("ALTER TABLE docs REPLICA IDENTITY FULL") // CreateTables keeps the default
	e.sql("CREATE TABLE plain (a int, b text, big text, small text, PRIMARY KEY (a, b))")
	big := randomText(t, 40000) // incompressible enough to be stored out of line
	s := e.stream(Config{})
	e.start(s)

	e.exec(put("docs", "d1", model.R("big", big, "small", "s1")))
	e.sql("UPDATE docs SET small = 's2' WHERE pk = 'd1'")
	e.sql("UPDATE docs SET pk = 'd2' WHERE pk = 'd1'")
	got := e.collect(s, 3)
	want := []model.Change{
		{Table: "docs", PK: "d1", Op: model.OpUpdate, Row: model.R("big", big, "small", "s2")},
		{Table: "docs", PK: "d2", Op: model.OpUpdate, Row: model.R("big", big, "small", "s2"), OldPK: "d1"},
	}
	if !reflect.DeepEqual(got[1].Changes[:1], want[:1]) || !reflect.DeepEqual(got[2].Changes, want[1:]) {
		t.Errorf("got %.300v\nwant %.300v", got[1:], want)
	}

	e.sql("INSERT INTO plain VALUES (1, 'x', $1, 's1')", big)
	e.sql("UPDATE plain SET small = 's2' WHERE a = 1")
	got = e.collect(s, 2)
	if c := got[0].Changes[0]; c.Table != "plain" || c.PK != "1,x" || c.Row.Get("big") != big {
		t.Errorf("insert into plain: %.200v", got[0])
	}
	wantPlain := []model.Change{{Table: "plain", PK: "1,x", Op: model.OpUpdate, Row: model.R("small", "s2"), Unchanged: []string{"big"}}}
	if !reflect.DeepEqual(got[1].Changes, wantPlain) {
		t.Errorf("update leaving a TOASTed value unchanged without REPLICA IDENTITY FULL: %.300v\nwant %v", got[1], wantPlain)
	}
}

// testTruncate: TRUNCATE is reported, not silently skipped.
func testTruncate(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"t": {"v"}})
	e.exec(put("t", "k", model.R("v", "1")))
	s := e.stream(Config{})
	e.start(s)
	e.sql("TRUNCATE t")
	_, err := e.next(s)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "TRUNCATE of t") {
		t.Errorf("TRUNCATE: err = %v", err)
	}
}

// testSnapshotMapping: the snapshot names tables and keys, and leaves out
// NULLs and generated columns, exactly as the stream does; it creates the
// publication when missing.
func testSnapshotMapping(t *testing.T, dsn string) {
	e := newEnv(t, dsn, nil)
	e.sql(`CREATE SCHEMA app;
		CREATE TABLE app.items (a int, b text, v text, n text, g text GENERATED ALWAYS AS (v || '!') STORED, PRIMARY KEY (a, b));
		INSERT INTO app.items (a, b, v, n) VALUES (2, 'y', 'v2', NULL), (1, 'x', 'v1', 'n1');
		CREATE TABLE z (id text PRIMARY KEY, c text);
		INSERT INTO z VALUES ('k', 'c')`)
	s := e.stream(Config{Publication: "mine"})
	snap := e.start(s)
	// A table's rows come in the order the table holds them.
	sort.SliceStable(snap.Changes, func(i, j int) bool { return snap.Changes[i].Key().Less(snap.Changes[j].Key()) })
	want := []model.Change{
		{Table: "app.items", PK: "1,x", Op: model.OpInsert, Row: model.R("v", "v1", "n", "n1")},
		{Table: "app.items", PK: "2,y", Op: model.OpInsert, Row: model.R("v", "v2")},
		{Table: "z", PK: "k", Op: model.OpInsert, Row: model.R("c", "c")},
	}
	if !snap.Snapshot || snap.CommitLSN == 0 || !reflect.DeepEqual(snap.Changes, want) {
		t.Errorf("snapshot %v\nwant changes %v", snap, want)
	}
	e.sql("INSERT INTO app.items (a, b, v) VALUES (3, 'z', 'v3')")
	e.sql("UPDATE app.items SET v = 'v4' WHERE a = 3")
	got := e.collect(s, 2)
	wantS := []model.Change{
		{Table: "app.items", PK: "3,z", Op: model.OpInsert, Row: model.R("v", "v3")},
		{Table: "app.items", PK: "3,z", Op: model.OpUpdate, Row: model.R("v", "v4")},
	}
	if !reflect.DeepEqual(got[0].Changes, wantS[:1]) || !reflect.DeepEqual(got[1].Changes, wantS[1:]) {
		t.Errorf("streamed %v\nwant %v", got, wantS)
	}
}

// testSlotLifecycle: ErrNoSlot without a slot; a snapshot takes the slot
// over from a session still streaming from it (a zombie capture), which
// then fails instead of streaming on.
func testSlotLifecycle(t *testing.T, dsn string) {
	e := newEnv(t, dsn, map[string][]string{"t": {"v"}})
	s := e.stream(Config{})
	if _, err := s.Next(e.ctx); err == nil {
		t.Error("Next before Start: no error")
	}
	if _, err := s.Start(e.ctx); !errors.Is(err, pipeline.ErrNoSlot) {
		t.Fatalf("Start without a slot: err = %v, want ErrNoSlot", err)
	}
	e.start(s)
	e.exec(put("t", "a", model.R("v", "1")))
	e.collect(s, 1)

	s2 := e.stream(Config{Slot: s.cfg.Slot})
	snap := e.start(s2)
	if len(snap.Changes) != 1 {
		t.Errorf("second snapshot: %v", snap)
	}
	e.exec(put("t", "b", model.R("v", "2")))
	if txns, err := e.next(s); err == nil {
		t.Errorf("the old session still streams after its slot was recreated: %v", txns)
	}
	got := e.collect(s2, 1)
	if got[0].Changes[0].PK != "b" {
		t.Errorf("new session: %v", got)
	}
	if err := s2.Confirm(e.ctx, got[0].CommitLSN); err != nil {
		t.Fatal(err)
	}
}

// testSnapshotSQLASCII: a database whose encoding is SQL_ASCII (initdb's
// default under the C locale, as in the container images) reports that
// as its client encoding, under which pgx refuses simple-protocol queries:
// the snapshot's scan must not use them (its first scan stopped the
// capture's every snapshot in the soak).
func testSnapshotSQLASCII(t *testing.T, dsn string) {
	e := newEnv(t, dsn, nil)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/") + "_ascii"
	e.sql(`CREATE DATABASE ` + name + ` ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`)
	u.Path = "/" + name
	ascii := newEnv(t, u.String(), map[string][]string{"t": {"v"}})
	ascii.exec(put("t", "k", model.R("v", "1")))
	snap, err := pipeline.ReadSnapshot(ascii.ctx, ascii.stream(Config{}))
	if err != nil || len(snap.Changes) != 1 || snap.Changes[0].Row.Get("v") != "1" {
		t.Fatalf("snapshot of a SQL_ASCII database: %v, %v; want t/k v=1", snap, err)
	}
}
